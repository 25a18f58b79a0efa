package rrj.engine.cuda;

import rrj.engine.Lora;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * The host half of the SGMV kernels (lora.cu): turns a {@link Lora} argument into row runs and
 * packs them into the {@code Segs} struct that every LoRA kernel takes by value, so a call
 * needs no upload of segment metadata.
 *
 * <p>Runs follow {@link rrj.engine.ReferenceBackend}'s semantics exactly: rows outside
 * {@code [0, rows)} are dropped, a row covered by several segments belongs to the first, a
 * row covered by none gets no LoRA term. Adjacent rows of the same segment merge into one run,
 * so the common case (disjoint segments) gives one run per segment. Runs that accumulate into
 * the same gradient tensors (a segment split by an earlier overlapping one, or two segments
 * sharing gradients) share a {@code group}: the gradient kernels let only the first run of a
 * group write, summing over the group, so no two blocks write the same element. At most
 * {@link #MAX_SEGS} runs go into one launch; more take further launches.
 *
 * <p>The struct layout mirrors {@code struct Segs} in lora.cu (little-endian, 8-byte aligned);
 * {@code PtxTest} checks {@link #STRUCT_BYTES} against the parameter size in the PTX. No JCuda
 * here: device addresses come in as longs. Reused across calls, no allocation once grown.
 */
final class LoraSegments {
    static final int MAX_SEGS = 32;
    static final int OFF_A = 0, OFF_B = OFF_A + 8 * MAX_SEGS, OFF_GA = OFF_B + 8 * MAX_SEGS, OFF_GB = OFF_GA + 8 * MAX_SEGS;
    static final int OFF_ROW_START = OFF_GB + 8 * MAX_SEGS, OFF_ROW_END = OFF_ROW_START + 4 * MAX_SEGS;
    static final int OFF_RANK = OFF_ROW_END + 4 * MAX_SEGS, OFF_GROUP = OFF_RANK + 4 * MAX_SEGS;
    static final int OFF_SCALE = OFF_GROUP + 4 * MAX_SEGS, OFF_COUNT = OFF_SCALE + 4 * MAX_SEGS;
    /** sizeof(struct Segs): the fields above plus padding to the 8-byte alignment of its pointers. */
    static final int STRUCT_BYTES = (OFF_COUNT + 4 + 7) / 8 * 8;

    /** The struct of the current chunk; the kernels' struct parameter points here. */
    final byte[] struct = new byte[STRUCT_BYTES];
    private final ByteBuffer view = ByteBuffer.wrap(struct).order(ByteOrder.LITTLE_ENDIAN);

    /** Runs of the last {@link #plan}: rows [runStart, runEnd) use segment runSeg. */
    int runs;
    int[] runStart = new int[8], runEnd = new int[8], runSeg = new int[8];
    /** Largest rank among the planned runs' segments (the row stride of the shrink output). */
    int maxRank;
    /** Of the last {@link #pack}ed chunk: most rows in one run, largest rank, whether any run carries gradients. */
    int chunkMaxRows, chunkMaxRank;
    boolean chunkGrads;
    private int[] points = new int[16];

    /** Splits rows {@code [0, rows)} into runs; returns their number (0: no LoRA work). */
    int plan(Lora lora, int rows) {
        runs = 0;
        maxRank = 0;
        if (lora == null || lora.count == 0 || rows <= 0) return 0;
        int n = lora.count;
        if (points.length < 2 * n + 2) points = new int[2 * n + 2];
        int np = 0;
        points[np++] = 0;
        points[np++] = rows;
        for (int s = 0; s < n; s++) {
            points[np++] = clamp(lora.rowStart[s], rows);
            points[np++] = clamp(lora.rowEnd[s], rows);
        }
        Arrays.sort(points, 0, np);
        for (int t = 0; t + 1 < np; t++) {
            int from = points[t], to = points[t + 1];
            if (from >= to) continue;
            int seg = -1; // membership is constant on [from, to): no segment edge falls inside
            for (int s = 0; s < n; s++) if (lora.rowStart[s] <= from && from < lora.rowEnd[s]) { seg = s; break; }
            if (seg < 0) continue;
            if (runs > 0 && runSeg[runs - 1] == seg && runEnd[runs - 1] == from) { runEnd[runs - 1] = to; continue; }
            if (runs == runStart.length) {
                runStart = Arrays.copyOf(runStart, runs * 2);
                runEnd = Arrays.copyOf(runEnd, runs * 2);
                runSeg = Arrays.copyOf(runSeg, runs * 2);
            }
            runStart[runs] = from;
            runEnd[runs] = to;
            runSeg[runs] = seg;
            runs++;
            maxRank = Math.max(maxRank, (int) lora.a[seg].dim(0));
        }
        return runs;
    }

    private static int clamp(int v, int rows) { return Math.max(0, Math.min(rows, v)); }

    /**
     * Packs runs {@code [from, from + n)}, {@code n = min(MAX_SEGS, runs − from)}, into
     * {@link #struct}. Addresses are per segment of {@code lora} (0 for no gradient).
     * Returns n.
     */
    int pack(int from, Lora lora, long[] a, long[] b, long[] ga, long[] gb) {
        int n = Math.min(MAX_SEGS, runs - from);
        Arrays.fill(struct, (byte) 0);
        chunkMaxRows = 0;
        chunkMaxRank = 0;
        chunkGrads = false;
        for (int e = 0; e < n; e++) {
            int s = runSeg[from + e];
            int rank = (int) lora.a[s].dim(0);
            int group = e; // runs that write the same gradient tensors form a group
            if (ga[s] != 0 || gb[s] != 0)
                for (int f = 0; f < e; f++) {
                    int t = runSeg[from + f];
                    if (ga[t] == ga[s] && gb[t] == gb[s]) { group = f; break; }
                }
            view.putLong(OFF_A + 8 * e, a[s]);
            view.putLong(OFF_B + 8 * e, b[s]);
            view.putLong(OFF_GA + 8 * e, ga[s]);
            view.putLong(OFF_GB + 8 * e, gb[s]);
            view.putInt(OFF_ROW_START + 4 * e, runStart[from + e]);
            view.putInt(OFF_ROW_END + 4 * e, runEnd[from + e]);
            view.putInt(OFF_RANK + 4 * e, rank);
            view.putInt(OFF_GROUP + 4 * e, group);
            view.putFloat(OFF_SCALE + 4 * e, lora.scale[s]);
            chunkMaxRows = Math.max(chunkMaxRows, runEnd[from + e] - runStart[from + e]);
            chunkMaxRank = Math.max(chunkMaxRank, rank);
            chunkGrads |= ga[s] != 0 || gb[s] != 0;
        }
        view.putInt(OFF_COUNT, n);
        return n;
    }
}
