package rrj.engine.cuda;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static rrj.engine.cuda.GpuFixtures.rand;
import static rrj.engine.cuda.GpuFixtures.rows;

/**
 * A whole BERT encoder, CUDA against CPU: the engine cannot see the model module, so this is
 * Bert.forward's op sequence written out again (embeddings + LayerNorm; per layer Q, K, V,
 * attention, output dense, add + LayerNorm, FFN with fused GELU, add + LayerNorm; pooling),
 * on random BERT-base-width weights (768 hidden, 12 heads, 3072 FFN, 2 layers), for a
 * uniform-length batch (cuBLAS attention), a mixed batch with length-1 and 128-token
 * sequences (packed attention), and the mixed batch with two LoRA experts on query and value.
 * Per pooled row: cosine ≥ 0.9999 and max |Δ| ≤ 1e-3. (GpuBench repeats the check with the
 * real {@code rrj.model.Bert} at full BERT-base size.) Needs a GPU ({@code -Pgpu}).
 */
@Tag("gpu")
class CudaBertParityTest {
    static final int C = 768, H = 12, F = 3072, LAYERS = 2, VOCAB = 300, MAX_POS = 160;
    static Backend cuda, cpu;

    @BeforeAll
    static void open() {
        cuda = GpuFixtures.cuda();
        cpu = Backends.create("cpu", 2);
    }

    @AfterAll
    static void close() {
        if (cuda != null) cuda.close();
        if (cpu != null) cpu.close();
    }

    /** Host weights: index 0-4 embeddings and their LayerNorm, then 16 per layer (Bert.Layer's order). */
    static Tensor[] weights(long seed) {
        Random r = new Random(seed);
        Tensor[] w = new Tensor[5 + 16 * LAYERS];
        w[0] = rand(r, 0.02f, VOCAB, C);
        w[1] = rand(r, 0.02f, MAX_POS, C);
        w[2] = rand(r, 0.02f, 2, C);
        w[3] = shifted(rand(r, 0.1f, C), 1);
        w[4] = rand(r, 0.1f, C);
        for (int l = 0; l < LAYERS; l++) {
            int o = 5 + 16 * l;
            for (int t = 0; t < 4; t++) { w[o + 2 * t] = rand(r, 0.04f, C, C); w[o + 2 * t + 1] = rand(r, 0.05f, C); }
            w[o + 8] = shifted(rand(r, 0.1f, C), 1);
            w[o + 9] = rand(r, 0.1f, C);
            w[o + 10] = rand(r, 0.04f, F, C);
            w[o + 11] = rand(r, 0.05f, F);
            w[o + 12] = rand(r, 0.04f, C, F);
            w[o + 13] = rand(r, 0.05f, C);
            w[o + 14] = shifted(rand(r, 0.1f, C), 1);
            w[o + 15] = rand(r, 0.1f, C);
        }
        return w;
    }

    static Tensor shifted(Tensor t, float by) {
        for (long i = 0; i < t.numel(); i++) t.setFloat(i, t.getFloat(i) + by);
        return t;
    }

    /** Bert.forward + pool on {@code be}; lora: per layer [query, value] segments on host tensors, or null. */
    static float[] encode(Backend be, Tensor[] host, int[] ids, Batch batch, Lora[][] lora, Backend.Pooling mode, boolean normalize) {
        Tensor[] w = new Tensor[host.length];
        for (int i = 0; i < host.length; i++) w[i] = be.weight(host[i]);
        int n = batch.tokens;
        Tensor h = be.allocate(n, C), h1 = be.allocate(n, C), q = be.allocate(n, C), k = be.allocate(n, C), v = be.allocate(n, C);
        Tensor ctx = be.allocate(n, C), tmp = be.allocate(n, C), ff = be.allocate(n, F), pooled = be.allocate(batch.size, C);
        int[] positions = new int[n], types = new int[n];
        for (int b = 0; b < batch.size; b++) for (int i = 0; i < batch.length(b); i++) positions[batch.start[b] + i] = i;
        be.embed(h, ids, positions, types, batch, w[0], w[1], w[2], w[3], w[4], 1e-12f);
        for (int l = 0; l < LAYERS; l++) {
            int o = 5 + 16 * l;
            Lora lq = lora == null ? null : CudaOpsParityTest.on(be, lora[l][0]), lv = lora == null ? null : CudaOpsParityTest.on(be, lora[l][1]);
            be.linear(q, h, n, w[o], w[o + 1], lq, false);
            be.linear(k, h, n, w[o + 2], w[o + 3], null, false);
            be.linear(v, h, n, w[o + 4], w[o + 5], lv, false);
            be.attention(ctx, q, k, v, batch, H);
            be.linear(tmp, ctx, n, w[o + 6], w[o + 7], null, false);
            be.addLayerNorm(h1, tmp, h, n, w[o + 8], w[o + 9], 1e-12f);
            be.linear(ff, h1, n, w[o + 10], w[o + 11], null, true);
            be.linear(tmp, ff, n, w[o + 12], w[o + 13], null, false);
            be.addLayerNorm(h, tmp, h1, n, w[o + 14], w[o + 15], 1e-12f);
        }
        be.pool(pooled, h, batch, mode);
        if (normalize) be.l2Normalize(pooled, batch.size);
        return rows(be, pooled, batch.size);
    }

    static void compare(String what, Tensor[] w, int[] lens, Lora[][] lora, Backend.Pooling mode, boolean normalize) {
        Batch batch = new Batch(lens.length).set(lens, lens.length);
        Random r = new Random(lens.length * 31L + lens[0]);
        int[] ids = new int[batch.tokens];
        for (int i = 0; i < ids.length; i++) ids[i] = r.nextInt(VOCAB);
        float[] got = encode(cuda, w, ids, batch, lora, mode, normalize), ref = encode(cpu, w, ids, batch, lora, mode, normalize);
        double worst = 1;
        for (int b = 0; b < batch.size; b++) {
            float[] g = Arrays.copyOfRange(got, b * C, (b + 1) * C), c = Arrays.copyOfRange(ref, b * C, (b + 1) * C);
            Check.cosineAtLeast(what + " sequence " + b, g, c, 0.9999);
            worst = Math.min(worst, Check.cosine(g, c));
        }
        double maxDiff = Check.maxAbsDiff(got, ref);
        System.out.printf("[gpu tests] %s: min cosine %.7f, max |Δ| %.2e%n", what, worst, maxDiff);
        assertTrue(maxDiff <= 1e-3, what + ": max |Δ| " + maxDiff + " > 1e-3");
    }

    @Test
    void uniformBatchCublasAttention() {
        Tensor[] w = weights(1);
        compare("uniform 4x32 mean", w, new int[]{32, 32, 32, 32}, null, Backend.Pooling.MEAN, false);
        compare("uniform 1x16 cls+l2", w, new int[]{16}, null, Backend.Pooling.CLS, true);
    }

    @Test
    void mixedBatchPackedAttention() {
        compare("mixed mean", weights(2), new int[]{1, 7, 16, 33, 128}, null, Backend.Pooling.MEAN, false);
    }

    @Test
    void mixedBatchWithTwoLoraExperts() {
        Tensor[] w = weights(3);
        int[] lens = {5, 1, 40, 12, 3};
        Batch batch = new Batch(5).set(lens, 5);
        Random r = new Random(9);
        Lora[][] lora = new Lora[LAYERS][2];
        for (int l = 0; l < LAYERS; l++)
            for (int t = 0; t < 2; t++) {
                Lora x = new Lora(2);
                x.add(batch.start[0], batch.start[2], rand(r, 0.05f, 8, C), rand(r, 0.05f, C, 8), 4f);  // expert 1: sequences 0-1
                x.add(batch.start[3], batch.start[5], rand(r, 0.05f, 8, C), rand(r, 0.05f, C, 8), 4f);  // expert 2: sequences 3-4; 2 has none
                lora[l][t] = x;
            }
        compare("mixed + 2 LoRA experts (q, v)", w, lens, lora, Backend.Pooling.MEAN, false);
    }
}
