package rrj.convert;

import rrj.convert.onnx.OnnxBertConverter;
import rrj.convert.torch.TorchStateDict;
import rrj.engine.Backend;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.Json;
import rrj.model.Safetensors;
import rrj.model.WordPieceTokenizer;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * {@code rr convert}: turns a model from the outside world into our one format, a directory
 * of {@code model.safetensors} (HF BertModel names, no prefix) + {@code config.json} +
 * {@code tokenizer.json} or {@code vocab.txt} (+ sentence-transformers pooling files).
 *
 * <p>Sources: an ONNX BERT export (layer names recovered from the graph), a PyTorch
 * {@code pytorch_model.bin} (zip + pickle; {@code config.json} beside it), or an HF model
 * directory (safetensors or .bin). This class owns the outside names: it strips a
 * {@code bert.} prefix, drops known training-only keys, and refuses any key it does not
 * know, naming it. The output is written to a temporary directory, validated by loading it,
 * and only then moved into place: a failed conversion leaves nothing behind.
 */
public final class Converter {
    private Converter() {}

    /** A source we cannot convert; the message names the file and key. */
    public static final class ConvertException extends RuntimeException {
        public ConvertException(String message) { super(message); }
    }

    /** What to write besides the weights; null fields mean "take what the source says". */
    public record Options(Path tokenizer, Backend.Pooling pooling, Boolean normalize, Integer maxSeqLength) {
        public static Options defaults() { return new Options(null, null, null, null); }
    }

    public static void convert(Path source, Path outDir, Options opt) throws IOException {
        if (!Files.exists(source)) throw new NoSuchFileException(source.toString(), null, "source not found");
        if (Files.exists(outDir)) {
            try (Stream<Path> s = Files.list(outDir)) {
                if (s.findAny().isPresent())
                    throw new DirectoryNotEmptyException(outDir + " (refusing to overwrite a non-empty output directory)");
            }
        }
        Path parent = outDir.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = Files.createTempDirectory(parent, "." + outDir.getFileName() + ".partial-");
        try {
            writeInto(source, tmp, opt);
            validate(tmp);
            Safetensors.readableByAll(tmp);
            Files.deleteIfExists(outDir);
            Files.move(tmp, outDir, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            deleteTree(tmp);
        }
    }

    /**
     * A PEFT adapter directory (adapter_config.json + adapter_model.safetensors or
     * adapter_model.bin) → the same in our form (safetensors, keys as PEFT writes them),
     * validated against {@code model} before it appears at {@code outDir}.
     */
    public static void convertAdapter(Path source, Path outDir, BertConfig model) throws IOException {
        if (!Files.isDirectory(source)) throw new NoSuchFileException(source.toString(), null, "adapter directory not found");
        if (Files.exists(outDir)) throw new java.nio.file.FileAlreadyExistsException(outDir.toString());
        Path cfg = source.resolve("adapter_config.json");
        if (!Files.exists(cfg)) throw new NoSuchFileException(cfg.toString(), null, "adapter_config.json not found");
        Path parent = outDir.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = Files.createTempDirectory(parent, "." + outDir.getFileName() + ".partial-");
        try {
            Path st = source.resolve("adapter_model.safetensors"), bin = source.resolve("adapter_model.bin");
            if (Files.exists(st)) Files.copy(st, tmp.resolve("adapter_model.safetensors"));
            else if (Files.exists(bin)) Safetensors.write(tmp.resolve("adapter_model.safetensors"), TorchStateDict.read(bin), Map.of("format", "pt"));
            else throw new NoSuchFileException(st.toString(), null, "no adapter_model.safetensors or adapter_model.bin");
            Files.copy(cfg, tmp.resolve("adapter_config.json"));
            try (Arena arena = Arena.ofConfined()) { // refuses a bad adapter, naming the key, before anything appears
                rrj.model.LoraAdapter.load(outDir.getFileName().toString(), tmp, model, new rrj.engine.ReferenceBackend(), arena);
            }
            Safetensors.readableByAll(tmp);
            Files.move(tmp, outDir, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            deleteTree(tmp);
        }
    }

    private static void writeInto(Path source, Path out, Options opt) throws IOException {
        String name = source.getFileName().toString();
        Map<String, Tensor> weights;
        Map<String, Object> config;
        Path srcDir = Files.isDirectory(source) ? source : source.toAbsolutePath().getParent();
        if (!Files.isDirectory(source) && name.endsWith(".onnx")) {
            OnnxBertConverter.Result r = OnnxBertConverter.convert(source);
            weights = r.weights();
            config = r.config().toHfConfig();
            srcDir = null; // nothing else to take from beside an ONNX file
        } else if (!Files.isDirectory(source) && name.endsWith(".bin")) {
            weights = renameHf(TorchStateDict.read(source), source);
            config = readConfig(srcDir.resolve("config.json"), source);
        } else if (!Files.isDirectory(source) && name.endsWith(".safetensors")) {
            weights = renameHf(Safetensors.open(source, Arena.ofAuto()).tensors(), source);
            config = readConfig(srcDir.resolve("config.json"), source);
        } else if (Files.isDirectory(source)) {
            Path st = source.resolve("model.safetensors"), bin = source.resolve("pytorch_model.bin");
            if (Files.exists(st)) weights = renameHf(Safetensors.open(st, Arena.ofAuto()).tensors(), st);
            else if (Files.exists(bin)) weights = renameHf(TorchStateDict.read(bin), bin);
            else throw new ConvertException(source + ": no model.safetensors or pytorch_model.bin in the directory");
            config = readConfig(source.resolve("config.json"), source);
        } else {
            throw new ConvertException(source + ": unknown source type (expected .onnx, pytorch_model.bin, .safetensors or a model directory)");
        }
        BertConfig.fromMap(config, "config.json of " + source); // refuses non-BERT configs early, naming the field
        Safetensors.write(out.resolve("model.safetensors"), weights, Map.of("format", "pt", "converted_from", name));
        Files.writeString(out.resolve("config.json"), Json.writePretty(config));
        copyTokenizer(source, srcDir, opt.tokenizer(), out);
        writePooling(srcDir, out, opt);
    }

    private static Map<String, Object> readConfig(Path file, Path source) throws IOException {
        if (!Files.exists(file)) throw new ConvertException(source + ": needs a config.json beside it (" + file + " not found)");
        try {
            return Json.parseObject(Files.readString(file));
        } catch (Json.JsonException e) {
            throw new ConvertException(file + ": not valid JSON: " + e.getMessage());
        }
    }

    /**
     * HF checkpoint keys → bare BertModel keys. Accepts {@code bert.}-prefixed keys (task
     * models), drops the MLM/NSP heads and the {@code position_ids} buffer, refuses the rest.
     */
    static Map<String, Tensor> renameHf(Map<String, Tensor> in, Path file) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : in.entrySet()) {
            String k = e.getKey();
            if (k.startsWith("bert.")) k = k.substring(5);
            else if (k.startsWith("model.")) k = k.substring(6);
            if (k.startsWith("cls.") || k.endsWith("position_ids") || k.startsWith("classifier.")) continue;
            boolean known = k.startsWith("embeddings.") || k.startsWith("encoder.layer.") || k.startsWith("pooler.");
            if (!known) throw new ConvertException(file + ": unexpected key '" + e.getKey() + "' (not part of a BERT encoder)");
            // legacy TF-port names (gamma/beta) as older HF checkpoints have them
            if (k.endsWith("LayerNorm.gamma")) k = k.substring(0, k.length() - 5) + "weight";
            if (k.endsWith("LayerNorm.beta")) k = k.substring(0, k.length() - 4) + "bias";
            if (out.put(k, e.getValue()) != null) throw new ConvertException(file + ": key '" + k + "' appears twice (with and without prefix)");
        }
        return out;
    }

    private static void copyTokenizer(Path source, Path srcDir, Path explicit, Path out) throws IOException {
        Path tok = explicit;
        if (tok == null && srcDir != null) {
            if (Files.exists(srcDir.resolve("tokenizer.json"))) tok = srcDir.resolve("tokenizer.json");
            else if (Files.exists(srcDir.resolve("vocab.txt"))) tok = srcDir.resolve("vocab.txt");
        }
        if (tok == null)
            throw new ConvertException(source + ": no tokenizer found; pass --tokenizer FILE (a tokenizer.json or vocab.txt)");
        if (!Files.exists(tok)) throw new NoSuchFileException(tok.toString(), null, "tokenizer not found");
        WordPieceTokenizer.load(tok); // refuse an unreadable tokenizer before writing it
        String target = tok.getFileName().toString().endsWith(".txt") ? "vocab.txt" : "tokenizer.json";
        Files.copy(tok, out.resolve(target));
        if (target.equals("vocab.txt") && srcDir != null && Files.exists(srcDir.resolve("tokenizer_config.json")))
            Files.copy(srcDir.resolve("tokenizer_config.json"), out.resolve("tokenizer_config.json"));
    }

    private static void writePooling(Path srcDir, Path out, Options opt) throws IOException {
        boolean hasSt = srcDir != null && Files.exists(srcDir.resolve("modules.json"));
        if (hasSt && opt.pooling() == null && opt.normalize() == null) {
            Files.copy(srcDir.resolve("modules.json"), out.resolve("modules.json"));
            Object mods = Json.parse(Files.readString(srcDir.resolve("modules.json")));
            if (mods instanceof List<?> l) for (Object o : l)
                if (o instanceof Map<?, ?> m && m.get("path") instanceof String p && !p.isEmpty()
                        && Files.exists(srcDir.resolve(p).resolve("config.json"))) {
                    Files.createDirectories(out.resolve(p));
                    Files.copy(srcDir.resolve(p).resolve("config.json"), out.resolve(p).resolve("config.json"));
                }
        } else if (opt.pooling() != null || opt.normalize() != null) {
            Backend.Pooling pooling = opt.pooling() == null ? Backend.Pooling.MEAN : opt.pooling();
            boolean normalize = Boolean.TRUE.equals(opt.normalize());
            Map<String, Object> pc = new LinkedHashMap<>();
            pc.put("pooling_mode_cls_token", pooling == Backend.Pooling.CLS);
            pc.put("pooling_mode_mean_tokens", pooling == Backend.Pooling.MEAN);
            Files.createDirectories(out.resolve("1_Pooling"));
            Files.writeString(out.resolve("1_Pooling/config.json"), Json.writePretty(pc));
            List<Object> modules = new java.util.ArrayList<>();
            modules.add(module(0, "0", "", "sentence_transformers.models.Transformer"));
            modules.add(module(1, "1", "1_Pooling", "sentence_transformers.models.Pooling"));
            if (normalize) modules.add(module(2, "2", "2_Normalize", "sentence_transformers.models.Normalize"));
            Files.writeString(out.resolve("modules.json"), Json.writePretty(modules));
        }
        Path sb = srcDir == null ? null : srcDir.resolve("sentence_bert_config.json");
        if (opt.maxSeqLength() != null) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("max_seq_length", (long) opt.maxSeqLength());
            m.put("do_lower_case", false);
            Files.writeString(out.resolve("sentence_bert_config.json"), Json.writePretty(m));
        } else if (sb != null && Files.exists(sb)) {
            Files.copy(sb, out.resolve("sentence_bert_config.json"));
        }
    }

    private static Map<String, Object> module(int idx, String name, String path, String type) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("idx", (long) idx);
        m.put("name", name);
        m.put("path", path);
        m.put("type", type);
        return m;
    }

    /** Loads what was written exactly as the engine will (config, every tensor's shape, tokenizer). */
    static void validate(Path dir) throws IOException {
        BertConfig c = BertConfig.read(dir.resolve("config.json"));
        try (Arena arena = Arena.ofConfined()) {
            Bert.check(c, Safetensors.open(dir.resolve("model.safetensors"), arena));
        }
        WordPieceTokenizer tok = WordPieceTokenizer.load(dir);
        if (tok.vocabSize() > c.vocabSize())
            throw new ConvertException(dir + ": tokenizer has " + tok.vocabSize() + " tokens, more than vocab_size " + c.vocabSize());
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path x : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(x);
        }
    }
}
