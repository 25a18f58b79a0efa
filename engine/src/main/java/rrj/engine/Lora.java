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

    public Lora(int capacity) {
        rowStart = new int[capacity];
        rowEnd = new int[capacity];
        a = new Tensor[capacity];
        b = new Tensor[capacity];
        scale = new float[capacity];
    }

    public void clear() { count = 0; }

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
    }
}
