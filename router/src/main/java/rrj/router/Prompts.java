package rrj.router;

import rrj.model.Json;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * The text a model expects before queries and passages. Read from sentence-transformers'
 * {@code config_sentence_transformers.json} ({@code "prompts": {"query": ..., "passage"|"document": ...}})
 * when the model directory has one; otherwise e5 models (an {@code _name_or_path} in
 * {@code config.json} naming e5) get {@code "query: "} / {@code "passage: "}, as their model
 * cards require; every other model gets none.
 */
public record Prompts(String query, String passage) {
    public static final Prompts NONE = new Prompts("", "");

    public static Prompts of(Path modelDir) throws IOException {
        Path st = modelDir.resolve("config_sentence_transformers.json");
        if (Files.exists(st)) {
            Map<String, Object> m = parse(st);
            if (m.get("prompts") instanceof Map<?, ?> p && !p.isEmpty()) {
                String q = string(st, p, "query"), d = string(st, p, "passage");
                if (d == null) d = string(st, p, "document");
                return new Prompts(q == null ? "" : q, d == null ? "" : d);
            }
        }
        Path cfg = modelDir.resolve("config.json");
        if (Files.exists(cfg) && parse(cfg).get("_name_or_path") instanceof String n
                && n.toLowerCase(java.util.Locale.ROOT).matches(".*(^|[/_-])e5([/_-]|$).*"))
            return new Prompts("query: ", "passage: ");
        return NONE;
    }

    private static Map<String, Object> parse(Path f) throws IOException {
        try {
            return Json.parseObject(Files.readString(f));
        } catch (Json.JsonException e) {
            throw new IllegalArgumentException(f + ": not valid JSON: " + e.getMessage());
        }
    }

    private static String string(Path f, Map<?, ?> prompts, String key) {
        Object v = prompts.get(key);
        if (v == null) return null;
        if (!(v instanceof String s)) throw new IllegalArgumentException(f + ": prompts." + key + " must be a string, got " + v);
        return s;
    }
}
