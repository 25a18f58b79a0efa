package rrj.engine.cpu;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;
import rrj.engine.Erf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The vector math the kernels use instead of library calls, against java.lang.Math / the reference erf. */
class CpuMathTest {
    static final int L = CpuBackend.L;

    @Test
    void expMatchesMathExpOnSoftmaxArguments() {
        double worst = 0;
        float[] in = new float[L], out = new float[L];
        for (int i = 0; i <= 200_000; i += L) {
            for (int j = 0; j < L; j++) in[j] = -(i + j) / 2000f; // 0 … −100: softmax's s − max
            CpuBackend.exp(FloatVector.fromArray(CpuBackend.S, in, 0)).intoArray(out, 0);
            for (int j = 0; j < L; j++) {
                double ref = Math.exp(in[j]);
                double err = Math.abs(out[j] - ref) / Math.max(ref, Float.MIN_NORMAL);
                if (in[j] >= -20.79f) worst = Math.max(worst, err);
                else assertEquals(Math.exp(-20.79f), out[j], 1e-16, "exp(" + in[j] + ") (clamped at -20.79)");
            }
        }
        assertTrue(worst < 3e-7, "exp max relative error " + worst);
        java.util.Arrays.fill(in, Float.NEGATIVE_INFINITY);
        CpuBackend.exp(FloatVector.fromArray(CpuBackend.S, in, 0)).intoArray(out, 0);
        for (float v : out) assertEquals(Math.exp(-20.79f), v, 1e-16, "exp(-inf) (clamped at -20.79)");
        java.util.Arrays.fill(in, 0f);
        CpuBackend.exp(FloatVector.fromArray(CpuBackend.S, in, 0)).intoArray(out, 0);
        for (float v : out) assertEquals(1f, v, 0f);
    }

    @Test
    void vectorGeluMatchesExactGelu() {
        double worst = 0;
        float[] in = new float[L], out = new float[L];
        for (int i = -80_000; i <= 80_000; i += L) {
            for (int j = 0; j < L; j++) in[j] = (i + j) / 10_000f;
            CpuBackend.gelu(FloatVector.fromArray(CpuBackend.S, in, 0)).intoArray(out, 0);
            for (int j = 0; j < L; j++) worst = Math.max(worst, Math.abs(out[j] - Erf.gelu(in[j])) / (1 + Math.abs(Erf.gelu(in[j]))));
        }
        assertTrue(worst < 1e-6, "vector gelu max error " + worst);
    }
}
