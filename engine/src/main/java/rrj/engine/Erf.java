package rrj.engine;

/**
 * The error function, for BERT's exact GELU: {@code gelu(x) = x · ½ · (1 + erf(x/√2))}
 * (HF "gelu", not the tanh approximation "gelu_new").
 *
 * <p>{@link #erf(double)} is the reference: Maclaurin series for |x| ≤ 3 and the Laplace
 * continued fraction of erfc beyond, accurate to ~1e-13 absolute. {@link #erfFast(float)} is
 * the rational approximation Eigen uses for float (max error ~1e-7), the form the vector
 * kernels evaluate.
 */
public final class Erf {
    private Erf() {}

    private static final double TWO_OVER_SQRT_PI = 2.0 / Math.sqrt(Math.PI);

    public static double erf(double x) {
        if (x == 0) return x;
        if (Double.isNaN(x)) return x;
        double ax = Math.abs(x);
        if (ax <= 3) {
            double sum = 0, t = x;
            for (int n = 0; ; ) {
                double term = t / (2 * n + 1);
                sum += term;
                if (Math.abs(term) <= 1e-17 * Math.abs(sum)) break;
                n++;
                t *= -x * x / n;
            }
            return TWO_OVER_SQRT_PI * sum;
        }
        if (ax > 10) return Math.copySign(1.0, x);
        double f = ax;
        for (int k = 60; k > 0; k--) f = ax + (k / 2.0) / f;
        double erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
        return Math.copySign(1 - erfc, x);
    }

    // Eigen's generic_fast_erf_float coefficients: erf(x) ≈ x·P(x²)/Q(x²) on [-4, 4].
    public static final float A1 = -1.60960333262415e-02f, A3 = -2.95459980854025e-03f,
            A5 = -7.34990630326855e-04f, A7 = -5.69250639462346e-05f, A9 = -2.10102402082508e-06f,
            A11 = 2.77068142495902e-08f, A13 = -2.72614225801306e-10f;
    public static final float B0 = -1.42647390514189e-02f, B2 = -7.37332916720468e-03f,
            B4 = -1.68282697438203e-03f, B6 = -2.13374055278905e-04f, B8 = -1.45660718464996e-05f;

    public static float erfFast(float x) {
        x = Math.max(-4f, Math.min(4f, x));
        float x2 = x * x;
        float p = A13;
        p = p * x2 + A11;
        p = p * x2 + A9;
        p = p * x2 + A7;
        p = p * x2 + A5;
        p = p * x2 + A3;
        p = p * x2 + A1;
        p = p * x;
        float q = B8;
        q = q * x2 + B6;
        q = q * x2 + B4;
        q = q * x2 + B2;
        q = q * x2 + B0;
        return p / q;
    }

    /** Exact-erf GELU in double. */
    public static double gelu(double x) { return 0.5 * x * (1 + erf(x / Math.sqrt(2))); }
}
