package rrj.engine;

/**
 * A packed batch of variable-length sequences: sequence {@code b} occupies token rows
 * {@code [start[b], start[b+1])} of every activation matrix. There is no padding anywhere;
 * attention runs per sequence, which is exactly BERT's bidirectional attention with a padding
 * mask (padded keys get weight exp(-inf) = 0 there, here they do not exist).
 *
 * <p>Mutable and reused across forward passes so that a batch costs no allocation.
 */
public final class Batch {
    /** Number of sequences B. */
    public int size;
    /** Total token rows N = start[size]. */
    public int tokens;
    /** Row offsets, length ≥ B + 1. */
    public int[] start;
    /** Longest sequence in the batch. */
    public int maxLen;

    public Batch(int capacity) { start = new int[capacity + 1]; }

    /** Sets the layout from per-sequence lengths (each ≥ 1). */
    public Batch set(int[] lengths, int count) {
        if (start.length < count + 1) start = new int[count + 1];
        size = count;
        int n = 0, m = 0;
        start[0] = 0;
        for (int b = 0; b < count; b++) {
            if (lengths[b] < 1) throw new IllegalArgumentException("sequence " + b + " has length " + lengths[b]);
            n += lengths[b];
            m = Math.max(m, lengths[b]);
            start[b + 1] = n;
        }
        tokens = n;
        maxLen = m;
        return this;
    }

    public int length(int b) { return start[b + 1] - start[b]; }
}
