package rrj.engine.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.DType;
import rrj.engine.Erf;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * The CPU backend: Vector API kernels on a fixed thread pool ({@link Parallel}).
 *
 * <p><b>GEMM</b> ({@link #linear}, {@code y[i,o] = Σ_k x[i,k]·W[o,k]}) runs in the classic
 * broadcast form (Goto/BLIS): W is repacked once, on its first use, into panels of
 * {@code NR = 2·L} output columns laid out k-major ({@link Packed}: panel p holds
 * {@code W[p·NR + j, k]} at {@code (p·K + k)·NR + j}); x is repacked per call into tiles of
 * {@code MR = 6} rows, also k-major. The 6×NR micro-kernel keeps 12 vector accumulators, and per
 * k does 2 contiguous vector loads of W, 6 broadcasts of x and 12 FMAs — no lane reductions.
 * The threads split (row block × panel group) chunks; a row block is sized so its x tiles stay
 * in L2 while the W panels stream past. The epilogue (bias, LoRA expand, GELU) runs on each
 * 6×NR tile right after the micro-kernel stored it, while it is in L1: y is written to memory
 * finished, once. The memory-mapped [out, in] weight stays the source of truth; the dot form
 * that reads it in place (3×4 tile over W rows, lanes reduced per output) is kept as the
 * fallback ({@code new CpuBackend(threads, false)}) and is tested like the fast path.
 *
 * <p><b>Attention</b> per (sequence, head): Kᵀ of the head is copied to a contiguous scratch,
 * scores for 4 query rows at a time are small GEMMs (broadcast q, vectors over keys), softmax
 * uses the vector EXP, and P·V is another small GEMM over the head's D columns.
 *
 * <p>Not thread-safe: one op at a time per backend instance (the kernels reuse their task
 * objects and scratch); callers that serve many threads batch requests into one forward pass.
 * Base weights are assumed frozen once used (the packed copy is not refreshed if the mapped
 * weight changes); LoRA A/B are read in place on every call, so they may change.
 *
 * <p>Not here: reduced-precision weights, fused QKV (Bert.forward issues Q, K, V as three
 * linears so that LoRA targets stay separate).
 */
public final class CpuBackend implements Backend {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    static final int NB = 64;     // dot form: W rows per work block
    static final int MR = 6;      // broadcast form: rows per micro-tile
    static final int NR = 2 * L;  // broadcast form: output columns per panel (16 with AVX2)
    static final int X_BLOCK_BYTES = 160 * 1024; // x tiles of one row block (L2 budget; W panels stream past)

    private final Parallel pool;
    private final CpuTraining training; // the backward ops (CpuTraining.java)
    private final boolean packWeights;
    private final Arena arena = Arena.ofShared();

    // Long-lived task objects: kernels set their fields and hand them to the pool (no allocation per call).
    private final LinearTask linearTask = new LinearTask();
    private final GemmTask gemmTask = new GemmTask();
    private final PackTask packTask = new PackTask();
    private final AttentionTask attentionTask = new AttentionTask();
    private final RowsTask rowsTask = new RowsTask();

    public CpuBackend(int threads) { this(threads, true); }

    /**
     * @param packWeights true: the broadcast-form GEMM over repacked W panels (the default);
     *                    false: the dot form over W read in place, [out, in] (no extra memory)
     */
    public CpuBackend(int threads, boolean packWeights) {
        if (threads < 1) throw new IllegalArgumentException("--threads must be ≥ 1, got " + threads);
        pool = new Parallel(threads);
        training = new CpuTraining(pool);
        this.packWeights = packWeights;
        gemmTask.edge = new MemorySegment[threads];
        for (int i = 0; i < threads; i++) gemmTask.edge[i] = arena.allocate((long) MR * NR * 4, 64);
    }

    @Override public String name() { return "cpu"; }

    @Override
    public String describe() {
        return "backend=cpu vector=" + S.vectorBitSize() + "-bit (" + L + " floats) threads=" + pool.threads()
                + (packWeights ? " gemm=packed " + MR + "x" + NR : " gemm=dot");
    }

    public int threads() { return pool.threads(); }

    /**
     * A private view of the weight (fp32): the packed panels of a linear weight hang off its
     * {@code device} field, so the caller's tensor is never mutated and two backends never share.
     */
    @Override
    public Tensor weight(Tensor hostWeight) {
        Tensor f = hostWeight.toF32();
        return f == hostWeight ? new Tensor(DType.F32, f.shape(), f.data) : f;
    }

    @Override public Tensor allocate(long... shape) { return Tensor.allocate(arena, shape); }

    @Override
    public void read(Tensor src, long srcOffset, float[] dst, int dstOffset, int n) {
        MemorySegment.copy(src.data, Tensor.F32, srcOffset * 4, dst, dstOffset, n);
    }

    @Override
    public void write(float[] src, int srcOffset, Tensor dst, long dstOffset, int n) {
        MemorySegment.copy(src, srcOffset, dst.data, Tensor.F32, dstOffset * 4, n);
    }

    @Override
    public void close() {
        pool.close();
    }

    // ---------------------------------------------------------------- vector helpers

    static FloatVector load(MemorySegment m, long floatIndex) {
        return FloatVector.fromMemorySegment(S, m, floatIndex * 4, LE);
    }

    static void store(FloatVector v, MemorySegment m, long floatIndex) {
        v.intoMemorySegment(m, floatIndex * 4, LE);
    }

    static float dot(MemorySegment a, long ai, MemorySegment b, long bi, int n) {
        FloatVector acc = FloatVector.zero(S);
        int k = 0;
        for (int bound = S.loopBound(n); k < bound; k += L) acc = load(a, ai + k).fma(load(b, bi + k), acc);
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (; k < n; k++) s += a.getAtIndex(Tensor.F32, ai + k) * b.getAtIndex(Tensor.F32, bi + k);
        return s;
    }

    /**
     * The LoRA shrink of one row: {@code v[vo + k] = A[k]·x̃} for k < r, where x̃ is row
     * {@code row} of x, times the segment's dropout mask while training.
     */
    static void loraShrink(Lora lora, int sg, int row, MemorySegment x, int in, float[] v, int vo) {
        Tensor a = lora.a[sg];
        int r = (int) a.dim(0);
        if (lora.dropout == 0) {
            for (int k = 0; k < r; k++) v[vo + k] = dot(a.data, (long) k * in, x, (long) row * in, in);
            return;
        }
        float[] xd = new float[in]; // training only
        for (int j = 0; j < in; j++) xd[j] = x.getAtIndex(Tensor.F32, (long) row * in + j) * lora.dropScale(row, j);
        for (int k = 0; k < r; k++) {
            float s = 0;
            for (int j = 0; j < in; j++) s += a.data.getAtIndex(Tensor.F32, (long) k * in + j) * xd[j];
            v[vo + k] = s;
        }
    }

    static float gelu(float x) { return 0.5f * x * (1f + Erf.erfFast(x * 0.70710678118654752f)); }

    /** Exact-erf GELU on a vector: {@link Erf#erfFast}'s rational form, lane-wise. */
    static FloatVector gelu(FloatVector x) {
        FloatVector z = x.mul(0.70710678118654752f).max(-4f).min(4f);
        FloatVector z2 = z.mul(z);
        FloatVector p = FloatVector.broadcast(S, Erf.A13);
        p = p.fma(z2, FloatVector.broadcast(S, Erf.A11));
        p = p.fma(z2, FloatVector.broadcast(S, Erf.A9));
        p = p.fma(z2, FloatVector.broadcast(S, Erf.A7));
        p = p.fma(z2, FloatVector.broadcast(S, Erf.A5));
        p = p.fma(z2, FloatVector.broadcast(S, Erf.A3));
        p = p.fma(z2, FloatVector.broadcast(S, Erf.A1));
        p = p.mul(z);
        FloatVector q = FloatVector.broadcast(S, Erf.B8);
        q = q.fma(z2, FloatVector.broadcast(S, Erf.B6));
        q = q.fma(z2, FloatVector.broadcast(S, Erf.B4));
        q = q.fma(z2, FloatVector.broadcast(S, Erf.B2));
        q = q.fma(z2, FloatVector.broadcast(S, Erf.B0));
        return x.mul(0.5f).mul(p.div(q).add(1f));
    }

    // ---------------------------------------------------------------- linear

    /**
     * W [out, in] repacked for the broadcast-form GEMM: {@code panels} panels of NR columns,
     * each k-major ({@code data[(p·in + k)·NR + j] = W[p·NR + j, k]}); columns past {@code out}
     * in the last panel are zero. Lives as long as the weight tensor that holds it.
     */
    static final class Packed {
        final MemorySegment source; // the [out, in] data it was packed from
        final MemorySegment data;
        final int out, in, panels;

        Packed(MemorySegment source, int out, int in) {
            this.source = source;
            this.out = out;
            this.in = in;
            this.panels = (out + NR - 1) / NR;
            this.data = Arena.ofAuto().allocate((long) panels * in * NR * 4, 64);
        }
    }

    @Override
    public void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu) {
        if (rows <= 0) return;
        Lora ad = lora != null && lora.count > 0 ? lora : null;
        if (!packWeights) {
            LinearTask t = linearTask;
            t.y = y.data; t.x = x.data; t.w = w.toF32().data; t.bias = bias == null ? null : bias.data;
            t.rows = rows; t.out = (int) w.dim(0); t.in = (int) w.dim(1); t.gelu = gelu;
            t.lora = ad;
            if (ad != null) shrink(t, ad);
            pool.run(t, (t.out + NB - 1) / NB);
            t.y = t.x = t.w = t.bias = null;
            t.lora = null;
            return;
        }
        Packed p = packed(w);
        GemmTask g = gemmTask;
        g.y = y.data; g.x = x.data; g.bias = bias == null ? null : bias.data; g.w = p.data;
        g.rows = rows; g.out = p.out; g.in = p.in; g.panels = p.panels; g.gelu = gelu;
        g.tiles = (rows + MR - 1) / MR;
        long xpFloats = (long) g.tiles * MR * g.in;
        if (g.xp == null || g.xp.byteSize() < xpFloats * 4) g.xp = Arena.ofAuto().allocate(Math.max(xpFloats, 1024) * 4, 64);
        g.lora = ad;
        if (ad != null) g.prepareLora(ad);
        // row blocks sized for L2; panel groups so that there are enough chunks for every thread
        g.blockTiles = Math.max(1, Math.min(g.tiles, X_BLOCK_BYTES / (MR * g.in * 4)));
        int rowBlocks = (g.tiles + g.blockTiles - 1) / g.blockTiles;
        int want = pool.threads() == 1 ? 1 : pool.threads() * 4;
        int groups = rowBlocks >= want ? 1 : Math.min(g.panels, (want + rowBlocks - 1) / rowBlocks);
        g.groupPanels = (g.panels + groups - 1) / groups;
        groups = (g.panels + g.groupPanels - 1) / g.groupPanels;
        g.rowBlocks = rowBlocks;
        g.phase = GemmTask.PACK_X;
        pool.run(g, Math.min(g.tiles, pool.threads() * 4));
        g.phase = GemmTask.MULTIPLY;
        pool.run(g, rowBlocks * groups);
        g.y = g.x = g.bias = g.w = null;
        g.lora = null;
    }

    /** The packed panels of {@code w}, packing them on first use (in parallel; once per weight). */
    private Packed packed(Tensor w) {
        if (w.device instanceof Packed p && p.source == w.data) return p;
        if (w.rank() != 2) throw new IllegalArgumentException("linear weight must be [out, in], got " + w);
        Tensor f = w.toF32();
        Packed p = new Packed(w.data, (int) w.dim(0), (int) w.dim(1));
        packTask.w = f.data; packTask.p = p;
        pool.run(packTask, p.panels);
        packTask.w = null; packTask.p = null;
        w.device = p;
        return p;
    }

    /** Repacks W [out, in] into k-major panels; a chunk is one panel. */
    static final class PackTask implements Parallel.Task {
        MemorySegment w;
        Packed p;

        @Override
        public void run(int panel, int worker) {
            int in = p.in, o0 = panel * NR;
            long base = (long) panel * in * NR;
            for (int j = 0; j < NR; j++) {
                int o = o0 + j;
                if (o < p.out) {
                    long src = (long) o * in;
                    for (int k = 0; k < in; k++) p.data.setAtIndex(Tensor.F32, base + (long) k * NR + j, w.getAtIndex(Tensor.F32, src + k));
                } else {
                    for (int k = 0; k < in; k++) p.data.setAtIndex(Tensor.F32, base + (long) k * NR + j, 0f);
                }
            }
        }
    }

    /** The broadcast-form GEMM with its fused epilogue; two phases (pack x, multiply). */
    final class GemmTask implements Parallel.Task {
        static final int PACK_X = 0, MULTIPLY = 1;
        int phase;
        MemorySegment y, x, bias, w;  // w: packed panels
        MemorySegment xp;             // x in tiles of MR rows, k-major: [tiles, in, MR]
        int rows, out, in, panels, tiles, blockTiles, rowBlocks, groupPanels;
        boolean gelu;
        // LoRA: per row, its segment (or -1); v = A·x per row (the "shrink"); Bᵀ per segment
        Lora lora;
        int[] seg = new int[16];
        float[] v = new float[16];    // [rows, vStride]
        int vStride;
        float[] bt = new float[16];   // segment s at btOff[s]: [r_s, outPad], Bᵀ scaled by scale[s]
        int[] btOff = new int[4];
        int outPad;
        // per worker: a full MR×NR tile for edge tiles (rows past `rows`, columns past `out`)
        MemorySegment[] edge = new MemorySegment[0];

        void prepareLora(Lora ad) {
            int maxR = ad.maxRank();
            if (seg.length < rows) seg = new int[rows];
            Arrays.fill(seg, 0, rows, -1);
            for (int s = ad.count - 1; s >= 0; s--) // the first segment that holds a row wins, as in the reference
                for (int i = Math.max(0, ad.rowStart[s]); i < ad.rowEnd[s] && i < rows; i++) seg[i] = s;
            vStride = maxR;
            if (v.length < rows * maxR) v = new float[rows * maxR];
            outPad = panels * NR;
            if (btOff.length < ad.count) btOff = new int[ad.count];
            int total = 0;
            for (int s = 0; s < ad.count; s++) { btOff[s] = total; total += (int) ad.a[s].dim(0) * outPad; }
            if (bt.length < total) bt = new float[total];
            for (int s = 0; s < ad.count; s++) { // Bᵀ·scale, zero-padded to whole panels
                Tensor b = ad.b[s];
                int r = (int) b.dim(1);
                float sc = ad.scale[s];
                int off = btOff[s];
                Arrays.fill(bt, off, off + r * outPad, 0f);
                for (int o = 0; o < out; o++)
                    for (int k = 0; k < r; k++) bt[off + k * outPad + o] = sc * b.data.getAtIndex(Tensor.F32, (long) o * r + k);
            }
            // the shrink v = A·x, row-parallel (SGMV shrink)
            rowsTask.op = RowsTask.SHRINK_PACKED; rowsTask.gemm = this; rowsTask.rows = rows;
            pool.run(rowsTask, chunksFor(rows));
            rowsTask.gemm = null;
        }

        void shrinkRow(int i) {
            int sg = seg[i];
            if (sg >= 0) loraShrink(lora, sg, i, x, in, v, i * vStride);
        }

        @Override
        public void run(int chunk, int worker) {
            if (phase == PACK_X) { packX(chunk); return; }
            int rb = chunk % rowBlocks, pg = chunk / rowBlocks;
            int t0 = rb * blockTiles, t1 = Math.min(tiles, t0 + blockTiles);
            int p0 = pg * groupPanels, p1 = Math.min(panels, p0 + groupPanels);
            MemorySegment e = edge[worker];
            for (int p = p0; p < p1; p++) {
                int o = p * NR, cols = Math.min(NR, out - o);
                long wb = (long) p * in * NR;
                for (int t = t0; t < t1; t++) {
                    int i = t * MR, n = Math.min(MR, rows - i);
                    long xb = (long) t * in * MR;
                    if (n == MR && cols == NR) {
                        kernel(xp, xb, w, wb, in, y, (long) i * out + o, out);
                        epilogue(y, (long) i * out + o, out, i, n, o, cols);
                    } else { // edge tile: compute into scratch, copy the valid part, then finish it in y
                        kernel(xp, xb, w, wb, in, e, 0, NR);
                        for (int r = 0; r < n; r++)
                            MemorySegment.copy(e, (long) r * NR * 4, y, ((long) (i + r) * out + o) * 4, (long) cols * 4);
                        epilogue(y, (long) i * out + o, out, i, n, o, cols);
                    }
                }
            }
        }

        /** x rows of tile t into xp[t][k][r] (rows past {@code rows} are zero). */
        private void packX(int chunk) {
            int n = Math.min(tiles, pool.threads() * 4);
            int ta = (int) ((long) tiles * chunk / n), tb = (int) ((long) tiles * (chunk + 1) / n);
            for (int t = ta; t < tb; t++) {
                long base = (long) t * in * MR;
                for (int r = 0; r < MR; r++) {
                    int i = t * MR + r;
                    if (i < rows) {
                        long src = (long) i * in;
                        for (int k = 0; k < in; k++) xp.setAtIndex(Tensor.F32, base + (long) k * MR + r, x.getAtIndex(Tensor.F32, src + k));
                    } else {
                        for (int k = 0; k < in; k++) xp.setAtIndex(Tensor.F32, base + (long) k * MR + r, 0f);
                    }
                }
            }
        }

        /** bias, LoRA expand, GELU on the n×cols tile at {@code dst[off]} (row stride ld), rows i.., columns o.. */
        private void epilogue(MemorySegment dst, long off, int ld, int i, int n, int o, int cols) {
            if (bias == null && lora == null && !gelu) return;
            int vb = cols == NR ? NR : S.loopBound(cols);
            for (int r = 0; r < n; r++) {
                long row = off + (long) r * ld;
                int sg = lora == null ? -1 : seg[i + r];
                int c = 0;
                for (; c < vb; c += L) {
                    FloatVector a = load(dst, row + c);
                    if (bias != null) a = a.add(load(bias, o + c));
                    if (sg >= 0) a = a.add(expand(i + r, sg, o + c));
                    if (gelu) a = CpuBackend.gelu(a);
                    store(a, dst, row + c);
                }
                for (; c < cols; c++) {
                    float a = dst.getAtIndex(Tensor.F32, row + c);
                    if (bias != null) a += bias.getAtIndex(Tensor.F32, o + c);
                    if (sg >= 0) {
                        int r0 = (int) lora.a[sg].dim(0), bo = btOff[sg] + o + c, vo = (i + r) * vStride;
                        for (int k = 0; k < r0; k++) a += v[vo + k] * bt[bo + k * outPad];
                    }
                    if (gelu) a = CpuBackend.gelu(a);
                    dst.setAtIndex(Tensor.F32, row + c, a);
                }
            }
        }

        /** scale·(B·v)[col .. col+L) for row i of segment sg (Bᵀ already scaled). */
        private FloatVector expand(int i, int sg, int col) {
            int r = (int) lora.a[sg].dim(0), bo = btOff[sg] + col, vo = i * vStride;
            FloatVector e = FloatVector.zero(S);
            for (int k = 0; k < r; k++) e = FloatVector.fromArray(S, bt, bo + k * outPad).fma(FloatVector.broadcast(S, v[vo + k]), e);
            return e;
        }
    }

    /**
     * The 6×NR micro-kernel: {@code dst[r, 0..NR) = Σ_k xp[k·6 + r] · wp[k·NR .. +NR)} for r in
     * [0, 6), written at {@code dst[off + r·ld]}. 12 accumulators stay in registers over all of K.
     */
    static void kernel(MemorySegment xp, long xb, MemorySegment wp, long wb, int k, MemorySegment dst, long off, int ld) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
        FloatVector c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        for (int kk = 0; kk < k; kk++, xb += MR, wb += NR) {
            FloatVector b0 = load(wp, wb), b1 = load(wp, wb + L);
            FloatVector a = FloatVector.broadcast(S, xp.getAtIndex(Tensor.F32, xb));
            c00 = a.fma(b0, c00); c01 = a.fma(b1, c01);
            a = FloatVector.broadcast(S, xp.getAtIndex(Tensor.F32, xb + 1));
            c10 = a.fma(b0, c10); c11 = a.fma(b1, c11);
            a = FloatVector.broadcast(S, xp.getAtIndex(Tensor.F32, xb + 2));
            c20 = a.fma(b0, c20); c21 = a.fma(b1, c21);
            a = FloatVector.broadcast(S, xp.getAtIndex(Tensor.F32, xb + 3));
            c30 = a.fma(b0, c30); c31 = a.fma(b1, c31);
            a = FloatVector.broadcast(S, xp.getAtIndex(Tensor.F32, xb + 4));
            c40 = a.fma(b0, c40); c41 = a.fma(b1, c41);
            a = FloatVector.broadcast(S, xp.getAtIndex(Tensor.F32, xb + 5));
            c50 = a.fma(b0, c50); c51 = a.fma(b1, c51);
        }
        store(c00, dst, off); store(c01, dst, off + L); off += ld;
        store(c10, dst, off); store(c11, dst, off + L); off += ld;
        store(c20, dst, off); store(c21, dst, off + L); off += ld;
        store(c30, dst, off); store(c31, dst, off + L); off += ld;
        store(c40, dst, off); store(c41, dst, off + L); off += ld;
        store(c50, dst, off); store(c51, dst, off + L);
    }

    /** LoRA shrink for the dot form: v[i, 0..r) = A·x[i] (the "SGMV shrink"), into t.v. */
    private void shrink(LinearTask t, Lora lora) {
        int maxR = lora.maxRank();
        if (t.v == null || t.v.length < (long) t.rows * maxR) t.v = new float[Math.max(t.rows * maxR, 16)];
        if (t.seg == null || t.seg.length < t.rows) t.seg = new int[Math.max(t.rows, 16)];
        Arrays.fill(t.seg, 0, t.rows, -1);
        for (int s = lora.count - 1; s >= 0; s--)
            for (int i = Math.max(0, lora.rowStart[s]); i < lora.rowEnd[s] && i < t.rows; i++) t.seg[i] = s;
        t.vStride = maxR;
        rowsTask.op = RowsTask.SHRINK; rowsTask.lin = t; rowsTask.rows = t.rows;
        pool.run(rowsTask, chunksFor(t.rows));
        rowsTask.lin = null;
    }

    /** The dot form over W [out, in] read in place (the fallback; see the class comment). */
    final class LinearTask implements Parallel.Task {
        MemorySegment y, x, w, bias;
        int rows, out, in;
        boolean gelu;
        Lora lora;
        float[] v;      // [rows, vStride] LoRA shrink results
        int vStride;
        int[] seg;      // row → LoRA segment or -1

        @Override
        public void run(int chunk, int worker) {
            int o0 = chunk * NB, o1 = Math.min(out, o0 + NB);
            int i = 0;
            for (; i + 3 <= rows; i += 3) {
                int o = o0;
                for (; o + 4 <= o1; o += 4) tile3x4(i, o);
                for (; o < o1; o++) for (int r = i; r < i + 3; r++) store(r, o, dot(x, (long) r * in, w, (long) o * in, in));
            }
            for (; i < rows; i++) {
                int o = o0;
                for (; o + 4 <= o1; o += 4) tile1x4(i, o);
                for (; o < o1; o++) store(i, o, dot(x, (long) i * in, w, (long) o * in, in));
            }
        }

        private void tile3x4(int i, int o) {
            long x0 = (long) i * in, x1 = x0 + in, x2 = x1 + in;
            long w0 = (long) o * in, w1 = w0 + in, w2 = w1 + in, w3 = w2 + in;
            FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00, c03 = c00;
            FloatVector c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            FloatVector c20 = c00, c21 = c00, c22 = c00, c23 = c00;
            int k = 0;
            for (int bound = S.loopBound(in); k < bound; k += L) {
                FloatVector a0 = load(x, x0 + k), a1 = load(x, x1 + k), a2 = load(x, x2 + k);
                FloatVector b = load(w, w0 + k);
                c00 = a0.fma(b, c00); c10 = a1.fma(b, c10); c20 = a2.fma(b, c20);
                b = load(w, w1 + k);
                c01 = a0.fma(b, c01); c11 = a1.fma(b, c11); c21 = a2.fma(b, c21);
                b = load(w, w2 + k);
                c02 = a0.fma(b, c02); c12 = a1.fma(b, c12); c22 = a2.fma(b, c22);
                b = load(w, w3 + k);
                c03 = a0.fma(b, c03); c13 = a1.fma(b, c13); c23 = a2.fma(b, c23);
            }
            float s00 = c00.reduceLanes(VectorOperators.ADD), s01 = c01.reduceLanes(VectorOperators.ADD);
            float s02 = c02.reduceLanes(VectorOperators.ADD), s03 = c03.reduceLanes(VectorOperators.ADD);
            float s10 = c10.reduceLanes(VectorOperators.ADD), s11 = c11.reduceLanes(VectorOperators.ADD);
            float s12 = c12.reduceLanes(VectorOperators.ADD), s13 = c13.reduceLanes(VectorOperators.ADD);
            float s20 = c20.reduceLanes(VectorOperators.ADD), s21 = c21.reduceLanes(VectorOperators.ADD);
            float s22 = c22.reduceLanes(VectorOperators.ADD), s23 = c23.reduceLanes(VectorOperators.ADD);
            for (; k < in; k++) { // K tail
                float a0 = x.getAtIndex(Tensor.F32, x0 + k), a1 = x.getAtIndex(Tensor.F32, x1 + k), a2 = x.getAtIndex(Tensor.F32, x2 + k);
                float b0 = w.getAtIndex(Tensor.F32, w0 + k), b1 = w.getAtIndex(Tensor.F32, w1 + k);
                float b2 = w.getAtIndex(Tensor.F32, w2 + k), b3 = w.getAtIndex(Tensor.F32, w3 + k);
                s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;
                s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;
                s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3;
            }
            store(i, o, s00); store(i, o + 1, s01); store(i, o + 2, s02); store(i, o + 3, s03);
            store(i + 1, o, s10); store(i + 1, o + 1, s11); store(i + 1, o + 2, s12); store(i + 1, o + 3, s13);
            store(i + 2, o, s20); store(i + 2, o + 1, s21); store(i + 2, o + 2, s22); store(i + 2, o + 3, s23);
        }

        private void tile1x4(int i, int o) {
            long x0 = (long) i * in;
            long w0 = (long) o * in, w1 = w0 + in, w2 = w1 + in, w3 = w2 + in;
            FloatVector c0 = FloatVector.zero(S), c1 = c0, c2 = c0, c3 = c0;
            int k = 0;
            for (int bound = S.loopBound(in); k < bound; k += L) {
                FloatVector a = load(x, x0 + k);
                c0 = a.fma(load(w, w0 + k), c0);
                c1 = a.fma(load(w, w1 + k), c1);
                c2 = a.fma(load(w, w2 + k), c2);
                c3 = a.fma(load(w, w3 + k), c3);
            }
            float s0 = c0.reduceLanes(VectorOperators.ADD), s1 = c1.reduceLanes(VectorOperators.ADD);
            float s2 = c2.reduceLanes(VectorOperators.ADD), s3 = c3.reduceLanes(VectorOperators.ADD);
            for (; k < in; k++) {
                float a = x.getAtIndex(Tensor.F32, x0 + k);
                s0 += a * w.getAtIndex(Tensor.F32, w0 + k); s1 += a * w.getAtIndex(Tensor.F32, w1 + k);
                s2 += a * w.getAtIndex(Tensor.F32, w2 + k); s3 += a * w.getAtIndex(Tensor.F32, w3 + k);
            }
            store(i, o, s0); store(i, o + 1, s1); store(i, o + 2, s2); store(i, o + 3, s3);
        }

        /** The epilogue, on one output element: + bias, + LoRA expand, GELU; then the only store. */
        private void store(int i, int o, float s) {
            if (bias != null) s += bias.getAtIndex(Tensor.F32, o);
            if (lora != null) {
                int sg = seg[i];
                if (sg >= 0) {
                    MemorySegment b = lora.b[sg].data;
                    int r = (int) lora.b[sg].dim(1);
                    long bo = (long) o * r;
                    int vo = i * vStride;
                    float e = 0;
                    for (int k = 0; k < r; k++) e += b.getAtIndex(Tensor.F32, bo + k) * v[vo + k];
                    s += lora.scale[sg] * e;
                }
            }
            if (gelu) s = CpuBackend.gelu(s);
            y.setAtIndex(Tensor.F32, (long) i * out + o, s);
        }
    }

    // ---------------------------------------------------------------- attention

    @Override
    public void attention(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        AttentionTask t = attentionTask;
        t.out = out.data; t.q = q.data; t.k = k.data; t.v = v.data; t.batch = batch; t.heads = heads;
        t.c = (int) (q.numel() / q.dim(0));
        t.d = t.c / heads;
        int threads = pool.threads();
        int lp = (batch.maxLen + L - 1) / L * L;
        if (t.kt.length < threads || t.kt[0].length < t.d * lp || t.s[0].length < 4 * lp) {
            t.kt = new float[threads][Math.max(t.d * lp, 64)];
            t.s = new float[threads][Math.max(4 * lp, 64)];
        }
        pool.run(t, batch.size * heads);
        t.out = t.q = t.k = t.v = null;
        t.batch = null;
    }

    final class AttentionTask implements Parallel.Task {
        MemorySegment out, q, k, v;
        Batch batch;
        int heads, c, d;
        float[][] kt = new float[0][]; // per worker: Kᵀ of one head, [D, lp]
        float[][] s = new float[0][];  // per worker: 4 rows of scores / probabilities, [4, lp]

        @Override
        public void run(int chunk, int worker) { // a chunk is one (sequence, head) pair
            int b = chunk / heads, h = chunk % heads;
            int s0 = batch.start[b], len = batch.length(b);
            int lp = (len + L - 1) / L * L;
            float[] kt = this.kt[worker], sc = this.s[worker];
            long hd = (long) h * d;
            // Kᵀ of this head, zero past len
            for (int j = 0; j < len; j++) {
                long kr = (long) (s0 + j) * c + hd;
                for (int e = 0; e < d; e++) kt[e * lp + j] = k.getAtIndex(Tensor.F32, kr + e);
            }
            for (int e = 0; e < d; e++) Arrays.fill(kt, e * lp + len, e * lp + lp, 0f);
            float scale = (float) (1.0 / Math.sqrt(d));
            for (int i = 0; i < len; i += 4) {
                int n = Math.min(4, len - i);
                scores(kt, sc, lp, s0 + i, n, hd);
                for (int r = 0; r < n; r++) softmax(sc, r * lp, len, lp, scale);
                weighted(sc, lp, s0, s0 + i, n, len, hd);
            }
        }

        /** sc[r, j] = q[row0 + r]·k[j] (head columns) for r < n, all j < lp (pad lanes get 0). */
        private void scores(float[] kt, float[] sc, int lp, int row0, int n, long hd) {
            long q0 = (long) row0 * c + hd, q1 = q0 + c, q2 = q1 + c, q3 = q2 + c;
            if (n == 4) {
                for (int j = 0; j < lp; j += L) {
                    FloatVector a0 = FloatVector.zero(S), a1 = a0, a2 = a0, a3 = a0;
                    for (int e = 0; e < d; e++) {
                        FloatVector kv = FloatVector.fromArray(S, kt, e * lp + j);
                        a0 = FloatVector.broadcast(S, q.getAtIndex(Tensor.F32, q0 + e)).fma(kv, a0);
                        a1 = FloatVector.broadcast(S, q.getAtIndex(Tensor.F32, q1 + e)).fma(kv, a1);
                        a2 = FloatVector.broadcast(S, q.getAtIndex(Tensor.F32, q2 + e)).fma(kv, a2);
                        a3 = FloatVector.broadcast(S, q.getAtIndex(Tensor.F32, q3 + e)).fma(kv, a3);
                    }
                    a0.intoArray(sc, j); a1.intoArray(sc, lp + j); a2.intoArray(sc, 2 * lp + j); a3.intoArray(sc, 3 * lp + j);
                }
            } else {
                for (int r = 0; r < n; r++) {
                    long qr = q0 + (long) r * c;
                    for (int j = 0; j < lp; j += L) {
                        FloatVector a = FloatVector.zero(S);
                        for (int e = 0; e < d; e++)
                            a = FloatVector.broadcast(S, q.getAtIndex(Tensor.F32, qr + e)).fma(FloatVector.fromArray(S, kt, e * lp + j), a);
                        a.intoArray(sc, r * lp + j);
                    }
                }
            }
        }

        /** In place on sc[o .. o+lp): p_j = exp((s_j − max)·scale) / Σ, over j < len; pad lanes become 0. */
        private void softmax(float[] sc, int o, int len, int lp, float scale) {
            for (int j = len; j < lp; j++) sc[o + j] = Float.NEGATIVE_INFINITY;
            FloatVector m = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
            for (int j = 0; j < lp; j += L) m = m.max(FloatVector.fromArray(S, sc, o + j));
            float max = m.reduceLanes(VectorOperators.MAX);
            FloatVector mv = FloatVector.broadcast(S, max), sv = FloatVector.broadcast(S, scale);
            FloatVector sum = FloatVector.zero(S);
            for (int j = 0; j < lp; j += L) {
                FloatVector e = FloatVector.fromArray(S, sc, o + j).sub(mv).mul(sv).lanewise(VectorOperators.EXP);
                e.intoArray(sc, o + j);
                sum = sum.add(e);
            }
            float inv = 1f / sum.reduceLanes(VectorOperators.ADD);
            for (int j = 0; j < lp; j += L) FloatVector.fromArray(S, sc, o + j).mul(inv).intoArray(sc, o + j);
        }

        /** out[row0 + r, head] = Σ_j p[r, j] · v[s0 + j, head] for r < n. */
        private void weighted(float[] sc, int lp, int s0, int row0, int n, int len, long hd) {
            int e = 0;
            for (int bound = S.loopBound(d); e < bound; e += L) {
                if (n == 4) {
                    FloatVector a0 = FloatVector.zero(S), a1 = a0, a2 = a0, a3 = a0;
                    for (int j = 0; j < len; j++) {
                        FloatVector vv = load(v, (long) (s0 + j) * c + hd + e);
                        a0 = FloatVector.broadcast(S, sc[j]).fma(vv, a0);
                        a1 = FloatVector.broadcast(S, sc[lp + j]).fma(vv, a1);
                        a2 = FloatVector.broadcast(S, sc[2 * lp + j]).fma(vv, a2);
                        a3 = FloatVector.broadcast(S, sc[3 * lp + j]).fma(vv, a3);
                    }
                    long o = (long) row0 * c + hd + e;
                    store(a0, out, o); store(a1, out, o + c); store(a2, out, o + 2L * c); store(a3, out, o + 3L * c);
                } else {
                    for (int r = 0; r < n; r++) {
                        FloatVector a = FloatVector.zero(S);
                        for (int j = 0; j < len; j++) a = FloatVector.broadcast(S, sc[r * lp + j]).fma(load(v, (long) (s0 + j) * c + hd + e), a);
                        store(a, out, (long) (row0 + r) * c + hd + e);
                    }
                }
            }
            for (; e < d; e++) { // D tail
                for (int r = 0; r < n; r++) {
                    float a = 0;
                    for (int j = 0; j < len; j++) a += sc[r * lp + j] * v.getAtIndex(Tensor.F32, (long) (s0 + j) * c + hd + e);
                    out.setAtIndex(Tensor.F32, (long) (row0 + r) * c + hd + e, a);
                }
            }
        }
    }

    // ---------------------------------------------------------------- row-wise ops

    private int chunksFor(int rows) { return Math.min(rows, pool.threads() * 4); }

    @Override
    public void embed(Tensor out, int[] ids, int[] positions, int[] types, Batch batch,
                      Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) {
        RowsTask t = rowsTask;
        t.op = RowsTask.EMBED; t.out = out.data; t.ids = ids; t.positions = positions; t.types = types;
        t.word = word.data; t.pos = pos.data; t.type = type.data; t.gamma = gamma.data; t.beta = beta.data;
        t.eps = eps; t.c = (int) word.dim(1); t.rows = batch.tokens;
        pool.run(t, chunksFor(batch.tokens));
        t.clear();
    }

    @Override
    public void addLayerNorm(Tensor out, Tensor x, Tensor residual, int rows, Tensor gamma, Tensor beta, float eps) {
        RowsTask t = rowsTask;
        t.op = RowsTask.ADD_LN; t.out = out.data; t.x = x.data; t.residual = residual.data;
        t.gamma = gamma.data; t.beta = beta.data; t.eps = eps; t.c = (int) gamma.numel(); t.rows = rows;
        pool.run(t, chunksFor(rows));
        t.clear();
    }

    @Override
    public void pool(Tensor out, Tensor hidden, Batch batch, Pooling mode) {
        RowsTask t = rowsTask;
        t.op = mode == Pooling.CLS ? RowsTask.POOL_CLS : RowsTask.POOL_MEAN;
        t.out = out.data; t.x = hidden.data; t.batch = batch; t.c = (int) (hidden.numel() / hidden.dim(0));
        t.rows = batch.size;
        pool.run(t, chunksFor(batch.size));
        t.clear();
    }

    @Override
    public void l2Normalize(Tensor x, int rows) {
        RowsTask t = rowsTask;
        t.op = RowsTask.L2; t.out = x.data; t.c = (int) (x.numel() / x.dim(0)); t.rows = rows;
        pool.run(t, chunksFor(rows));
        t.clear();
    }

    /** Row-parallel ops; a chunk is a contiguous range of rows. */
    final class RowsTask implements Parallel.Task {
        static final int EMBED = 0, ADD_LN = 1, POOL_MEAN = 2, POOL_CLS = 3, L2 = 4, SHRINK = 5, SHRINK_PACKED = 6;
        int op, rows, c;
        MemorySegment out, x, residual, word, pos, type, gamma, beta;
        int[] ids, positions, types;
        float eps;
        Batch batch;
        LinearTask lin;
        GemmTask gemm;

        void clear() {
            out = x = residual = word = pos = type = gamma = beta = null;
            ids = positions = types = null;
            batch = null;
        }

        @Override
        public void run(int chunk, int worker) {
            int n = chunksFor(rows);
            int r0 = (int) ((long) rows * chunk / n), r1 = (int) ((long) rows * (chunk + 1) / n);
            for (int i = r0; i < r1; i++) {
                switch (op) {
                    case EMBED -> embedRow(i);
                    case ADD_LN -> addLnRow(i);
                    case POOL_MEAN -> poolMeanRow(i);
                    case POOL_CLS -> MemorySegment.copy(x, (long) batch.start[i] * c * 4, out, (long) i * c * 4, (long) c * 4);
                    case L2 -> l2Row(i);
                    case SHRINK -> shrinkRow(i);
                    case SHRINK_PACKED -> gemm.shrinkRow(i);
                    default -> throw new IllegalStateException("op " + op);
                }
            }
        }

        private void embedRow(int i) {
            long o = (long) i * c, wi = (long) ids[i] * c, pi = (long) positions[i] * c, ti = (long) types[i] * c;
            int j = 0;
            for (int bound = S.loopBound(c); j < bound; j += L)
                load(word, wi + j).add(load(pos, pi + j)).add(load(type, ti + j)).intoMemorySegment(out, (o + j) * 4, LE);
            for (; j < c; j++)
                out.setAtIndex(Tensor.F32, o + j, word.getAtIndex(Tensor.F32, wi + j) + pos.getAtIndex(Tensor.F32, pi + j)
                        + type.getAtIndex(Tensor.F32, ti + j));
            layerNorm(o);
        }

        private void addLnRow(int i) {
            long o = (long) i * c;
            int j = 0;
            for (int bound = S.loopBound(c); j < bound; j += L)
                load(x, o + j).add(load(residual, o + j)).intoMemorySegment(out, (o + j) * 4, LE);
            for (; j < c; j++) out.setAtIndex(Tensor.F32, o + j, x.getAtIndex(Tensor.F32, o + j) + residual.getAtIndex(Tensor.F32, o + j));
            layerNorm(o);
        }

        /** In place on out[o .. o+c): two passes (mean, then centred variance), as torch does. */
        private void layerNorm(long o) {
            FloatVector acc = FloatVector.zero(S);
            int j = 0, bound = S.loopBound(c);
            for (; j < bound; j += L) acc = acc.add(load(out, o + j));
            float sum = acc.reduceLanes(VectorOperators.ADD);
            for (; j < c; j++) sum += out.getAtIndex(Tensor.F32, o + j);
            float mean = sum / c;
            FloatVector m = FloatVector.broadcast(S, mean);
            acc = FloatVector.zero(S);
            for (j = 0; j < bound; j += L) { FloatVector d = load(out, o + j).sub(m); acc = d.fma(d, acc); }
            float var = acc.reduceLanes(VectorOperators.ADD);
            for (; j < c; j++) { float d = out.getAtIndex(Tensor.F32, o + j) - mean; var += d * d; }
            float inv = (float) (1.0 / Math.sqrt(var / c + eps));
            FloatVector vi = FloatVector.broadcast(S, inv);
            for (j = 0; j < bound; j += L)
                load(out, o + j).sub(m).mul(vi).fma(load(gamma, j), load(beta, j)).intoMemorySegment(out, (o + j) * 4, LE);
            for (; j < c; j++)
                out.setAtIndex(Tensor.F32, o + j, (out.getAtIndex(Tensor.F32, o + j) - mean) * inv * gamma.getAtIndex(Tensor.F32, j)
                        + beta.getAtIndex(Tensor.F32, j));
        }

        private void poolMeanRow(int b) {
            int s0 = batch.start[b], len = batch.length(b);
            float inv = 1f / len;
            long o = (long) b * c;
            int j = 0;
            for (int bound = S.loopBound(c); j < bound; j += L) {
                FloatVector a = FloatVector.zero(S);
                for (int i = 0; i < len; i++) a = a.add(load(x, (long) (s0 + i) * c + j));
                a.mul(inv).intoMemorySegment(out, (o + j) * 4, LE);
            }
            for (; j < c; j++) {
                float a = 0;
                for (int i = 0; i < len; i++) a += x.getAtIndex(Tensor.F32, (long) (s0 + i) * c + j);
                out.setAtIndex(Tensor.F32, o + j, a * inv);
            }
        }

        private void l2Row(int i) {
            long o = (long) i * c;
            float n = (float) Math.max(Math.sqrt(dot(out, o, out, o, c)), 1e-12);
            float inv = 1f / n;
            int j = 0;
            for (int bound = S.loopBound(c); j < bound; j += L) load(out, o + j).mul(inv).intoMemorySegment(out, (o + j) * 4, LE);
            for (; j < c; j++) out.setAtIndex(Tensor.F32, o + j, out.getAtIndex(Tensor.F32, o + j) * inv);
        }

        private void shrinkRow(int i) {
            int sg = lin.seg[i];
            if (sg >= 0) loraShrink(lin.lora, sg, i, lin.x, lin.in, lin.v, i * lin.vStride);
        }
    }

    // ---------------------------------------------------------------- training (backward): CpuTraining

    @Override public void gelu(Tensor out, Tensor x, int rows) { training.gelu(out, x, rows, false, null); }

    @Override public void geluBackward(Tensor dx, Tensor dy, Tensor x, int rows) { training.gelu(dx, x, rows, true, dy); }

    @Override
    public void linearBackward(Tensor dx, boolean accumulate, Tensor dy, Tensor x, int rows, Tensor w, Lora lora) {
        training.linearBackward(dx, accumulate, dy, x, rows, w, lora);
    }

    @Override
    public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        training.attentionBackward(dq, dk, dv, dout, q, k, v, batch, heads);
    }

    @Override
    public void addLayerNormBackward(Tensor dsum, Tensor dy, Tensor x, Tensor residual, int rows, Tensor gamma, float eps) {
        training.addLayerNormBackward(dsum, dy, x, residual, rows, gamma, eps);
    }

    @Override public void poolBackward(Tensor dh, Tensor dpooled, Batch batch, Pooling mode) { training.poolBackward(dh, dpooled, batch, mode); }

    @Override public void l2NormalizeBackward(Tensor dx, Tensor dy, Tensor x, int rows) { training.l2NormalizeBackward(dx, dy, x, rows); }

    @Override public void add(Tensor dst, Tensor src, long n) { training.add(dst, src, n); }

    @Override public void copy(Tensor dst, Tensor src, long n) { MemorySegment.copy(src.data, 0, dst.data, 0, n * 4); }
}
