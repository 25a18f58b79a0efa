package rrj.engine;

/**
 * The one tolerance helper: {@code |got − ref| ≤ atol + rtol·|ref|} element-wise. On failure
 * the message names what was compared, the first bad index and the max difference. Used by
 * every parity test and by the bench's parity report.
 */
public final class Check {
    private Check() {}

    /** Max |got − ref| over all elements. */
    public static double maxAbsDiff(float[] got, float[] ref) {
        sameLength(got, ref, "arrays");
        double m = 0;
        for (int i = 0; i < got.length; i++) m = Math.max(m, Math.abs((double) got[i] - ref[i]));
        return m;
    }

    public static void close(String what, float[] got, float[] ref, double atol, double rtol) {
        sameLength(got, ref, what);
        int firstBad = -1;
        double maxDiff = 0;
        int maxAt = 0;
        for (int i = 0; i < got.length; i++) {
            double d = Math.abs((double) got[i] - ref[i]);
            if (!(d <= atol + rtol * Math.abs(ref[i])) && firstBad < 0) firstBad = i;
            if (d > maxDiff || Double.isNaN(d)) { maxDiff = d; maxAt = i; }
        }
        if (firstBad >= 0)
            throw new AssertionError(what + ": first bad index " + firstBad + " got " + got[firstBad] + " ref " + ref[firstBad]
                    + "; max |diff| " + maxDiff + " at " + maxAt + " (atol " + atol + ", rtol " + rtol + ", n " + got.length + ")");
    }

    public static double cosine(float[] a, float[] b) {
        sameLength(a, b, "vectors");
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.length; i++) { ab += (double) a[i] * b[i]; aa += (double) a[i] * a[i]; bb += (double) b[i] * b[i]; }
        if (aa == 0 && bb == 0) return 1;
        return ab / Math.sqrt(aa * bb);
    }

    public static void cosineAtLeast(String what, float[] got, float[] ref, double min) {
        double c = cosine(got, ref);
        if (!(c >= min)) throw new AssertionError(what + ": cosine " + c + " < " + min + " (max |diff| " + maxAbsDiff(got, ref) + ")");
    }

    private static void sameLength(float[] a, float[] b, String what) {
        if (a.length != b.length) throw new AssertionError(what + ": length " + a.length + " vs " + b.length);
    }
}
