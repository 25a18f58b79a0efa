package rrj.convert;

import rrj.engine.Backend;

import java.io.IOException;
import java.io.InputStream;
import java.net.URL;
import java.net.URLConnection;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

import static org.junit.jupiter.api.Assertions.assertNotNull;

/** The real models of the test classpath (LangChain4j jars), extracted and converted once into target/. */
public final class TestModels {
    private TestModels() {}

    public record Model(String name, Path onnx, Path tokenizer, Path dir, Backend.Pooling pooling, boolean normalize) {}

    static Path cache() throws IOException {
        Path c = Path.of(System.getProperty("basedir", "."), "target", "test-models");
        Files.createDirectories(c);
        return c;
    }

    /** A classpath resource as a file (extracted atomically, reused while the size matches). */
    public static Path resource(String name) throws IOException {
        URL url = TestModels.class.getResource("/" + name);
        assertNotNull(url, "resource /" + name + " is not on the test classpath");
        URLConnection conn = url.openConnection();
        long size = conn.getContentLengthLong();
        Path f = cache().resolve(name);
        if (!Files.exists(f) || Files.size(f) != size) {
            Path tmp = Files.createTempFile(cache(), name, ".part");
            try (InputStream in = conn.getInputStream()) {
                Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
            }
            Files.move(tmp, f, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } else {
            conn.getInputStream().close();
        }
        return f;
    }

    /** name: "all-minilm-l6-v2", "bge-small-en-v1.5" or "e5-small-v2". */
    public static Model get(String name, Backend.Pooling pooling, boolean normalize) throws IOException {
        Path onnx = resource(name + ".onnx");
        Path tok = resource(name + "-tokenizer.json");
        Path dir = cache().resolve(name + "-converted");
        if (!Files.exists(dir.resolve("model.safetensors")) || Files.getLastModifiedTime(dir.resolve("model.safetensors")).compareTo(Files.getLastModifiedTime(onnx)) < 0) {
            Converter.deleteTree(dir);
            Converter.convert(onnx, dir, new Converter.Options(tok, pooling, normalize, 512));
        }
        return new Model(name, onnx, tok, dir, pooling, normalize);
    }
}
