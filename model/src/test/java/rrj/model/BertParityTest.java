package rrj.model;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * The whole encoder, CpuBackend against ReferenceBackend, on random weights of BERT-base shape
 * (768 hidden, 12 heads, 3072 FFN, 12 layers), and padding invariance of packed batches.
 */
class BertParityTest {

    static Bert model(BertConfig c, Map<String, Tensor> w, Backend be, Path dir) throws IOException {
        Path f = dir.resolve("model.safetensors");
        if (!Files.exists(f)) Safetensors.write(f, w, Map.of("format", "pt"));
        return Bert.load(c, Safetensors.open(f, Arena.ofAuto()), be);
    }

    static float[] run(Bert bert, int[] ids, Batch batch, boolean pooled, Backend.Pooling mode) {
        Tensor h = bert.forward(ids, batch, null);
        int c = bert.config.hiddenSize();
        if (!pooled) {
            float[] out = new float[batch.tokens * c];
            bert.backend().read(h, 0, out, 0, out.length);
            return out;
        }
        Tensor p = bert.pool(batch, mode, false);
        float[] out = new float[batch.size * c];
        bert.backend().read(p, 0, out, 0, out.length);
        return out;
    }

    @Test
    void cpuMatchesReferenceOnBertBaseShape() throws IOException {
        BertConfig c = RandomBert.baseConfig();
        Map<String, Tensor> w = RandomBert.weights(c, 7);
        Path dir = Files.createTempDirectory("bert-base");
        try (Backend cpu = Backends.create("cpu", 2)) {
            Bert ref = model(c, w, new ReferenceBackend(), dir);
            Bert fast = model(c, w, cpu, dir);
            int[] lens = {1, 9, 2, 17};
            Batch batch = new Batch(4).set(lens, 4);
            SplittableRandom r = new SplittableRandom(3);
            int[] ids = new int[batch.tokens];
            for (int i = 0; i < ids.length; i++) ids[i] = r.nextInt(c.vocabSize());
            float[] hr = run(ref, ids, batch, false, null), hc = run(fast, ids, batch, false, null);
            Check.close("BERT-base last hidden state cpu vs ref", hc, hr, 1e-4, 0);
            for (Backend.Pooling mode : Backend.Pooling.values()) {
                float[] pr = run(ref, ids, batch, true, mode), pc = run(fast, ids, batch, true, mode);
                for (int b = 0; b < 4; b++) {
                    float[] a = java.util.Arrays.copyOfRange(pc, b * 768, (b + 1) * 768);
                    float[] e = java.util.Arrays.copyOfRange(pr, b * 768, (b + 1) * 768);
                    Check.cosineAtLeast("pooled " + mode + " sequence " + b, a, e, 0.99999);
                    Check.close("pooled " + mode + " sequence " + b, a, e, 1e-4, 0);
                }
            }
        }
    }

    @Test
    void textAloneEqualsTextInsideMixedBatch() throws IOException {
        BertConfig c = new BertConfig(100, 48, 2, 4, 96, 64, 2, 1e-12);
        Map<String, Tensor> w = RandomBert.weights(c, 11);
        Path dir = Files.createTempDirectory("bert-small");
        try (Backend cpu = Backends.create("cpu", 2)) {
            for (Backend be : new Backend[]{new ReferenceBackend(), cpu}) {
                Bert bert = model(c, w, be, dir);
                SplittableRandom r = new SplittableRandom(5);
                int[] lens = {7, 1, 30, 3, 12};
                int[][] seqs = new int[lens.length][];
                for (int s = 0; s < lens.length; s++) {
                    seqs[s] = new int[lens[s]];
                    for (int i = 0; i < lens[s]; i++) seqs[s][i] = r.nextInt(100);
                }
                int[] packed = java.util.Arrays.stream(seqs).flatMapToInt(java.util.Arrays::stream).toArray();
                Batch batch = new Batch(5).set(lens, 5);
                float[] mixed = run(bert, packed, batch, true, Backend.Pooling.MEAN);
                for (int s = 0; s < lens.length; s++) {
                    float[] alone = run(bert, seqs[s], new Batch(1).set(new int[]{lens[s]}, 1), true, Backend.Pooling.MEAN);
                    float[] inBatch = java.util.Arrays.copyOfRange(mixed, s * 48, (s + 1) * 48);
                    // packed batches have no padding: the same rows see the same ops, so equal within float noise
                    Check.close(be.name() + " sequence " + s + " alone vs in batch", inBatch, alone, 1e-6, 1e-6);
                }
            }
        }
    }

    @Test
    void wrongShapeAndMissingTensorNameTheKey() throws IOException {
        BertConfig c = new BertConfig(100, 48, 2, 4, 96, 64, 2, 1e-12);
        Map<String, Tensor> w = RandomBert.weights(c, 1);
        Path dir = Files.createTempDirectory("bad");
        w.put("encoder.layer.1.intermediate.dense.weight", Tensor.allocate(null, 95, 48));
        Path f = dir.resolve("model.safetensors");
        Safetensors.write(f, w, null);
        var e = org.junit.jupiter.api.Assertions.assertThrows(Safetensors.FormatException.class,
                () -> Bert.load(c, Safetensors.open(f, Arena.ofAuto()), new ReferenceBackend()));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("encoder.layer.1.intermediate.dense.weight")
                && e.getMessage().contains("[95, 48]"), e.getMessage());
        w.remove("encoder.layer.1.intermediate.dense.weight");
        Safetensors.write(f, w, null);
        e = org.junit.jupiter.api.Assertions.assertThrows(Safetensors.FormatException.class,
                () -> Bert.load(c, Safetensors.open(f, Arena.ofAuto()), new ReferenceBackend()));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("missing tensor 'encoder.layer.1.intermediate.dense.weight'"), e.getMessage());
    }
}
