package rrj.model;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The LoRA trainer on a tiny model: it learns, it is deterministic, it resumes exactly, and it stops on NaN. */
class LoraTrainerTest {
    static final BertConfig CFG = new BertConfig(30522, 32, 2, 4, 64, 64, 2, 1e-12);
    static Path modelDir;

    @BeforeAll
    static void model() throws IOException {
        modelDir = Files.createTempDirectory("trainer").resolve("m");
        Files.createDirectories(modelDir);
        Safetensors.write(modelDir.resolve("model.safetensors"), RandomBert.weights(CFG, 3), null);
        Files.writeString(modelDir.resolve("config.json"), Json.writePretty(CFG.toMap()));
        Files.copy(Path.of("../data/test-fixtures/vocab.txt"), modelDir.resolve("vocab.txt"));
        Files.writeString(modelDir.resolve("modules.json"), "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
                + "{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"},"
                + "{\"idx\":2,\"name\":\"2\",\"path\":\"2_Normalize\",\"type\":\"sentence_transformers.models.Normalize\"}]");
        Files.createDirectories(modelDir.resolve("1_Pooling"));
        Files.writeString(modelDir.resolve("1_Pooling/config.json"), "{\"pooling_mode_mean_tokens\": true}");
    }

    static final String[] QUERIES = {"alpha beta", "gamma delta epsilon", "zeta", "eta theta iota", "kappa lambda", "mu nu xi omicron", "pi rho", "sigma tau"};

    /** Targets: random unit vectors per query, so the adapter must learn a mapping the base model does not have. */
    static float[][] targets(int c) {
        SplittableRandom r = new SplittableRandom(9);
        float[][] d = new float[QUERIES.length][c];
        for (float[] row : d) {
            double n = 0;
            for (int k = 0; k < c; k++) { row[k] = (float) r.nextGaussian(); n += row[k] * row[k]; }
            for (int k = 0; k < c; k++) row[k] /= (float) Math.sqrt(n);
        }
        return d;
    }

    static LoraTrainer train(Encoder enc, int steps, int from, Path resumeFrom, Path checkpointAt, int checkpointStep, double[] losses) throws IOException {
        LoraTrainer.Hyper h = new LoraTrainer.Hyper(4, 16, List.of(Bert.Target.QUERY, Bert.Target.VALUE, Bert.Target.OUTPUT), 5e-3, 0.01, 0.1, 0.1, 0.05, 1.0, 7);
        LoraTrainer t = new LoraTrainer("toy", enc, h, steps);
        if (resumeFrom != null) t.resume(resumeFrom);
        int[][] ids = new int[QUERIES.length][];
        for (int i = 0; i < ids.length; i++) ids[i] = enc.tokenize(QUERIES[i]);
        float[][] docs = targets(enc.dimension());
        while (t.step < steps) {
            double loss = t.step(ids, docs);
            if (losses != null) losses[t.step - 1] = loss;
            if (checkpointAt != null && t.step == checkpointStep) t.checkpoint(checkpointAt, Map.of());
        }
        return t;
    }

    @Test
    void learnsDeterministicallyAndResumesExactly() throws IOException {
        try (Backend cpu = Backends.create("cpu", 2); Encoder enc = Encoder.open(modelDir, cpu, null, null, 32)) {
            double[] losses = new double[60];
            LoraTrainer a = train(enc, 60, 0, null, null, 0, losses);
            assertTrue(losses[59] < 0.5 * losses[0], "loss did not fall: first " + losses[0] + ", last " + losses[59]);
            LoraTrainer b = train(enc, 60, 0, null, null, 0, null);
            for (int l = 0; l < CFG.numLayers(); l++)
                for (Bert.Target tg : List.of(Bert.Target.QUERY, Bert.Target.VALUE, Bert.Target.OUTPUT))
                    assertArrayEquals(a.adapter.b[l][tg.ordinal()].toFloatArray(), b.adapter.b[l][tg.ordinal()].toFloatArray(), "determinism " + l + " " + tg);
            // interrupted at step 25 and resumed: the same adapter as the uninterrupted run
            Path ck = Files.createTempDirectory("ck");
            train(enc, 60, 0, null, ck, 25, null);
            LoraTrainer resumed = train(enc, 60, 25, ck, null, 0, null);
            for (int l = 0; l < CFG.numLayers(); l++)
                for (Bert.Target tg : List.of(Bert.Target.QUERY, Bert.Target.VALUE, Bert.Target.OUTPUT))
                    assertArrayEquals(a.adapter.a[l][tg.ordinal()].toFloatArray(), resumed.adapter.a[l][tg.ordinal()].toFloatArray(), "resume " + l + " " + tg);
            // the saved adapter loads back with exactly its targets (output.dense alone is written as a regex)
            Path saved = Files.createTempDirectory("saved");
            a.adapter.save(saved);
            LoraAdapter back = LoraAdapter.load("toy", saved, CFG, cpu, Arena.ofAuto());
            assertEquals(List.of(Bert.Target.QUERY, Bert.Target.VALUE, Bert.Target.OUTPUT), back.targets());
            // and it embeds the training queries closer to their targets than the base model does
            LoraAdapter[] all = new LoraAdapter[QUERIES.length];
            java.util.Arrays.fill(all, back);
            float[][] with = enc.embed(List.of(QUERIES), all), base = enc.embed(List.of(QUERIES));
            float[][] d = targets(enc.dimension());
            double gainSum = 0;
            for (int i = 0; i < QUERIES.length; i++) gainSum += dot(with[i], d[i]) - dot(base[i], d[i]);
            assertTrue(gainSum > 0, "trained adapter did not move queries toward their documents: " + gainSum);
        }
    }

    static double dot(float[] a, float[] b) { double s = 0; for (int i = 0; i < a.length; i++) s += a[i] * b[i]; return s; }

    @Test
    void nanLossStopsWithAClearMessage() throws IOException {
        try (Backend cpu = Backends.create("cpu", 2); Encoder enc = Encoder.open(modelDir, cpu, null, null, 32)) {
            LoraTrainer t = new LoraTrainer("nan", enc, LoraTrainer.Hyper.defaults(), 10);
            float[][] docs = targets(enc.dimension());
            docs[1][3] = Float.NaN;
            int[][] ids = {enc.tokenize("a b"), enc.tokenize("c d")};
            var e = assertThrows(LoraTrainer.DivergedException.class, () -> t.step(ids, new float[][]{docs[0], docs[1]}));
            assertTrue(e.getMessage().contains("loss is NaN at step 1"), e.getMessage());
        }
    }
}
