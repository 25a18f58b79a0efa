package rrj.model;

import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * An embedding model ready to use: a model directory ({@code config.json},
 * {@code model.safetensors}, {@code tokenizer.json} or {@code vocab.txt}, and optionally the
 * sentence-transformers files {@code modules.json}, {@code 1_Pooling/config.json},
 * {@code sentence_bert_config.json}) loaded onto a backend.
 *
 * <p>Texts are tokenized, packed into batches of at most {@link #maxBatchTokens} token rows
 * (no padding), run through {@link Bert#forward} and pooled. Not thread-safe.
 */
public final class Encoder implements AutoCloseable {

    /** How embeddings are made; read from the model directory, overridable by flags. */
    public record Options(Backend.Pooling pooling, boolean normalize, int maxLength) {}

    public final Path dir;
    public final Bert bert;
    public final WordPieceTokenizer tokenizer;
    public final Options options;
    private final Arena arena;
    private final Batch batch = new Batch(64);
    public int maxBatchTokens = 8192;

    private Encoder(Path dir, Bert bert, WordPieceTokenizer tokenizer, Options options, Arena arena) {
        this.dir = dir;
        this.bert = bert;
        this.tokenizer = tokenizer;
        this.options = options;
        this.arena = arena;
    }

    /**
     * Opens a model directory. Null override fields keep what the directory says.
     */
    public static Encoder open(Path dir, Backend backend, Backend.Pooling pooling, Boolean normalize, Integer maxLength)
            throws IOException {
        if (!Files.isDirectory(dir)) throw new NoSuchFileException(dir.toString(), null, "model directory not found");
        BertConfig config = BertConfig.read(dir.resolve("config.json"));
        Options found = readOptions(dir, config);
        Options opts = new Options(pooling != null ? pooling : found.pooling(),
                normalize != null ? normalize : found.normalize(),
                maxLength != null ? maxLength : found.maxLength());
        if (opts.maxLength() < 2 || opts.maxLength() > config.maxPositionEmbeddings())
            throw new IllegalArgumentException("max length " + opts.maxLength() + " must be between 2 and max_position_embeddings "
                    + config.maxPositionEmbeddings());
        WordPieceTokenizer tok = WordPieceTokenizer.load(dir);
        if (tok.vocabSize() > config.vocabSize())
            throw new BertConfig.ConfigException(dir + ": tokenizer has " + tok.vocabSize() + " tokens but config.json vocab_size is "
                    + config.vocabSize());
        Arena arena = Arena.ofShared();
        try {
            Safetensors.File weights = Safetensors.open(dir.resolve("model.safetensors"), arena);
            Bert bert = Bert.load(config, weights, backend);
            return new Encoder(dir, bert, tok, opts, arena);
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Pooling, normalisation and max length from the sentence-transformers files, with BERT defaults. */
    static Options readOptions(Path dir, BertConfig config) throws IOException {
        Backend.Pooling pooling = Backend.Pooling.MEAN;
        boolean normalize = false;
        int maxLength = Math.min(512, config.maxPositionEmbeddings());
        Path modules = dir.resolve("modules.json");
        if (Files.exists(modules)) {
            Object parsed = parseJson(modules);
            if (!(parsed instanceof List<?> list)) throw new BertConfig.ConfigException(modules + ": expected a JSON array of modules");
            for (Object o : list) {
                if (!(o instanceof Map<?, ?> mod)) throw new BertConfig.ConfigException(modules + ": module entry is not an object");
                String type = String.valueOf(mod.get("type"));
                if (type.endsWith(".Normalize")) normalize = true;
                else if (type.endsWith(".Pooling")) {
                    Path pc = dir.resolve(String.valueOf(mod.get("path"))).resolve("config.json");
                    pooling = readPooling(pc);
                } else if (!type.endsWith(".Transformer"))
                    throw new BertConfig.ConfigException(modules + ": module type '" + type + "' is not supported");
            }
        }
        Path sbert = dir.resolve("sentence_bert_config.json");
        if (Files.exists(sbert)) {
            Object parsed = parseJson(sbert);
            if (parsed instanceof Map<?, ?> m && m.get("max_seq_length") instanceof Long l)
                maxLength = (int) Math.min(l, config.maxPositionEmbeddings());
        }
        return new Options(pooling, normalize, maxLength);
    }

    private static Backend.Pooling readPooling(Path file) throws IOException {
        if (!Files.exists(file)) throw new NoSuchFileException(file.toString(), null, "pooling config named in modules.json not found");
        Object parsed = parseJson(file);
        if (!(parsed instanceof Map<?, ?> m)) throw new BertConfig.ConfigException(file + ": expected a JSON object");
        boolean cls = Boolean.TRUE.equals(m.get("pooling_mode_cls_token"));
        boolean mean = Boolean.TRUE.equals(m.get("pooling_mode_mean_tokens"));
        for (String other : new String[]{"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"})
            if (Boolean.TRUE.equals(m.get(other)))
                throw new BertConfig.ConfigException(file + ": " + other + " is not supported (only mean and cls pooling)");
        if (cls == mean)
            throw new BertConfig.ConfigException(file + ": exactly one of pooling_mode_cls_token and pooling_mode_mean_tokens must be true");
        return cls ? Backend.Pooling.CLS : Backend.Pooling.MEAN;
    }

    private static Object parseJson(Path file) throws IOException {
        try {
            return Json.parse(Files.readString(file));
        } catch (Json.JsonException e) {
            throw new BertConfig.ConfigException(file + ": not valid JSON: " + e.getMessage());
        }
    }

    public int dimension() { return bert.config.hiddenSize(); }

    public int[] tokenize(String text) { return tokenizer.encode(text, options.maxLength()); }

    /** Embeds texts; returns one vector per text. */
    public float[][] embed(List<String> texts) {
        int[][] ids = new int[texts.size()][];
        for (int i = 0; i < ids.length; i++) ids[i] = tokenize(texts.get(i));
        return embedIds(ids, null);
    }

    /**
     * Embeds pre-tokenized sequences (each with its special tokens), in packed batches of at
     * most {@link #maxBatchTokens} rows. {@code lora}, when non-null, is called per batch to
     * build the per-layer LoRA segments for sequences [from, to).
     */
    public float[][] embedIds(int[][] ids, LoraPlanner lora) {
        int c = dimension();
        float[][] out = new float[ids.length][c];
        int[] lengths = new int[ids.length];
        int from = 0;
        while (from < ids.length) {
            int to = from, tokens = 0;
            while (to < ids.length && (to == from || tokens + ids[to].length <= maxBatchTokens)) tokens += ids[to++].length;
            int[] packed = new int[tokens];
            for (int i = from, p = 0; i < to; i++) {
                if (ids[i].length == 0) throw new IllegalArgumentException("sequence " + i + " is empty");
                System.arraycopy(ids[i], 0, packed, p, ids[i].length);
                p += ids[i].length;
                lengths[i - from] = ids[i].length;
            }
            batch.set(lengths, to - from);
            Lora[][] plan = lora == null ? null : lora.plan(from, to, batch);
            bert.forward(packed, batch, plan);
            Tensor pooled = bert.pool(batch, options.pooling(), options.normalize());
            for (int i = from; i < to; i++) bert.backend().read(pooled, (long) (i - from) * c, out[i], 0, c);
            from = to;
        }
        return out;
    }

    /** Builds per-layer LoRA segments for the sequences [from, to) of a batch. */
    public interface LoraPlanner {
        Lora[][] plan(int from, int to, Batch batch);
    }

    @Override
    public void close() {
        arena.close();
    }
}
