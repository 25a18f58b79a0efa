package rrj.engine.cuda;

import org.junit.jupiter.api.Test;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The host half of SGMV: row runs with ReferenceBackend's first-segment-wins rule, and the struct the kernels read. */
class LoraSegmentsTest {

    static Lora lora(Random r, int count, int rows) {
        Lora l = new Lora(1);
        for (int s = 0; s < count; s++) {
            int a = r.nextInt(rows + 6) - 3, b = a + r.nextInt(rows / 2 + 4) - 1; // may be empty, negative, past the end
            int rank = 1 + r.nextInt(9);
            l.add(a, b, Tensor.allocate(null, rank, 3), Tensor.allocate(null, 2, rank), 0.5f + s);
        }
        return l;
    }

    /** ReferenceBackend's rule, written out again: the first segment holding row i, or -1. */
    static int segmentOf(Lora l, int i) {
        for (int s = 0; s < l.count; s++) if (i >= l.rowStart[s] && i < l.rowEnd[s]) return s;
        return -1;
    }

    @Test
    void runsGiveEveryRowTheFirstSegmentThatHoldsIt() {
        Random r = new Random(11);
        LoraSegments ls = new LoraSegments();
        for (int trial = 0; trial < 2000; trial++) {
            int rows = 1 + r.nextInt(40);
            Lora l = lora(r, r.nextInt(7), rows);
            int runs = ls.plan(l, rows);
            int[] got = new int[rows];
            java.util.Arrays.fill(got, -1);
            int maxRank = 0;
            for (int k = 0; k < runs; k++) {
                assertTrue(ls.runStart[k] < ls.runEnd[k] && ls.runStart[k] >= 0 && ls.runEnd[k] <= rows, "run " + k + " in trial " + trial);
                if (k > 0) {
                    assertTrue(ls.runStart[k] >= ls.runEnd[k - 1], "runs sorted and disjoint");
                    assertTrue(ls.runSeg[k] != ls.runSeg[k - 1] || ls.runStart[k] != ls.runEnd[k - 1], "adjacent runs of one segment merge");
                }
                for (int i = ls.runStart[k]; i < ls.runEnd[k]; i++) got[i] = ls.runSeg[k];
                maxRank = Math.max(maxRank, (int) l.a[ls.runSeg[k]].dim(0));
            }
            for (int i = 0; i < rows; i++) assertEquals(segmentOf(l, i), got[i], "row " + i + " of trial " + trial);
            assertEquals(maxRank, ls.maxRank, "max rank of the used segments");
        }
        assertEquals(0, ls.plan(null, 5));
        assertEquals(0, ls.plan(new Lora(1), 5));
    }

    @Test
    void structHoldsTheRunsAsLoraCuReadsThem() {
        Lora l = new Lora(1);
        l.add(0, 10, Tensor.allocate(null, 4, 3), Tensor.allocate(null, 2, 4), 2f);
        l.add(3, 5, Tensor.allocate(null, 8, 3), Tensor.allocate(null, 2, 8), 0.25f); // splits segment 0 into two runs
        LoraSegments ls = new LoraSegments();
        assertEquals(1, ls.plan(l, 10), "segment 1 lies inside segment 0, which wins: one run");
        l.rowStart[0] = 2;                        // segment 0: [2, 10)
        l.rowStart[1] = 0;
        l.rowEnd[1] = 4;                          // segment 1: [0, 4); rows 2-3 go to segment 0, the first
        assertEquals(2, ls.plan(l, 10));          // [0, 2) → segment 1, [2, 10) → segment 0
        long[] a = {0x1000, 0x2000}, b = {0x3000, 0x4000}, ga = {0x5000, 0}, gb = {0x6000, 0};
        assertEquals(2, ls.pack(0, l, a, b, ga, gb));
        ByteBuffer v = ByteBuffer.wrap(ls.struct).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(2, v.getInt(LoraSegments.OFF_COUNT));
        assertEquals(0x2000, v.getLong(LoraSegments.OFF_A));          // run 0 is segment 1
        assertEquals(0x1000, v.getLong(LoraSegments.OFF_A + 8));
        assertEquals(0x4000, v.getLong(LoraSegments.OFF_B));
        assertEquals(0, v.getLong(LoraSegments.OFF_GA));
        assertEquals(0x5000, v.getLong(LoraSegments.OFF_GA + 8));
        assertEquals(0x6000, v.getLong(LoraSegments.OFF_GB + 8));
        assertEquals(0, v.getInt(LoraSegments.OFF_ROW_START));
        assertEquals(2, v.getInt(LoraSegments.OFF_ROW_END));
        assertEquals(2, v.getInt(LoraSegments.OFF_ROW_START + 4));
        assertEquals(10, v.getInt(LoraSegments.OFF_ROW_END + 4));
        assertEquals(8, v.getInt(LoraSegments.OFF_RANK));
        assertEquals(4, v.getInt(LoraSegments.OFF_RANK + 4));
        assertEquals(0.25f, v.getFloat(LoraSegments.OFF_SCALE));
        assertEquals(2f, v.getFloat(LoraSegments.OFF_SCALE + 4));
        assertEquals(0, v.getInt(LoraSegments.OFF_GROUP));
        assertEquals(1, v.getInt(LoraSegments.OFF_GROUP + 4));
        assertEquals(8, ls.chunkMaxRows);
        assertEquals(8, ls.chunkMaxRank);
        assertTrue(ls.chunkGrads);
    }

    @Test
    void runsSharingGradientsShareAGroupAndLongPlansGoInChunks() {
        Lora l = new Lora(1);
        Tensor a = Tensor.allocate(null, 2, 3), b = Tensor.allocate(null, 2, 2);
        for (int s = 0; s < 40; s++) l.add(2 * s, 2 * s + 1, a, b, 1f); // 40 runs with gaps between them
        LoraSegments ls = new LoraSegments();
        assertEquals(40, ls.plan(l, 100));
        long[] addr = new long[40], ga = new long[40], gb = new long[40];
        for (int s = 0; s < 40; s++) { addr[s] = 0x100 * (s + 1); ga[s] = s % 2 == 0 ? 0xA000 : 0xB000; gb[s] = s % 2 == 0 ? 0xC000 : 0xD000; }
        assertEquals(LoraSegments.MAX_SEGS, ls.pack(0, l, addr, addr, ga, gb));
        ByteBuffer v = ByteBuffer.wrap(ls.struct).order(ByteOrder.LITTLE_ENDIAN);
        for (int e = 0; e < LoraSegments.MAX_SEGS; e++)
            assertEquals(e % 2, v.getInt(LoraSegments.OFF_GROUP + 4 * e), "runs writing the same dA/dB share the group of the first");
        assertEquals(8, ls.pack(LoraSegments.MAX_SEGS, l, addr, addr, ga, gb));
        assertEquals(8, v.getInt(LoraSegments.OFF_COUNT));
        assertEquals(2 * LoraSegments.MAX_SEGS, v.getInt(LoraSegments.OFF_ROW_START));
        assertEquals(0, v.getLong(LoraSegments.OFF_A + 8 * 8), "entries past the count are cleared");
        java.util.Arrays.fill(ga, 0);
        java.util.Arrays.fill(gb, 0);
        ls.pack(0, l, addr, addr, ga, gb);
        for (int e = 0; e < LoraSegments.MAX_SEGS; e++) assertEquals(e, v.getInt(LoraSegments.OFF_GROUP + 4 * e), "no gradients: own group");
    }
}
