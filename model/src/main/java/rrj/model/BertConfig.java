package rrj.model;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The fields of a Hugging Face BERT {@code config.json} that the encoder uses. Anything that
 * would change the maths and is not supported (another model_type, a non-erf activation,
 * relative position embeddings) is refused with a message naming the file and field.
 */
public record BertConfig(
        int vocabSize,              // vocab_size
        int hiddenSize,             // hidden_size, C
        int numLayers,              // num_hidden_layers, L
        int numHeads,               // num_attention_heads, H
        int intermediateSize,       // intermediate_size, F
        int maxPositionEmbeddings,  // max_position_embeddings
        int typeVocabSize,          // type_vocab_size
        double layerNormEps) {      // layer_norm_eps

    /** A bad or unsupported config; the message names the file and field. */
    public static final class ConfigException extends RuntimeException {
        public ConfigException(String message) { super(message); }
    }

    public BertConfig {
        if (hiddenSize <= 0 || numHeads <= 0 || hiddenSize % numHeads != 0)
            throw new ConfigException("hidden_size " + hiddenSize + " is not a positive multiple of num_attention_heads " + numHeads);
        if (vocabSize <= 0 || numLayers <= 0 || intermediateSize <= 0 || maxPositionEmbeddings <= 0 || typeVocabSize <= 0)
            throw new ConfigException("config sizes must be positive: " + this);
    }

    public int headDim() { return hiddenSize / numHeads; }

    public static BertConfig read(Path file) throws IOException {
        if (!Files.exists(file)) throw new NoSuchFileException(file.toString(), null, "file not found");
        Map<String, Object> m;
        try {
            m = Json.parseObject(Files.readString(file));
        } catch (Json.JsonException e) {
            throw new ConfigException(file + ": not valid JSON: " + e.getMessage());
        }
        return fromMap(m, file.toString());
    }

    public static BertConfig fromMap(Map<String, Object> m, String where) {
        Object type = m.get("model_type");
        if (type != null && !"bert".equals(type))
            throw new ConfigException(where + ": model_type '" + type + "' is not supported (only 'bert')");
        Object act = m.getOrDefault("hidden_act", "gelu");
        if (!"gelu".equals(act))
            throw new ConfigException(where + ": hidden_act '" + act + "' is not supported (only 'gelu', the exact erf GELU)");
        Object pos = m.getOrDefault("position_embedding_type", "absolute");
        if (!"absolute".equals(pos))
            throw new ConfigException(where + ": position_embedding_type '" + pos + "' is not supported (only 'absolute')");
        if (Boolean.TRUE.equals(m.get("is_decoder")))
            throw new ConfigException(where + ": is_decoder=true is not supported (BERT encoders are bidirectional)");
        try {
            return new BertConfig(
                    intField(m, where, "vocab_size", null),
                    intField(m, where, "hidden_size", null),
                    intField(m, where, "num_hidden_layers", null),
                    intField(m, where, "num_attention_heads", null),
                    intField(m, where, "intermediate_size", null),
                    intField(m, where, "max_position_embeddings", 512),
                    intField(m, where, "type_vocab_size", 2),
                    numberField(m, where, "layer_norm_eps", 1e-12));
        } catch (ConfigException e) {
            throw e.getMessage().startsWith(where) ? e : new ConfigException(where + ": " + e.getMessage());
        }
    }

    private static int intField(Map<String, Object> m, String where, String key, Integer dflt) {
        Object v = m.get(key);
        if (v == null) {
            if (dflt != null) return dflt;
            throw new ConfigException(where + ": missing field '" + key + "'");
        }
        if (!(v instanceof Long || v instanceof Integer) || ((Number) v).longValue() <= 0 || ((Number) v).longValue() > Integer.MAX_VALUE)
            throw new ConfigException(where + ": field '" + key + "' must be a positive integer, got " + v);
        return ((Number) v).intValue();
    }

    private static double numberField(Map<String, Object> m, String where, String key, double dflt) {
        Object v = m.get(key);
        if (v == null) return dflt;
        if (!(v instanceof Number n) || !(n.doubleValue() > 0))
            throw new ConfigException(where + ": field '" + key + "' must be a positive number, got " + v);
        return n.doubleValue();
    }

    /** The config as HF writes it (the fields we know, plus the BERT constants). */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("architectures", java.util.List.of("BertModel"));
        m.put("model_type", "bert");
        m.put("vocab_size", (long) vocabSize);
        m.put("hidden_size", (long) hiddenSize);
        m.put("num_hidden_layers", (long) numLayers);
        m.put("num_attention_heads", (long) numHeads);
        m.put("intermediate_size", (long) intermediateSize);
        m.put("hidden_act", "gelu");
        m.put("max_position_embeddings", (long) maxPositionEmbeddings);
        m.put("type_vocab_size", (long) typeVocabSize);
        m.put("layer_norm_eps", layerNormEps);
        m.put("position_embedding_type", "absolute");
        m.put("pad_token_id", 0L);
        return m;
    }
}
