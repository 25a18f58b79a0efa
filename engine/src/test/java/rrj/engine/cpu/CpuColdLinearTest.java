package rrj.engine.cpu;

import org.junit.jupiter.api.Test;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * CpuBackend's cold linear (fewer than 18 rows, weight not packed yet: scalar loops over W in
 * place) gives the packed GEMM's bits exactly, so that the first calls of a process and the
 * later ones agree to the last bit: full and edge tiles, widths with partial panels and scalar
 * tails, a K longer than one K block, bias, GELU, and two LoRA segments of different ranks.
 */
class CpuColdLinearTest {
    static Tensor rand(Random r, float scale, int rows, int cols) {
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i++) v[i] = (float) (r.nextGaussian() * scale);
        return Tensor.of(v, rows, cols);
    }

    static int[] bits(CpuBackend be, int rows, Tensor x, Tensor w, Tensor bias, Tensor[] ab, boolean gelu) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        Tensor xb = be.allocate(rows, in), y = be.allocate(rows, out);
        float[] t = new float[rows * in];
        for (int i = 0; i < t.length; i++) t[i] = x.getFloat(i);
        be.write(t, 0, xb, 0, t.length);
        Lora lora = null;
        if (ab != null) {
            lora = new Lora(2);
            lora.add(0, 1, be.weight(ab[0]), be.weight(ab[1]), 4f);
            lora.add(1, rows, be.weight(ab[2]), be.weight(ab[3]), 0.5f);
        }
        be.linear(y, xb, rows, be.weight(w), bias == null ? null : be.weight(bias), lora, gelu);
        float[] o = new float[rows * out];
        be.read(y, 0, o, 0, o.length);
        int[] b = new int[o.length];
        for (int i = 0; i < b.length; i++) b[i] = Float.floatToRawIntBits(o[i]);
        return b;
    }

    @Test
    void coldPathHasThePackedPathsBits() {
        Random r = new Random(41);
        int checked = 0;
        try (CpuBackend cold = new CpuBackend(2); CpuBackend packed = new CpuBackend(2)) {
            packed.coldCalls = 0;
            cold.coldCalls = Integer.MAX_VALUE;
            for (int[] s : new int[][]{{16, 7}, {40, 384}, {37, 29}, {384, 1536}, {1536, 384}, {21, 1600}})
                for (int rows = 1; rows < CpuBackend.COLD_ROWS; rows++) {
                    int out = s[0], in = s[1];
                    Tensor x = rand(r, 1, rows, in), w = rand(r, 0.1f, out, in), bias = rand(r, 0.5f, 1, out);
                    Tensor[] ab = {rand(r, 0.2f, 4, in), rand(r, 0.2f, out, 4), rand(r, 0.2f, 8, in), rand(r, 0.2f, out, 8)};
                    for (int variant = 0; variant < 4; variant++) {
                        boolean withBias = (variant & 1) != 0, withGelu = (variant & 2) != 0;
                        Tensor[] lora = variant == 3 ? ab : null;
                        String what = rows + "x" + in + "→" + out + " bias=" + withBias + " gelu=" + withGelu + " lora=" + (lora != null);
                        assertArrayEquals(bits(packed, rows, x, w, withBias ? bias : null, lora, withGelu),
                                bits(cold, rows, x, w, withBias ? bias : null, lora, withGelu), what);
                        checked++;
                    }
                }
            assertEquals(Integer.MAX_VALUE - checked, cold.coldCalls, "every call took the cold path");
        }
    }
}
