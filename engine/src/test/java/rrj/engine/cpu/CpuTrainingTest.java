package rrj.engine.cpu;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Check;
import rrj.engine.Lora;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.util.Random;

/**
 * CpuBackend's training ops against ReferenceBackend: linear's backward (dx = dy·W through the
 * packed GEMM over Wᵀ's panels, then the LoRA terms) on shapes with partial row tiles and
 * panels, a K (W's out) longer than one K block, dx overwritten and accumulated into, with and
 * without a LoRA segment; GELU and its backward; add+LayerNorm's backward (vector loops with
 * scalar tails: widths 1, 7, 37, 384, 1,536).
 */
class CpuTrainingTest {
    static final Backend REF = new ReferenceBackend();

    static Tensor rand(Random r, float scale, int rows, int cols) {
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i++) v[i] = (float) (r.nextGaussian() * scale);
        return Tensor.of(v, rows, cols);
    }

    static float[] run(Backend be, Tensor dx0, Tensor dy, Tensor x, Tensor w, int m, boolean accumulate, Tensor a, Tensor b) {
        Tensor dx = be.allocate(dx0.shape());
        float[] init = new float[(int) dx0.numel()];
        for (int i = 0; i < init.length; i++) init[i] = dx0.getFloat(i);
        be.write(init, 0, dx, 0, init.length);
        Tensor dyb = be.allocate(dy.shape()), xb = be.allocate(x.shape());
        float[] t = new float[(int) dy.numel()];
        for (int i = 0; i < t.length; i++) t[i] = dy.getFloat(i);
        be.write(t, 0, dyb, 0, t.length);
        t = new float[(int) x.numel()];
        for (int i = 0; i < t.length; i++) t[i] = x.getFloat(i);
        be.write(t, 0, xb, 0, t.length);
        Lora lora = null;
        if (a != null) {
            lora = new Lora(1);
            lora.add(1, m - 1, be.weight(a), be.weight(b), 2f);
        }
        be.linearBackward(dx, accumulate, dyb, xb, m, be.weight(w), lora);
        float[] out = new float[init.length];
        be.read(dx, 0, out, 0, out.length);
        return out;
    }

    static Tensor on(Backend be, Tensor host) {
        Tensor t = be.allocate(host.shape());
        float[] v = new float[(int) host.numel()];
        for (int i = 0; i < v.length; i++) v[i] = host.getFloat(i);
        be.write(v, 0, t, 0, v.length);
        return t;
    }

    static float[] host(Backend be, Tensor t) {
        float[] v = new float[(int) t.numel()];
        be.read(t, 0, v, 0, v.length);
        return v;
    }

    static void close(String what, float[] got, float[] ref, double rtol) {
        double scale = 0;
        for (float v : ref) scale = Math.max(scale, Math.abs(v));
        Check.close(what, got, ref, 1e-5 * Math.max(1, scale), rtol);
    }

    @Test
    void geluAndLayerNormBackwardMatchReference() {
        Random r = new Random(32);
        try (CpuBackend cpu = new CpuBackend(2)) {
            for (int c : new int[]{1, 7, 37, 384, 1536}) {
                int rows = 5;
                Tensor x = rand(r, 3, rows, c), dy = rand(r, 1, rows, c), res = rand(r, 1, rows, c), g = rand(r, 1, 1, c);
                float[][] out = new float[2][], back = new float[2][], ln = new float[2][];
                Backend[] bes = {cpu, REF};
                for (int k = 0; k < 2; k++) {
                    Backend be = bes[k];
                    Tensor o = be.allocate(rows, c);
                    be.gelu(o, on(be, x), rows);
                    out[k] = host(be, o);
                    Tensor dx = be.allocate(rows, c);
                    be.geluBackward(dx, on(be, dy), on(be, x), rows);
                    back[k] = host(be, dx);
                    Tensor ds = be.allocate(rows, c);
                    be.addLayerNormBackward(ds, on(be, dy), on(be, x), on(be, res), rows, be.weight(g), 1e-12f);
                    ln[k] = host(be, ds);
                }
                close("gelu c=" + c, out[0], out[1], 1e-5);
                close("geluBackward c=" + c, back[0], back[1], 1e-5);
                close("addLayerNormBackward c=" + c, ln[0], ln[1], 1e-4);
            }
        }
    }

    @Test
    void linearBackwardMatchesReference() {
        Random r = new Random(31);
        // {rows, in, out}: out is the GEMM's K (1,700 > one K block of 1,536); in is its output width
        int[][] shapes = {{1, 16, 16}, {5, 29, 41}, {37, 384, 1536}, {70, 768, 300}, {13, 40, 1700}, {100, 17, 3}};
        try (CpuBackend cpu = new CpuBackend(2)) {
            for (int[] s : shapes) {
                int m = s[0], in = s[1], out = s[2];
                Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), dy = rand(r, 1, m, out), dx0 = rand(r, 1, m, in);
                Tensor a = rand(r, 0.3f, 4, in), b = rand(r, 0.3f, out, 4);
                for (boolean accumulate : new boolean[]{false, true})
                    for (boolean withLora : new boolean[]{false, true}) {
                        if (withLora && m < 3) continue;
                        String what = "linearBackward dx " + m + "x" + in + "x" + out + " accumulate=" + accumulate + " lora=" + withLora;
                        float[] ref = run(REF, dx0, dy, x, w, m, accumulate, withLora ? a : null, b);
                        float[] got = run(cpu, dx0, dy, x, w, m, accumulate, withLora ? a : null, b);
                        double scale = 0;
                        for (float v : ref) scale = Math.max(scale, Math.abs(v));
                        Check.close(what, got, ref, 1e-5 * Math.max(1, scale), 1e-4);
                    }
            }
        }
    }
}
