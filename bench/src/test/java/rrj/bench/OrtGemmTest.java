package rrj.bench;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The kernel-level ORT baseline: its pinned output holds x·W + b after every run, not a stale or empty buffer. */
class OrtGemmTest {
    @Test
    void writesMatMulPlusBiasIntoThePinnedOutput() throws Exception {
        int m = 7, k = 19, n = 5;
        SplittableRandom r = new SplittableRandom(3);
        float[] x = new float[m * k], wKn = new float[k * n], b = new float[n];
        for (int i = 0; i < x.length; i++) x[i] = (float) (2 * r.nextDouble() - 1);
        for (int i = 0; i < wKn.length; i++) wKn[i] = (float) (2 * r.nextDouble() - 1);
        for (int i = 0; i < b.length; i++) b[i] = (float) (2 * r.nextDouble() - 1);
        try (OrtGemm g = new OrtGemm(m, k, n, 1, x, wKn, b)) {
            for (int run = 0; run < 2; run++) {
                float first = g.run();
                float[] y = g.output();
                for (int i = 0; i < m; i++)
                    for (int o = 0; o < n; o++) {
                        double want = b[o];
                        for (int j = 0; j < k; j++) want += (double) x[i * k + j] * wKn[j * n + o];
                        assertEquals(want, y[i * n + o], 1e-5, "y[" + i + ", " + o + "] after run " + run);
                    }
                assertEquals(y[0], first, "run() returns y[0, 0]");
            }
        }
    }
}
