package rrj.app.serve;

import rrj.model.Encoder;
import rrj.router.Router;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The request and response shapes of the server, apart from HTTP: what a JSON body may hold
 * and what it is turned into. Every refusal is an {@link ApiError} naming the field (and the
 * input index) at fault.
 *
 * <p>{@code input}, as OpenAI's embeddings API takes it: a string, a list of strings, a list
 * of token-id lists, or one token-id list. Token ids are the model's input ids as its
 * tokenizer produces them, special tokens included ({@code [CLS] … [SEP]}, what Hugging Face's
 * {@code tokenizer(text)["input_ids"]} gives); none are added. An input longer than the
 * model's maximum length is truncated as the tokenizer truncates (for token ids: the first
 * {@code max − 1} ids and the last one), or refused under {@code --no-truncate}.
 *
 * <p>{@code model}: the model directory's name or {@value Router#BASE} (the base encoder),
 * an expert's name, or {@value Batcher#AUTO} (routing; needs a pilot table). Absent: the base
 * encoder. Unknown request fields are ignored, as OpenAI-compatible servers commonly do.
 */
final class Api {
    private Api() {}

    /** Limits of one server. {@code truncate}: cut over-long inputs instead of refusing them. */
    record Limits(int maxBatchTokens, int maxQueue, int maxInputs, long maxBodyBytes, boolean truncate) {}

    /** What the endpoints need to know about the loaded model. */
    record Model(String name, Encoder encoder, Router router, Limits limits) {
        int maxLength() { return encoder.options.maxLength(); }
        int dimension() { return encoder.dimension(); }

        /** The names {@code model} may take, in the order error messages list them. */
        List<String> names() {
            List<String> n = new ArrayList<>();
            n.add(name);
            if (!name.equals(Router.BASE)) n.add(Router.BASE);
            for (String e : router.experts()) if (!n.contains(e)) n.add(e);
            for (String e : router.table.names()) if (!n.contains(e)) n.add(e); // adapters outside the routing options
            if (router.pilots() != null) n.add(Batcher.AUTO);
            return n;
        }
    }

    // ------------------------------------------------------------------ requests

    /**
     * The inputs of {@code input}, tokenized: one id array per input. {@code field} names the
     * request field in messages ("input", or "query" for search).
     */
    static int[][] inputs(Object input, String field, Model m) {
        if (input == null) throw ApiError.invalid("missing '" + field + "': send a string, a list of strings, or a list of token-id lists", field);
        List<?> items;
        boolean tokenArrays, one = false; // one: a bare string or id list, named 'input' in messages
        if (input instanceof String) {
            items = List.of(input);
            tokenArrays = false;
            one = true;
        } else if (input instanceof List<?> l) {
            if (l.isEmpty()) throw ApiError.invalid("'" + field + "' is an empty list: send at least one input", field);
            if (l.get(0) instanceof Long) {          // one token-id list
                items = List.of(l);
                tokenArrays = true;
                one = true;
            } else {
                items = l;
                tokenArrays = l.get(0) instanceof List<?>;
                if (!tokenArrays && !(l.get(0) instanceof String))
                    throw ApiError.invalid("'" + field + "[0]' must be a string or a list of token ids, got " + typeName(l.get(0)), field);
            }
        } else {
            throw ApiError.invalid("'" + field + "' must be a string, a list of strings, or a list of token-id lists; got " + typeName(input), field);
        }
        if (items.size() > m.limits().maxInputs())
            throw ApiError.invalid("too many inputs: " + items.size() + " (this server takes at most " + m.limits().maxInputs() + " per request)", field);
        int[][] ids = new int[items.size()][];
        for (int i = 0; i < ids.length; i++) {
            String at = one ? field : field + "[" + i + "]";
            ids[i] = tokenArrays ? tokenIds(items.get(i), at, field, m) : text(items.get(i), at, field, m);
        }
        return ids;
    }

    private static int[] text(Object o, String at, String field, Model m) {
        if (!(o instanceof String s)) throw ApiError.invalid("'" + at + "' must be a string like the inputs before it, got " + typeName(o), field);
        if (s.isEmpty()) throw ApiError.invalid("'" + at + "' is an empty string", field);
        if (m.limits().truncate()) return m.encoder().tokenize(s);
        int[] ids = m.encoder().tokenizer.encode(s, m.maxLength() + 1);
        if (ids.length > m.maxLength()) throw tooLong(at, field, m);
        return ids;
    }

    private static int[] tokenIds(Object o, String at, String field, Model m) {
        if (!(o instanceof List<?> l)) throw ApiError.invalid("'" + at + "' must be a list of token ids like the inputs before it, got " + typeName(o), field);
        if (l.isEmpty()) throw ApiError.invalid("'" + at + "' is an empty list of token ids", field);
        int vocab = m.encoder().bert.config.vocabSize();
        int n = l.size(), max = m.maxLength();
        if (n > max && !m.limits().truncate()) throw tooLong(at, field, m);
        int[] ids = new int[Math.min(n, max)];
        for (int j = 0; j < n; j++) {
            Object t = l.get(j);
            if (!(t instanceof Long v)) throw ApiError.invalid("'" + at + "[" + j + "]' must be a token id (an integer), got " + typeName(t), field);
            if (v < 0 || v >= vocab) throw ApiError.invalid("'" + at + "[" + j + "]' = " + v + " is not a token id of this model (0 to " + (vocab - 1) + ")", field);
            if (j < ids.length - 1) ids[j] = (int) (long) v;
            else if (j == n - 1) ids[ids.length - 1] = (int) (long) v; // truncation keeps the last id ([SEP])
        }
        return ids;
    }

    private static ApiError tooLong(String at, String field, Model m) {
        return ApiError.invalid("'" + at + "' is longer than the model's maximum of " + m.maxLength()
                + " tokens (special tokens included), and this server runs with --no-truncate", field);
    }

    /** The option a {@code model} value names: {@link Router#BASE}, an expert, or {@link Batcher#AUTO}. */
    static String option(Object model, Model m) {
        if (model == null) return Router.BASE;
        if (!(model instanceof String s)) throw ApiError.invalid("'model' must be a string, got " + typeName(model), "model");
        if (s.equals(m.name()) || s.equals(Router.BASE)) return Router.BASE;
        if (s.equals(Batcher.AUTO)) {
            if (m.router().pilots() == null)
                throw new ApiError(409, "invalid_request_error", "model 'auto' routes each input by the pilot table, and this server has none: "
                        + "build one with 'rr pilots build' (it writes " + Router.PILOTS + " into the experts directory) and restart the server",
                        "model", "no_pilot_table");
            return Batcher.AUTO;
        }
        if (m.router().table.contains(s)) return s;
        throw new ApiError(404, "invalid_request_error", "unknown model '" + s + "' (this server has: " + String.join(", ", m.names()) + ")",
                "model", "model_not_found");
    }

    /** {@code dimensions}: null for the full width, else 1 to the model's dimension. */
    static int dimensions(Object d, Model m) {
        if (d == null) return m.dimension();
        if (!(d instanceof Long v) || v < 1 || v > m.dimension())
            throw ApiError.invalid("'dimensions' must be an integer from 1 to " + m.dimension() + " (the model's dimension), got "
                    + (d instanceof String s ? "\"" + s + "\"" : d), "dimensions");
        return (int) (long) v;
    }

    /** {@code encoding_format}: true for base64, false for float (the default). */
    static boolean base64(Object f) {
        if (f == null || "float".equals(f)) return false;
        if ("base64".equals(f)) return true;
        throw ApiError.invalid("'encoding_format' must be \"float\" or \"base64\", got " + (f instanceof String s ? "\"" + s + "\"" : typeName(f)),
                "encoding_format");
    }

    /** An optional integer field within [min, max]. */
    static int integer(Object v, String field, int dflt, int min, int max) {
        if (v == null) return dflt;
        if (!(v instanceof Long l) || l < min || l > max)
            throw ApiError.invalid("'" + field + "' must be an integer from " + min + " to " + max + ", got " + (v instanceof String s ? "\"" + s + "\"" : v), field);
        return (int) (long) l;
    }

    /** How JSON values are named in messages. */
    static String typeName(Object o) {
        if (o == null) return "null";
        if (o instanceof String) return "a string";
        if (o instanceof Long || o instanceof Double) return "a number (" + o + ")";
        if (o instanceof Boolean) return "a boolean";
        if (o instanceof List<?>) return "a list";
        if (o instanceof Map<?, ?>) return "an object";
        return o.getClass().getSimpleName();
    }

    // ------------------------------------------------------------------ responses

    /**
     * OpenAI's Matryoshka shortening: the first {@code n} values, L2-normalised again. The full
     * width is returned as is unless {@code renormalize}.
     */
    static float[] shorten(float[] v, int n, boolean renormalize) {
        if (n == v.length && !renormalize) return v;
        float[] out = java.util.Arrays.copyOf(v, n);
        double s = 0;
        for (float x : out) s += (double) x * x;
        if (s > 0) {
            float inv = (float) (1 / Math.sqrt(s));
            for (int i = 0; i < n; i++) out[i] *= inv;
        }
        return out;
    }

    /** Little-endian float32 bytes in base64, as OpenAI's {@code encoding_format: "base64"}. */
    static String base64(float[] v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(v);
        return Base64.getEncoder().encodeToString(b.array());
    }

    /** Per option, its routing score (null where the option has no pilots). */
    static Map<String, Object> scores(Router.Decision d) {
        Map<String, Object> s = new LinkedHashMap<>();
        for (int g = 0; g < d.options().size(); g++) s.put(d.options().get(g), Double.isNaN(d.scores()[g]) ? null : d.scores()[g]);
        return s;
    }

    static Map<String, Object> usage(int[][] ids) {
        long t = 0;
        for (int[] s : ids) t += s.length;
        Map<String, Object> u = new LinkedHashMap<>();
        u.put("prompt_tokens", t);
        u.put("total_tokens", t);
        return u;
    }
}
