package rrj.engine;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Every CpuBackend op against ReferenceBackend on awkward shapes: tails, length-1 sequences, odd sizes. */
class KernelParityTest {
    static final Backend REF = new ReferenceBackend();
    static final Backend CPU = Backends.create("cpu", 2);
    static final Backend CPU1 = Backends.create("cpu", 1);
    static final Backend DOT = new rrj.engine.cpu.CpuBackend(2, false); // the [out, in] in-place fallback
    static final Backend CPU3 = Backends.create("cpu", 3);              // more threads than cores: odd chunking

    @AfterAll
    static void close() { CPU.close(); CPU1.close(); DOT.close(); CPU3.close(); }

    static Tensor rand(Random r, float scale, long... shape) {
        Tensor t = Tensor.allocate(null, shape);
        for (long i = 0; i < t.numel(); i++) t.setFloat(i, (float) (r.nextGaussian() * scale));
        return t;
    }

    static Tensor copyTo(Backend b, Tensor t) {
        Tensor x = b.allocate(t.shape());
        b.write(t.toFloatArray(), 0, x, 0, (int) t.numel());
        return x;
    }

    static float[] rows(Backend b, Tensor t, int rows) {
        int c = (int) (t.numel() / t.dim(0));
        float[] out = new float[rows * c];
        b.read(t, 0, out, 0, rows * c);
        return out;
    }

    @Test
    void linearMatchesReferenceOnOddShapes() {
        Random r = new Random(1);
        // rows: below, at and past the 6-row tile; out: below, at and past the 16-column panel; K tails
        int[][] shapes = {{1, 1, 1}, {1, 7, 3}, {2, 9, 5}, {3, 8, 4}, {5, 17, 13}, {6, 16, 16}, {7, 64, 66}, {12, 33, 32},
                {16, 384, 384}, {13, 100, 129}, {31, 768, 67}, {97, 48, 200}, {130, 65, 17},
                {50, 1700, 40}, {7, 769, 33}, {61, 1536, 48}, {13, 1537, 20}, {61, 3100, 48}}; // K past one K block (1536, three with a tail): the accumulating kernel
        for (int[] s : shapes) {
            int m = s[0], in = s[1], out = s[2];
            Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), b = rand(r, 1, out);
            for (boolean gelu : new boolean[]{false, true}) {
                for (Tensor bias : new Tensor[]{null, b}) {
                    float[] ref = runLinear(REF, x, w, bias, m, out, gelu, null);
                    // fp32 sums of K terms drift by ~√K·|partial sum|·2⁻²⁴ from the exact (double)
                    // reference: at K = 3,100 (partial sums ~11 here) that is ~2e-5 typical, up to
                    // ~1e-4 over thousands of outputs, which an absolute 1e-5 cannot allow for
                    double atol = in > 2000 ? 1e-4 : 1e-5;
                    for (Backend cpu : new Backend[]{CPU, CPU1, DOT, CPU3})
                        Check.close("linear " + m + "x" + in + "x" + out + " gelu=" + gelu + " bias=" + (bias != null) + " " + cpu.describe(),
                                runLinear(cpu, x, w, bias, m, out, gelu, null), ref, atol, 1e-4);
                }
            }
        }
    }

    @Test
    void linearWithLoraSegmentsMatchesReference() {
        Random r = new Random(2);
        int m = 11, in = 40, out = 24;
        Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), b = rand(r, 1, out);
        Lora lora = new Lora(1);
        lora.add(0, 3, rand(r, 0.3f, 1, in), rand(r, 0.3f, out, 1), 4f);    // rank 1
        lora.add(5, 9, rand(r, 0.3f, 8, in), rand(r, 0.3f, out, 8), 2f);    // rank 8, rows 3-4 and 9-10 without LoRA
        lora.add(9, 10, rand(r, 0.1f, 64, in), rand(r, 0.1f, out, 64), 0.5f); // rank 64
        float[] ref = runLinear(REF, x, w, b, m, out, false, lora);
        for (Backend cpu : new Backend[]{CPU, CPU1, DOT, CPU3})
            Check.close("lora linear " + cpu.describe(), runLinear(cpu, x, w, b, m, out, false, lora), ref, 1e-5, 1e-4);
        // the reference itself against a literal W·x + b + s·B·(A·x) in double
        float[] xs = x.toFloatArray(), ws = w.toFloatArray(), bs = b.toFloatArray();
        for (int i = 0; i < m; i++) {
            for (int o = 0; o < out; o++) {
                double s = bs[o];
                for (int j = 0; j < in; j++) s += (double) ws[o * in + j] * xs[i * in + j];
                for (int g = 0; g < lora.count; g++) {
                    if (i < lora.rowStart[g] || i >= lora.rowEnd[g]) continue;
                    float[] a = lora.a[g].toFloatArray(), bb = lora.b[g].toFloatArray();
                    int rank = (int) lora.a[g].dim(0);
                    for (int k = 0; k < rank; k++) {
                        double ax = 0;
                        for (int j = 0; j < in; j++) ax += (double) a[k * in + j] * xs[i * in + j];
                        s += lora.scale[g] * bb[o * rank + k] * ax;
                    }
                }
                assertEquals(s, ref[i * out + o], 1e-4 * (1 + Math.abs(s)), "row " + i + " col " + o);
            }
        }
    }

    @Test
    void loraWithGeluOnTileEdgesMatchesReference() {
        Random r = new Random(6);
        // out = 37: two full 16-column panels and a 5-column tail; rows 1..20 cross tile edges
        for (int in : new int[]{29, 1000}) // 1000: two K blocks, the epilogue after the last
        for (int m : new int[]{1, 5, 6, 7, 20, 60}) {
            int out = 37;
            Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), b = rand(r, 1, out);
            Lora lora = new Lora(1);
            lora.add(0, 1, rand(r, 0.3f, 1, in), rand(r, 0.3f, out, 1), 4f);             // rank 1 on row 0
            if (m > 3) lora.add(3, m, rand(r, 0.3f, 8, in), rand(r, 0.3f, out, 8), 4f);  // rank 8 on the rest past a gap
            lora.add(0, m, rand(r, 0.3f, 3, in), rand(r, 0.3f, out, 3), 9f);             // overlaps: the first segment wins
            for (boolean gelu : new boolean[]{false, true}) {
                float[] ref = runLinear(REF, x, w, b, m, out, gelu, lora);
                for (Backend cpu : new Backend[]{CPU, CPU1, DOT})
                    Check.close("lora in=" + in + " m=" + m + " gelu=" + gelu + " " + cpu.describe(), runLinear(cpu, x, w, b, m, out, gelu, lora), ref, 1e-5, 1e-4);
            }
        }
    }

    @Test
    void packedWeightIsReusedAndLeavesTheSourceAlone() {
        Random r = new Random(7);
        int m = 9, in = 24, out = 40;
        Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in);
        Tensor wc = CPU.weight(w);
        assertTrue(w.device == null, "weight() must not mutate the caller's tensor");
        float[] ref = runLinear(REF, x, w, null, m, out, false, null);
        for (int rep = 0; rep < 3; rep++) { // first call packs, later calls reuse the panels; rows change between calls
            int rows = m - rep;
            Tensor y = CPU.allocate(m, out);
            CPU.linear(y, copyTo(CPU, x), rows, wc, null, null, false);
            float[] got = rows(CPU, y, rows);
            Check.close("packed reuse rows=" + rows, got, java.util.Arrays.copyOf(ref, rows * out), 1e-5, 1e-4);
        }
        assertTrue(w.device == null, "linear must not mutate the source tensor");
    }

    static float[] runLinear(Backend be, Tensor x, Tensor w, Tensor bias, int m, int out, boolean gelu, Lora lora) {
        Tensor y = be.allocate(m, out);
        be.linear(y, copyTo(be, x), m, be.weight(w), bias == null ? null : be.weight(bias), lora, gelu);
        return rows(be, y, m);
    }

    @Test
    void attentionMatchesReference() {
        Random r = new Random(3);
        int[][] layouts = {{1}, {1, 1, 1}, {5}, {3, 1, 17, 2}, {64, 9}, {130}, {4, 8, 12, 33}};
        for (int[] hd : new int[][]{{1, 7}, {2, 7}, {12, 32}, {3, 64}, {2, 33}, {1, 12}}) {
            int heads = hd[0], d = hd[1]; // D = 32, 64 vector-aligned; 7 all tail; 33, 12 vector + tail
            int c = heads * d;
            for (int[] lens : layouts) {
                Batch batch = new Batch(lens.length).set(lens, lens.length);
                int n = batch.tokens;
                Tensor q = rand(r, 1, n, c), k = rand(r, 1, n, c), v = rand(r, 1, n, c);
                float[] ref = runAttention(REF, q, k, v, batch, heads);
                for (Backend cpu : new Backend[]{CPU, CPU1, CPU3})
                    Check.close("attention heads=" + heads + " d=" + d + " lens=" + java.util.Arrays.toString(lens) + " " + cpu.describe(),
                            runAttention(cpu, q, k, v, batch, heads), ref, 1e-5, 1e-4);
            }
        }
    }

    static float[] runAttention(Backend be, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        Tensor out = be.allocate(q.shape());
        be.attention(out, copyTo(be, q), copyTo(be, k), copyTo(be, v), batch, heads);
        return rows(be, out, batch.tokens);
    }

    @Test
    void rowOpsMatchReference() {
        Random r = new Random(4);
        for (int c : new int[]{1, 3, 8, 37, 384, 768}) {
            int[] lens = {1, 4, 2, 9};
            Batch batch = new Batch(4).set(lens, 4);
            int n = batch.tokens;
            Tensor x = rand(r, 2, n, c), res = rand(r, 2, n, c), g = rand(r, 1, c), b = rand(r, 1, c);
            float[] ref = null;
            for (Backend be : new Backend[]{REF, CPU}) {
                Tensor out = be.allocate(n, c);
                be.addLayerNorm(out, copyTo(be, x), copyTo(be, res), n, be.weight(g), be.weight(b), 1e-12f);
                float[] got = rows(be, out, n);
                if (be == REF) ref = got; else Check.close("addLayerNorm c=" + c, got, ref, 1e-5, 1e-4);
            }
            // in place on the residual, as Bert.forward uses it
            Tensor out = CPU.allocate(n, c);
            Tensor resCopy = copyTo(CPU, res);
            CPU.addLayerNorm(resCopy, copyTo(CPU, x), resCopy, n, CPU.weight(g), CPU.weight(b), 1e-12f);
            Check.close("addLayerNorm in place c=" + c, rows(CPU, resCopy, n), ref, 1e-5, 1e-4);

            for (Backend.Pooling mode : Backend.Pooling.values()) {
                float[] pr = null;
                for (Backend be : new Backend[]{REF, CPU}) {
                    Tensor p = be.allocate(4, c);
                    be.pool(p, copyTo(be, x), batch, mode);
                    float[] got = rows(be, p, 4);
                    if (be == REF) pr = got; else Check.close("pool " + mode + " c=" + c, got, pr, 1e-5, 1e-5);
                }
            }
            float[] nr = null;
            for (Backend be : new Backend[]{REF, CPU}) {
                Tensor p = copyTo(be, x);
                be.l2Normalize(p, n);
                float[] got = rows(be, p, n);
                if (be == REF) nr = got; else Check.close("l2 c=" + c, got, nr, 1e-6, 1e-5);
            }
            out.numel();
        }
    }

    @Test
    void embedMatchesReference() {
        Random r = new Random(5);
        int vocab = 50, c = 20, maxPos = 16;
        Tensor word = rand(r, 1, vocab, c), pos = rand(r, 1, maxPos, c), type = rand(r, 1, 2, c), g = rand(r, 1, c), b = rand(r, 1, c);
        int[] lens = {3, 1, 5};
        Batch batch = new Batch(3).set(lens, 3);
        int[] ids = new int[9], positions = new int[9], types = new int[9];
        for (int i = 0; i < 9; i++) ids[i] = r.nextInt(vocab);
        for (int s = 0, p = 0; s < 3; s++) for (int i = 0; i < lens[s]; i++) positions[p++] = i;
        float[] ref = null;
        for (Backend be : new Backend[]{REF, CPU}) {
            Tensor out = be.allocate(9, c);
            be.embed(out, ids, positions, types, batch, be.weight(word), be.weight(pos), be.weight(type), be.weight(g), be.weight(b), 1e-12f);
            float[] got = rows(be, out, 9);
            if (be == REF) ref = got; else Check.close("embed", got, ref, 1e-5, 1e-4);
        }
    }

    @Test
    void erfAndGelu() {
        // erf against known values (Abramowitz & Stegun table 7.1)
        assertEquals(0.5204998778130465, Erf.erf(0.5), 1e-13);
        assertEquals(0.8427007929497149, Erf.erf(1.0), 1e-13);
        assertEquals(0.9953222650189527, Erf.erf(2.0), 1e-13);
        assertEquals(0.9999779095030014, Erf.erf(3.0), 1e-13);
        assertEquals(0.9999999845827421, Erf.erf(4.0), 1e-13);
        assertEquals(-0.8427007929497149, Erf.erf(-1.0), 1e-13);
        double worst = 0;
        for (int i = -6000; i <= 6000; i++) {
            float x = i / 1000f;
            worst = Math.max(worst, Math.abs(Erf.erfFast(x) - Erf.erf(x)));
        }
        assertTrue(worst < 5e-7, "fast erf max error " + worst); // float evaluation of a 1e-7 approximation
    }

    @Test
    void unknownBackendIsAnError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Backends.create("tpu", 1));
        assertTrue(e.getMessage().contains("unknown backend 'tpu'"), e.getMessage());
        Backends.UnavailableException u = assertThrows(Backends.UnavailableException.class, () -> Backends.create("cuda", 1));
        assertTrue(u.getMessage().contains("cuda"), u.getMessage());
    }
}
