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
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.util.Arrays;
import java.util.Random;

import static rrj.engine.cuda.GpuFixtures.all;
import static rrj.engine.cuda.GpuFixtures.copyTo;
import static rrj.engine.cuda.GpuFixtures.rand;
import static rrj.engine.cuda.GpuFixtures.rows;

/**
 * The training ops of CudaBackend against CpuBackend's (CpuTraining) and ReferenceBackend's:
 * GELU and its backward, linear's backward with LoRA segments carrying gradients and dropout,
 * attention's backward on both batch layouts, LayerNorm, pooling and L2 backward. Tolerance
 * 1e-3 relative (plus a small absolute floor for values near 0). Needs a GPU ({@code -Pgpu}).
 */
@Tag("gpu")
class CudaTrainingParityTest {
    static Backend cuda, cpu;
    static final Backend REF = new ReferenceBackend();
    static final double ATOL = 1e-5, RTOL = 1e-3;

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

    /** CUDA against CPU and against the reference: {@code op} returns the values to compare. */
    interface Op { float[] run(Backend be); }

    static void agree(String what, Op op) { agree(what, op, true); }

    static void agree(String what, Op op, boolean withCpu) {
        float[] got = op.run(cuda), ref = op.run(REF);
        if (withCpu) Check.close(what + " (cuda vs cpu)", got, op.run(cpu), ATOL * scale(ref), RTOL);
        Check.close(what + " (cuda vs ref)", got, ref, ATOL * scale(ref), RTOL);
    }

    static double scale(float[] v) {
        double m = 0;
        for (float x : v) m = Math.max(m, Math.abs(x));
        return Math.max(1, m);
    }

    @Test
    void geluAndItsBackward() {
        Random r = new Random(21);
        for (int c : new int[]{1, 37, 3072}) {
            int rows = 11;
            Tensor x = rand(r, 3, rows, c), dy = rand(r, 1, rows, c);
            agree("gelu c=" + c, be -> { Tensor o = be.allocate(rows, c); be.gelu(o, copyTo(be, x), rows); return all(be, o); });
            agree("geluBackward c=" + c, be -> {
                Tensor dx = be.allocate(rows, c);
                be.geluBackward(dx, copyTo(be, dy), copyTo(be, x), rows);
                return all(be, dx);
            });
            agree("geluBackward in place c=" + c, be -> { // Bert.backward passes dx == dy
                Tensor d = copyTo(be, dy);
                be.geluBackward(d, d, copyTo(be, x), rows);
                return all(be, d);
            });
        }
    }

    /** Segments with gradient accumulators (pre-filled, to check accumulation) on {@code be}. */
    static Lora withGrads(Backend be, Tensor[] a, Tensor[] b, int[][] rowsOf, float[] scale, Tensor[] ga0, Tensor[] gb0, float dropout) {
        Lora l = new Lora(a.length);
        for (int s = 0; s < a.length; s++) {
            l.add(rowsOf[s][0], rowsOf[s][1], be.weight(a[s]), be.weight(b[s]), scale[s]);
            l.setGrad(s, copyTo(be, ga0[s]), copyTo(be, gb0[s]));
        }
        l.dropout = dropout;
        l.seed = 12345;
        return l;
    }

    @Test
    void linearBackwardWithLoraGradientsAndDropout() {
        Random r = new Random(22);
        for (int[] shape : new int[][]{{37, 29, 41}, {70, 768, 300}}) {
            int m = shape[0], in = shape[1], out = shape[2];
            Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), dy = rand(r, 1, m, out), dx0 = rand(r, 1, m, in);
            int[] ranks = {1, 8, 4};
            float[] scale = {4f, 2f, 0.5f};
            Tensor[] a = new Tensor[3], b = new Tensor[3], ga = new Tensor[3], gb = new Tensor[3];
            for (int s = 0; s < 3; s++) {
                a[s] = rand(r, 0.3f, ranks[s], in);
                b[s] = rand(r, 0.3f, out, ranks[s]);
                ga[s] = rand(r, 0.01f, ranks[s], in);
                gb[s] = rand(r, 0.01f, out, ranks[s]);
            }
            // Disjoint segments with a gap (row 1-2 have none), compared with CpuTraining and the reference.
            // Overlapping segments (rows 20-39 belong to the second, the first that holds them) only with the
            // reference: CpuTraining's LoRA backward applies every segment to its rows, the reference (the spec,
            // and CudaBackend) only the first.
            for (int[][] spans : new int[][][]{{{0, 1}, {3, 20}, {20, m}}, {{0, 1}, {3, 40}, {20, m}}})
            for (float dropout : new float[]{0f, 0.1f})
                for (boolean accumulate : new boolean[]{false, true}) {
                    boolean overlap = spans[1][1] > spans[2][0];
                    String what = "linearBackward " + m + "x" + in + "x" + out + (overlap ? " overlapping" : "") + " dropout=" + dropout
                            + " accumulate=" + accumulate;
                    for (int part = 0; part < 3; part++) {
                        int p = part;
                        agree(what + (p == 0 ? " dx" : p == 1 ? " dA" : " dB"), be -> {
                            Lora l = withGrads(be, a, b, spans, scale, ga, gb, dropout);
                            Tensor dx = copyTo(be, dx0);
                            be.linearBackward(dx, accumulate, copyTo(be, dy), copyTo(be, x), m, be.weight(w), l);
                            if (p == 0) return all(be, dx);
                            float[] cat = new float[0];
                            for (int s = 0; s < 3; s++) {
                                float[] g = all(be, p == 1 ? l.gradA[s] : l.gradB[s]);
                                cat = Arrays.copyOf(cat, cat.length + g.length);
                                System.arraycopy(g, 0, cat, cat.length - g.length, g.length);
                            }
                            return cat;
                        }, !overlap);
                    }
                    // the training forward sees the same dropout mask
                    agree("linear forward " + m + "x" + in + "x" + out + " dropout=" + dropout, be -> {
                        Tensor y = be.allocate(m, out);
                        be.linear(y, copyTo(be, x), m, be.weight(w), null, withGrads(be, a, b, spans, scale, ga, gb, dropout), false);
                        return rows(be, y, m);
                    });
                }
        }
    }

    @Test
    void attentionBackwardOnBothLayouts() {
        Random r = new Random(23);
        int[][] layouts = {{1}, {5, 5, 5}, {3, 1, 17, 2}, {64, 9}, {33}};
        for (int[] hd : new int[][]{{2, 7}, {12, 32}, {3, 64}}) {
            int heads = hd[0], c = heads * hd[1];
            for (int[] lens : layouts) {
                Batch batch = new Batch(lens.length).set(lens, lens.length);
                int n = batch.tokens;
                Tensor q = rand(r, 1, n, c), k = rand(r, 1, n, c), v = rand(r, 1, n, c), dout = rand(r, 1, n, c);
                for (int part = 0; part < 3; part++) {
                    int p = part;
                    agree("attentionBackward heads=" + heads + " d=" + hd[1] + " lens=" + Arrays.toString(lens) + " d" + "qkv".charAt(p), be -> {
                        Tensor dq = be.allocate(n, c), dk = be.allocate(n, c), dv = be.allocate(n, c);
                        be.attentionBackward(dq, dk, dv, copyTo(be, dout), copyTo(be, q), copyTo(be, k), copyTo(be, v), batch, heads);
                        return all(be, p == 0 ? dq : p == 1 ? dk : dv);
                    });
                }
            }
        }
    }

    @Test
    void layerNormPoolAndL2Backward() {
        Random r = new Random(24);
        for (int c : new int[]{1, 37, 768}) {
            int[] lens = {1, 4, 2, 9};
            Batch batch = new Batch(4).set(lens, 4);
            int n = batch.tokens;
            Tensor x = rand(r, 2, n, c), res = rand(r, 2, n, c), dy = rand(r, 1, n, c), g = rand(r, 1, c), dp = rand(r, 1, 4, c);
            agree("addLayerNormBackward c=" + c, be -> {
                Tensor ds = be.allocate(n, c);
                be.addLayerNormBackward(ds, copyTo(be, dy), copyTo(be, x), copyTo(be, res), n, be.weight(g), 1e-12f);
                return all(be, ds);
            });
            for (Backend.Pooling mode : Backend.Pooling.values())
                agree("poolBackward " + mode + " c=" + c, be -> {
                    Tensor dh = copyTo(be, dy); // every row is overwritten
                    be.poolBackward(dh, copyTo(be, dp), batch, mode);
                    return all(be, dh);
                });
            Tensor z = rand(r, 1, 4, c);
            for (int j = 0; j < c; j++) z.setFloat(j, 0f); // the clamped zero row
            agree("l2NormalizeBackward c=" + c, be -> {
                Tensor dx = be.allocate(4, c);
                be.l2NormalizeBackward(dx, copyTo(be, dp), copyTo(be, z), 4);
                return all(be, dx);
            });
            agree("add and copy c=" + c, be -> {
                Tensor a = copyTo(be, x), b2 = be.allocate(n, c);
                be.copy(b2, a, (long) n * c);
                be.add(a, b2, (long) n * c - 1);
                return all(be, a);
            });
        }
    }
}
