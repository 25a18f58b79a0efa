package rrj.engine.cpu;

import org.junit.jupiter.api.Test;
import rrj.engine.Batch;
import rrj.engine.Lora;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The head-major layout of attention's inputs ([heads][N][D]): {@link CpuBackend#linearHeadMajor}
 * writes exactly the values {@link CpuBackend#linear} writes, each at its head-major place (same
 * arithmetic, so the same bits) — on the packed path with few rows (panels split over the
 * threads) and many (row blocks), with K longer than one K block, bias, two LoRA segments, and on
 * the cold path; {@link CpuBackend#attentionHeadMajor} reads them back to the row-layout
 * attention's bits, which match {@link ReferenceBackend}'s attention.
 */
class CpuHeadMajorTest {
    static float[] rand(Random r, float scale, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    /** Row layout [rows][heads·d] → head-major [heads][rows][d]. */
    static float[] headMajor(float[] a, int rows, int heads, int d) {
        float[] o = new float[a.length];
        for (int i = 0; i < rows; i++)
            for (int h = 0; h < heads; h++)
                System.arraycopy(a, i * heads * d + h * d, o, (h * rows + i) * d, d);
        return o;
    }

    static float[] read(CpuBackend be, Tensor t, int n) {
        float[] o = new float[n];
        be.read(t, 0, o, 0, n);
        return o;
    }

    static Tensor put(CpuBackend be, float[] v, int rows, int cols) {
        Tensor t = be.allocate(rows, cols);
        be.write(v, 0, t, 0, v.length);
        return t;
    }

    static int[] bits(float[] v) {
        int[] b = new int[v.length];
        for (int i = 0; i < v.length; i++) b[i] = Float.floatToRawIntBits(v[i]);
        return b;
    }

    @Test
    void linearHeadMajorWritesTheRowLayoutsValuesInHeadOrder() {
        Random r = new Random(7);
        try (CpuBackend be = new CpuBackend(2); CpuBackend cold = new CpuBackend(2)) {
            be.coldCalls = 0;
            cold.coldCalls = Integer.MAX_VALUE;
            // {out, in, head size}: MiniLM's and BERT-base's heads, K past one K block (1,600 > 1,536)
            for (int[] s : new int[][]{{384, 384, 32}, {768, 64, 64}, {96, 1600, 16}, {128, 40, 32}})
                for (int rows : new int[]{1, 5, 6, 16, 17, 40, 203}) {
                    int out = s[0], in = s[1], d = s[2], heads = out / d;
                    float[] x = rand(r, 1, rows * in), w = rand(r, 0.1f, out * in), b = rand(r, 0.5f, out);
                    Tensor wt = Tensor.of(w, out, in), bt = Tensor.of(b, out);
                    Tensor a0 = Tensor.of(rand(r, 0.2f, 4 * in), 4, in), b0 = Tensor.of(rand(r, 0.2f, out * 4), out, 4);
                    Tensor a1 = Tensor.of(rand(r, 0.2f, 8 * in), 8, in), b1 = Tensor.of(rand(r, 0.2f, out * 8), out, 8);
                    for (CpuBackend e : rows < CpuBackend.COLD_ROWS ? new CpuBackend[]{be, cold} : new CpuBackend[]{be}) {
                        for (int variant = 0; variant < 3; variant++) {
                            Tensor bias = variant == 0 ? null : e.weight(bt);
                            Lora lora = null;
                            if (variant == 2) {
                                lora = new Lora(2);
                                lora.add(0, 1, e.weight(a0), e.weight(b0), 4f);
                                lora.add(1, rows, e.weight(a1), e.weight(b1), 0.5f);
                            }
                            Tensor xb = put(e, x, rows, in), y = e.allocate(rows, out), yh = e.allocate(rows, out);
                            Tensor we = e.weight(wt);
                            e.linear(y, xb, rows, we, bias, lora, false);
                            e.linearHeadMajor(yh, xb, rows, we, bias, lora, d);
                            String what = rows + "x" + in + "→" + out + " d=" + d + " variant=" + variant + (e == cold ? " cold" : "");
                            assertArrayEquals(bits(headMajor(read(e, y, rows * out), rows, heads, d)), bits(read(e, yh, rows * out)), what);
                        }
                    }
                }
        }
    }

    @Test
    void fusedProjectionsEqualOneLinearEach() {
        Random r = new Random(13);
        try (CpuBackend be = new CpuBackend(2); CpuBackend cold = new CpuBackend(2)) {
            be.coldCalls = 0;
            cold.coldCalls = Integer.MAX_VALUE;
            int in = 96, d = 32;
            int[] outs = {64, 32, 96}; // three weights of different head counts
            Tensor[] w = new Tensor[3], b = new Tensor[3];
            for (int j = 0; j < 3; j++) { w[j] = Tensor.of(rand(r, 0.1f, outs[j] * in), outs[j], in); b[j] = Tensor.of(rand(r, 0.5f, outs[j]), outs[j]); }
            int total = 64 + 32 + 96;
            for (int rows : new int[]{1, 7, 16, 40, 203})
                for (CpuBackend e : rows < CpuBackend.COLD_ROWS ? new CpuBackend[]{be, cold} : new CpuBackend[]{be})
                    for (int variant = 0; variant < 3; variant++) { // biases: all, none, the middle one missing
                        Tensor[] we = new Tensor[3], bias = new Tensor[3];
                        for (int j = 0; j < 3; j++) { we[j] = e.weight(w[j]); bias[j] = variant == 1 || (variant == 2 && j == 1) ? null : e.weight(b[j]); }
                        Tensor x = put(e, rand(r, 1, rows * in), rows, in);
                        float[] expect = new float[rows * total];
                        int o = 0;
                        for (int j = 0; j < 3; j++) {
                            Tensor yj = e.allocate(rows, outs[j]);
                            e.linearHeadMajor(yj, x, rows, we[j], bias[j], null, d);
                            System.arraycopy(read(e, yj, rows * outs[j]), 0, expect, o, rows * outs[j]);
                            o += rows * outs[j];
                        }
                        for (int again = 0; again < 2; again++) { // the second call reuses the fused panels
                            Tensor y = e.allocate(rows, total);
                            e.linearsHeadMajor(y, x, rows, we, bias, d);
                            assertArrayEquals(bits(expect), bits(read(e, y, rows * total)), rows + " rows, variant " + variant + (e == cold ? " cold" : "") + " call " + again);
                        }
                    }
            Tensor x = be.allocate(2, in);
            Tensor[] mixed = {be.weight(w[0]), be.weight(Tensor.of(new float[32 * 64], 32, 64))};
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> be.linearsHeadMajor(be.allocate(2, 96), x, 2, mixed, new Tensor[2], d));
            assertTrue(e.getMessage().contains("different input widths"), e.getMessage());
            Tensor[] two = {be.weight(w[0]), be.weight(w[1])};
            e = assertThrows(IllegalArgumentException.class, () -> be.linearsHeadMajor(be.allocate(2, 64), x, 2, two, new Tensor[2], d));
            assertTrue(e.getMessage().contains("no room"), e.getMessage());
        }
    }

    @Test
    void attentionHeadMajorMatchesRowLayoutAndReference() {
        Random r = new Random(11);
        ReferenceBackend ref = new ReferenceBackend();
        try (CpuBackend be = new CpuBackend(2)) {
            for (int d : new int[]{32, 64}) {
                int heads = 3, c = heads * d;
                int[] lengths = {1, 17, 128, 5, 33};
                Batch batch = new Batch(lengths.length).set(lengths, lengths.length);
                int n = batch.tokens;
                float[] q = rand(r, 1, n * c), k = rand(r, 1, n * c), v = rand(r, 1, n * c);
                Tensor out = be.allocate(n, c), outH = be.allocate(n, c);
                be.attention(out, put(be, q, n, c), put(be, k, n, c), put(be, v, n, c), batch, heads);
                be.attentionHeadMajor(outH, put(be, headMajor(q, n, heads, d), n, c), put(be, headMajor(k, n, heads, d), n, c),
                        put(be, headMajor(v, n, heads, d), n, c), batch, heads);
                float[] rowLayout = read(be, out, n * c);
                assertArrayEquals(bits(rowLayout), bits(read(be, outH, n * c)), "d=" + d);
                Tensor ro = ref.allocate(n, c);
                ref.attention(ro, Tensor.of(q, n, c), Tensor.of(k, n, c), Tensor.of(v, n, c), batch, heads);
                float[] expect = new float[n * c];
                ref.read(ro, 0, expect, 0, expect.length);
                for (int i = 0; i < expect.length; i++) assertEquals(expect[i], rowLayout[i], 2e-5f, "d=" + d + " element " + i);
            }
        }
    }

    @Test
    void headSizesThePanelsCannotKeepWholeAreRefused() {
        try (CpuBackend be = new CpuBackend(2); CpuBackend dot = new CpuBackend(2, false)) {
            assertTrue(be.supportsHeadMajor(32));
            assertFalse(be.supportsHeadMajor(40), "a 16-column panel would straddle two heads of 40");
            assertFalse(dot.supportsHeadMajor(32), "the dot form reads W in place and has no head-major store");
            Tensor x = be.allocate(2, 80), y = be.allocate(2, 80), w = be.weight(Tensor.of(new float[80 * 80], 80, 80));
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> be.linearHeadMajor(y, x, 2, w, null, null, 40));
            assertTrue(e.getMessage().contains("40"), e.getMessage());
        }
    }
}
