package rrj.router;

import rrj.model.BertConfig;
import rrj.model.Json;
import rrj.model.RandomBert;
import rrj.model.Safetensors;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** A small random BERT in our model-directory format (as app's CliTest builds), for tests that need an Encoder. */
final class TinyModel {
    private TinyModel() {}

    static Path create(Path dir, long seed) throws IOException {
        Files.createDirectories(dir);
        BertConfig c = new BertConfig(30522, 32, 2, 4, 64, 64, 2, 1e-12);
        Safetensors.write(dir.resolve("model.safetensors"), RandomBert.weights(c, seed), null);
        Files.writeString(dir.resolve("config.json"), Json.writePretty(c.toMap()));
        Files.copy(Path.of("../data/test-fixtures/vocab.txt"), dir.resolve("vocab.txt"));
        return dir;
    }
}
