package rrj.engine.cuda;

import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Tensor;

import java.util.Random;

/** Helpers of the @Tag("gpu") tests: host tensors, copies onto a backend, reading rows back. */
final class GpuFixtures {
    private GpuFixtures() {}

    /**
     * The CUDA backend. Deliberately no fallback and no assumption: on a machine without a GPU
     * this throws, and every test of the class fails (never skips).
     */
    static Backend cuda() {
        Backend b = Backends.create("cuda", 1);
        System.out.println("[gpu tests] " + b.describe());
        return b;
    }

    static Tensor rand(Random r, float scale, long... shape) {
        Tensor t = Tensor.allocate(null, shape);
        for (long i = 0; i < t.numel(); i++) t.setFloat(i, (float) (r.nextGaussian() * scale));
        return t;
    }

    /** An activation of {@code b} holding {@code t}'s values. */
    static Tensor copyTo(Backend b, Tensor t) {
        Tensor x = b.allocate(t.shape());
        b.write(t.toFloatArray(), 0, x, 0, (int) t.numel());
        return x;
    }

    /** The first {@code rows} rows of an activation. */
    static float[] rows(Backend b, Tensor t, int rows) {
        int c = (int) (t.numel() / t.dim(0));
        float[] out = new float[rows * c];
        b.read(t, 0, out, 0, rows * c);
        return out;
    }

    static float[] all(Backend b, Tensor t) { return rows(b, t, (int) t.dim(0)); }
}
