package rrj.router;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.model.LoraAdapter;
import rrj.model.LoraTrainer;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * rr train-expert's driver on a tiny random model: pairs whose positive is missing from the
 * corpus are skipped and counted, an empty training set is refused naming the directory, and a
 * run that stops after its first checkpoint resumes to the same adapter as an uninterrupted run.
 */
class ExpertTrainingTest {
    static Path tmp, model;
    static Backend cpu;
    static Encoder enc;

    @BeforeAll
    static void setUp() throws IOException {
        tmp = Files.createTempDirectory("rr-expert-training");
        model = TinyModel.create(tmp.resolve("tiny"), 7);
        cpu = Backends.create("cpu", 2);
        enc = Encoder.open(model, cpu, null, null, 32);
    }

    @AfterAll
    static void tearDown() {
        enc.close();
        cpu.close();
    }

    static final String[] WORDS = {"protein", "cell", "gene", "vaccine", "brain", "virus", "energy", "climate", "river", "star"};

    /** 24 documents; 20 train queries, each judged relevant to one document; {@code missing} of them name a document not in the corpus. */
    static Path dataset(String name, int missing) throws IOException {
        Path dir = tmp.resolve(name);
        Files.createDirectories(dir.resolve("qrels"));
        StringBuilder corpus = new StringBuilder(), queries = new StringBuilder(), train = new StringBuilder("query-id\tcorpus-id\tscore\n");
        for (int d = 0; d < 24; d++)
            corpus.append(Json.write(Map.of("_id", "d" + d, "title", "", "text", WORDS[d % 10] + " " + WORDS[(d * 3) % 10] + " " + WORDS[(d * 7 + 1) % 10] + " doc " + d)))
                    .append('\n');
        for (int q = 0; q < 20; q++) {
            queries.append(Json.write(Map.of("_id", "q" + q, "text", WORDS[q % 10] + " " + WORDS[(q * 3) % 10]))).append('\n');
            train.append("q").append(q).append('\t').append(q < missing ? "gone" + q : "d" + q).append("\t1\n");
        }
        Files.writeString(dir.resolve("corpus.jsonl"), corpus);
        Files.writeString(dir.resolve("queries.jsonl"), queries);
        Files.writeString(dir.resolve("qrels/train.tsv"), train);
        return dir;
    }

    static ExpertTraining.Options options(Path data, Path out, Path ckpt, int validateEvery, PrintStream log) {
        LoraTrainer.Hyper d = LoraTrainer.Hyper.defaults();
        LoraTrainer.Hyper h = new LoraTrainer.Hyper(4, 8, d.targets(), 1e-2, d.weightDecay(), d.warmupFraction(), d.dropout(), d.temperature(),
                d.clipNorm(), 3);
        return new ExpertTraining.Options("toy", List.of(data), out, ckpt, tmp.resolve("index"), 3, 4, 0, 0.2, 100, validateEvery, h, log);
    }

    static PrintStream quiet(ByteArrayOutputStream b) { return new PrintStream(b, true, StandardCharsets.UTF_8); }

    @Test
    void missingPositivesAreSkippedAndCounted() throws IOException {
        Path data = dataset("skips", 3);
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        ExpertTraining.Result r = ExpertTraining.run(enc, options(data, tmp.resolve("skips-out"), tmp.resolve("skips-ckpt"), 1000, quiet(log)));
        assertEquals(3, r.skippedPairs());
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("3 pairs skipped (positive not in the corpus)"), log.toString(StandardCharsets.UTF_8));
        // 17 queries with a positive, 20 % (3) held out: 14 pairs, batches of 4 → 3 per epoch, 3 epochs
        assertEquals(9, r.steps());
        assertTrue(Files.exists(tmp.resolve("skips-out/adapter_model.safetensors")));
    }

    @Test
    void anEmptyTrainingSetIsRefusedNamingTheDirectory() throws IOException {
        Path data = dataset("empty", 20);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ExpertTraining.run(enc, options(data, tmp.resolve("empty-out"), tmp.resolve("empty-ckpt"), 1000, quiet(new ByteArrayOutputStream()))));
        assertTrue(e.getMessage().contains(data.toString()) && e.getMessage().contains("empty training set"), e.getMessage());
        assertTrue(e.getMessage().contains("20 pairs skipped"), e.getMessage());
    }

    @Test
    void sameSeedSameAdapterAndAFinishedRunResumesToItsBest() throws IOException {
        Path data = dataset("resume", 0);
        // validation (and a checkpoint) every 3 steps, 12 steps in all
        ExpertTraining.Result first = ExpertTraining.run(enc, options(data, tmp.resolve("first-out"), tmp.resolve("first-ckpt"), 3,
                quiet(new ByteArrayOutputStream())));
        assertEquals(12, first.steps());
        ExpertTraining.Result second = ExpertTraining.run(enc, options(data, tmp.resolve("second-out"), tmp.resolve("second-ckpt"), 3,
                quiet(new ByteArrayOutputStream())));
        assertEquals(first.bestDev(), second.bestDev(), 0.0);
        assertEquals(first.bestStep(), second.bestStep());
        LoraAdapter a = LoraAdapter.load("a", tmp.resolve("first-out"), enc.bert.config, cpu, Arena.ofAuto());
        LoraAdapter b = LoraAdapter.load("b", tmp.resolve("second-out"), enc.bert.config, cpu, Arena.ofAuto());
        int compared = 0;
        for (int l = 0; l < enc.bert.config.numLayers(); l++)
            for (int t = 0; t < a.a[l].length; t++)
                if (a.a[l][t] != null) {
                    assertArrayEquals(a.a[l][t].toFloatArray(), b.a[l][t].toFloatArray(), "same seed and threads: the same A");
                    assertArrayEquals(a.b[l][t].toFloatArray(), b.b[l][t].toFloatArray(), "same seed and threads: the same B");
                    compared++;
                }
        assertEquals(2 * enc.bert.config.numLayers(), compared);
        // run again on the finished checkpoint: it resumes, has nothing left to do, and keeps the best
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        ExpertTraining.Result again = ExpertTraining.run(enc, options(data, tmp.resolve("first-out"), tmp.resolve("first-ckpt"), 3, quiet(log)));
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("resuming") && log.toString(StandardCharsets.UTF_8).contains("from step 12 of 12"),
                log.toString(StandardCharsets.UTF_8));
        assertEquals(first.bestDev(), again.bestDev(), 0.0);
        assertEquals(first.bestStep(), again.bestStep());
    }
}
