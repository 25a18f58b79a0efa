package rrj.engine;

/**
 * The LoRA argument of {@link Backend#linear}: per-expert row segments of one batch, the
 * SGMV layout of Punica (arXiv 2310.18547). Segment {@code s} adds
 * {@code scale[s] · (x[rows]·A[s]ᵀ)·B[s]ᵀ} to rows {@code [rowStart[s], rowEnd[s])} of the
 * output; rows in no segment get the base linear only.
 *
 * <p>{@code A[s]: [r_s, in]}, {@code B[s]: [out, r_s]} in PEFT's layout (lora_A / lora_B weights).
 * Mutable and reused: a forward pass fills it without allocating.
 */
public final class Lora {
    public int count;
    public int[] rowStart;
    public int[] rowEnd;
    public Tensor[] a;
    public Tensor[] b;
    public float[] scale;
    /** Training only: where {@link Backend#linearBackward} accumulates dL/dA[s] and dL/dB[s] (null: no weight gradients). */
    public Tensor[] gradA, gradB;
    /**
     * Training only: LoRA dropout probability on the adapter's input (PEFT's lora_dropout), and
     * the seed of this pass's mask. The mask is a hash of (seed, row, column), so forward and
     * backward, on any backend, see the same mask without storing it.
     */
    public float dropout;
    public long seed;

    public Lora(int capacity) {
        rowStart = new int[capacity];
        rowEnd = new int[capacity];
        a = new Tensor[capacity];
        b = new Tensor[capacity];
        scale = new float[capacity];
    }

    public void clear() { count = 0; dropout = 0; }

    /** The factor that multiplies x[row, col] on its way into A: 0 (dropped) or 1/(1-p). */
    public float dropScale(int row, int col) {
        if (dropout == 0) return 1f;
        long z = seed + row * 0x9E3779B97F4A7C15L + col * 0xC2B2AE3D27D4EB4FL; // splitmix64 of a per-element counter
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z = z ^ (z >>> 31);
        double u = (z >>> 11) * 0x1.0p-53;
        return u < dropout ? 0f : 1f / (1f - dropout);
    }

    public void add(int from, int to, Tensor loraA, Tensor loraB, float s) {
        if (count == rowStart.length) grow();
        rowStart[count] = from;
        rowEnd[count] = to;
        a[count] = loraA;
        b[count] = loraB;
        scale[count] = s;
        count++;
    }

    /** The largest rank among the segments (sizes scratch buffers). */
    public int maxRank() {
        int r = 0;
        for (int s = 0; s < count; s++) r = Math.max(r, (int) a[s].dim(0));
        return r;
    }

    private void grow() {
        int n = rowStart.length * 2 + 1;
        rowStart = java.util.Arrays.copyOf(rowStart, n);
        rowEnd = java.util.Arrays.copyOf(rowEnd, n);
        a = java.util.Arrays.copyOf(a, n);
        b = java.util.Arrays.copyOf(b, n);
        scale = java.util.Arrays.copyOf(scale, n);
        if (gradA != null) { gradA = java.util.Arrays.copyOf(gradA, n); gradB = java.util.Arrays.copyOf(gradB, n); }
    }

    /** Sets the gradient accumulators of segment s (training). */
    public void setGrad(int s, Tensor dA, Tensor dB) {
        if (gradA == null) { gradA = new Tensor[a.length]; gradB = new Tensor[a.length]; }
        gradA[s] = dA;
        gradB[s] = dB;
    }
}
