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

    /** Embeds texts with the base encoder; returns one vector per text. */
    public float[][] embed(List<String> texts) {
        return embed(texts, null);
    }

    /**
     * Embeds texts, text {@code i} through {@code experts[i]} (null: the base encoder). Texts of
     * different experts share one forward pass per batch: rows are grouped by expert into
     * contiguous segments, the base GEMMs run once over all rows and each segment adds its own
     * LoRA term (Punica's SGMV layout).
     */
    public float[][] embed(List<String> texts, LoraAdapter[] experts) {
        int[][] ids = new int[texts.size()][];
        for (int i = 0; i < ids.length; i++) ids[i] = tokenize(texts.get(i));
        return embedIds(ids, experts);
    }

    /** How a batch whose rows all use the same expert runs. */
    public enum LoraMode {
        /** The LoRA term joins each adapted GEMM's output tile (the default). */
        FUSED,
        /** {@code W + s·B·A} precomputed once per expert (more memory, no LoRA work per token). */
        MERGED
    }

    public LoraMode loraMode = LoraMode.FUSED;
    private final java.util.Map<LoraAdapter, Bert.Weights> merged = new java.util.IdentityHashMap<>();
    private Lora[][] plan;

    /**
     * Embeds pre-tokenized sequences (each with its special tokens), in packed batches of at
     * most {@link #maxBatchTokens} rows, sequence {@code i} through {@code experts[i]} (the
     * array may be null: base encoder for all).
     */
    public float[][] embedIds(int[][] ids, LoraAdapter[] experts) {
        int c = dimension();
        float[][] out = new float[ids.length][c];
        // group by expert (stable) so each expert's rows are contiguous within a batch
        Integer[] order = new Integer[ids.length];
        for (int i = 0; i < order.length; i++) order[i] = i;
        if (experts != null) {
            if (experts.length != ids.length) throw new IllegalArgumentException(ids.length + " texts but " + experts.length + " expert choices");
            java.util.IdentityHashMap<LoraAdapter, Integer> rank = new java.util.IdentityHashMap<>();
            for (LoraAdapter e : experts) if (e != null) rank.putIfAbsent(e, rank.size());
            java.util.Arrays.sort(order, java.util.Comparator.comparingInt(i -> experts[i] == null ? -1 : rank.get(experts[i])));
        }
        int[] lengths = new int[ids.length];
        int from = 0;
        while (from < ids.length) {
            int to = from, tokens = 0;
            while (to < ids.length && (to == from || tokens + ids[order[to]].length <= maxBatchTokens)) tokens += ids[order[to++]].length;
            int[] packed = new int[tokens];
            for (int i = from, p = 0; i < to; i++) {
                int[] seq = ids[order[i]];
                if (seq.length == 0) throw new IllegalArgumentException("sequence " + order[i] + " is empty");
                System.arraycopy(seq, 0, packed, p, seq.length);
                p += seq.length;
                lengths[i - from] = seq.length;
            }
            batch.set(lengths, to - from);
            LoraAdapter single = experts == null ? null : experts[order[from]];
            for (int i = from + 1; i < to && single != null; i++) if (experts[order[i]] != single) single = null;
            if (single != null && loraMode == LoraMode.MERGED) {
                bert.forward(packed, batch, null, merged.computeIfAbsent(single, a -> a.merge(bert.weights, bert.backend())));
            } else {
                bert.forward(packed, batch, experts == null ? null : planSegments(experts, order, from, to));
            }
            Tensor pooled = bert.pool(batch, options.pooling(), options.normalize());
            for (int i = from; i < to; i++) bert.backend().read(pooled, (long) (i - from) * c, out[order[i]], 0, c);
            from = to;
        }
        return out;
    }

    /** Per layer and target, one LoRA segment per run of consecutive rows with the same expert. */
    private Lora[][] planSegments(LoraAdapter[] experts, Integer[] order, int from, int to) {
        int L = bert.config.numLayers(), T = Bert.Target.values().length;
        if (plan == null) {
            plan = new Lora[L][T];
            for (Lora[] row : plan) for (int t = 0; t < T; t++) row[t] = new Lora(4);
        }
        for (Lora[] row : plan) for (Lora x : row) x.clear();
        boolean any = false;
        int i = from;
        while (i < to) {
            LoraAdapter e = experts[order[i]];
            int j = i;
            while (j < to && experts[order[j]] == e) j++;
            if (e != null) {
                if (e.numLayers != L) throw new IllegalArgumentException("adapter '" + e.name + "' has " + e.numLayers + " layers, the model " + L);
                int r0 = batch.start[i - from], r1 = batch.start[j - from];
                for (int l = 0; l < L; l++)
                    for (int t = 0; t < T; t++)
                        if (e.a[l][t] != null) { plan[l][t].add(r0, r1, e.a[l][t], e.b[l][t], e.scale[l][t]); any = true; }
            }
            i = j;
        }
        return any ? plan : null;
    }

    @Override
    public void close() {
        arena.close();
    }
}
