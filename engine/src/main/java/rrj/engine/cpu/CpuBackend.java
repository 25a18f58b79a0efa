package rrj.engine.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
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
 * broadcast form (Goto/BLIS, MLAS): W is repacked once, on its first use, into panels of
 * {@code NR = 2·L} output columns laid out k-major ({@link Packed}: panel p holds
 * {@code W[p·NR + j, k]} at {@code (p·K + k)·NR + j}); x is repacked per call into tiles of
 * {@code MR = 6} rows, also k-major ({@link XTiles}). The 6×NR micro-kernel ({@link #kernel})
 * keeps 12 vector accumulators (with the two W vectors and a broadcast, all 16 AVX2 registers),
 * and per k does 2 contiguous vector loads of W, 6 broadcasts of x and 12 FMAs — no lane
 * reductions. Every tile and panel is its own exact {@link MemorySegment} slice indexed from 0,
 * which lets C2 drop the bounds checks from the loop. The threads split (row block × panel
 * group) chunks: with enough rows, row blocks whose x tiles stay in L2 while the panels stream
 * past (each chunk packs its block's tiles); with few rows (a query), groups of panels (each
 * thread packs all of x once per call). Tiles are per thread, never shared between cores. K beyond
 * {@link #KC} is summed in blocks. The bias joins the accumulators before the first store;
 * GELU and the LoRA expand run on the 6×NR tile right after, while it is in L1. The mapped
 * [out, in] weight stays the source of truth; the dot form that reads it in place (3×4 tile
 * over W rows, lanes reduced per output) is kept as the fallback
 * ({@code new CpuBackend(threads, false)}) and is tested like the fast path.
 *
 * <p><b>Attention</b> per (sequence, head), 16 queries at a time on the vector lanes: K (in
 * 6-key tiles) and Q (scaled by 1/√D, one 16-query panel) are packed into the GEMM layouts and
 * {@code Sᵀ = K·Qᵀ} runs on the micro-kernel; the softmax over keys is element-wise down the
 * rows (vector {@link #exp}, no lane reductions); {@code Oᵀ = Vᵀ·Pᵀ} runs on the micro-kernel
 * again with P as it is, and 1/Σ is applied as Oᵀ is written back ({@link AttentionTask}).
 * Inference hands it q, k, v head-major ([heads][N][D], {@link #linearHeadMajor}: the GEMM stores
 * each tile at its head-major place), so each head's rows are one contiguous run; the three
 * projections run as one GEMM over the three weights' panels when none has a LoRA segment
 * ({@link #linearsHeadMajor}).
 *
 * <p><b>JIT shape.</b> C2 stops inlining when one compilation passes its node budget; a Vector
 * API call left out-of-line boxes its vectors and runs 10–50× slower. Hot vector code therefore
 * lives in methods C2 compiles on their own (too many bytecodes to be inlined, like the
 * micro-kernels and {@code AttentionTask.queryPanel}) and stays small enough for C2's node
 * budget; {@code bench/check-inlining.sh} lists every cut-off in a C2 compilation of our
 * methods (run it after changing a kernel, several times: whether a compilation passes the
 * budget can depend on compile timing). No lane reinterpretation ({@code reinterpretAs…},
 * {@code viewAs…}) anywhere in the process: before C2 compiles it, it stores into a heap
 * segment and widens the type profile of every vector store (see {@link #exp}).
 *
 * <p>Determinism: the same inputs give the same bits on every call, before and after the JIT
 * compiles the kernels (no {@code reduceLanes(ADD)}, see {@link #sum}), whatever the thread
 * count or chunking (every output element is computed by one thread in a fixed order).
 *
 * <p>Not thread-safe: one op at a time per backend instance (the kernels reuse their task
 * objects and scratch); callers that serve many threads batch requests into one forward pass.
 * Base weights are assumed frozen once used (the packed copy is not refreshed if the mapped
 * weight changes); LoRA A/B are read in place on every call, so they may change.
 *
 * <p>Not here: reduced-precision weights (measured, bench/README.md); a fused QKV with LoRA
 * (an adapted pass issues Q, K, V as three linears so that the LoRA targets stay separate).
 */
public final class CpuBackend implements Backend {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    static final int NB = 64;     // dot form: W rows per work block
    static final int MR = 6;      // broadcast form: rows per micro-tile
    static final int NR = 2 * L;  // broadcast form: output columns per panel (16 with AVX2)
    // x tiles of one row block: 512 KB, one core's whole L2 on the EPYC it was tuned on (W panels
    // stream past and are reused by every tile of the block). Measured there (A/B in one JVM,
    // 2 threads, median of per-round ratios): 512 KB with KC 1536 runs 4096 × 768 → 3072 6-12 %
    // faster than 160 KB with KC 768, 4096 × 768 → 768 3 %, and is neutral (±3 %) at 3072 → 768
    // and the MiniLM shapes; a smaller KC (128-384) was 5-20 % slower. Again on 2026-11-27, at
    // 4096 × 768 → 3072: blocks of 128 / 256 / 384 KB ran 0.91 / 0.96 / 1.00× of 512 KB.
    static final int X_BLOCK_BYTES = 512 * 1024;
    static final int KC = 1536;   // K block: a longer K (BERT-large FFN down, 4096) is summed in blocks so the x block stays in L2

    /** Number of K blocks for an input width. */
    static int kBlocks(int in) { return (in + KC - 1) / KC; }

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
        gemmTask.xCache = new XTiles[threads][4];
        gemmTask.packedCall = new int[threads];
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
     * The view's segment is {@link #plain}: the same memory, nothing copied.
     */
    @Override
    public Tensor weight(Tensor hostWeight) {
        Tensor f = hostWeight.toF32();
        return new Tensor(DType.F32, f.shape(), plain(f.data));
    }

    /** The class of an ordinary native segment (what {@link #allocate} and the arenas hand out). */
    private static final Class<?> NATIVE_SEGMENT = Arena.global().allocate(4).getClass();

    /**
     * The segment as an ordinary native segment: a memory-mapped file's segment (another
     * implementation class) becomes a view of the same memory with the same scope — nothing is
     * copied. Why: C2 compiles the Vector API's memory access for the segment classes it has seen
     * at each JDK call site; once mapped and native segments both flow through them, every kernel
     * gets type checks on its hot loads, and the GEMM runs at about half speed (measured: the real
     * mmap'd model took 3.2 s where random in-memory weights took 1.7 s for the same forward pass).
     */
    static MemorySegment plain(MemorySegment m) {
        if (m == null || m.getClass() == NATIVE_SEGMENT) return m;
        if (m.isNative()) return m.reinterpret(m.byteSize());
        MemorySegment copy = Arena.ofAuto().allocate(m.byteSize(), 64); // a heap segment (rare): copied once
        copy.copyFrom(m);
        return copy;
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

    /**
     * Σ of the lanes, in lane order. Not {@code reduceLanes(ADD)}: C2's intrinsic adds in a
     * tree, the interpreter in lane order, so a forward pass would round differently before and
     * after the JIT compiles it (measured: 38 of 1000 random vectors differ). Same inputs must
     * give the same bits on every call.
     */
    static float sum(FloatVector v) {
        float s = v.lane(0);
        for (int i = 1; i < L; i++) s += v.lane(i);
        return s;
    }

    static float dot(MemorySegment a, long ai, MemorySegment b, long bi, int n) {
        FloatVector acc = FloatVector.zero(S);
        int k = 0;
        for (int bound = S.loopBound(n); k < bound; k += L) acc = load(a, ai + k).fma(load(b, bi + k), acc);
        float s = sum(acc);
        for (; k < n; k++) s += a.getAtIndex(Tensor.F32, ai + k) * b.getAtIndex(Tensor.F32, bi + k);
        return s;
    }

    /**
     * The LoRA shrink of one row: {@code v[vo + k] = A[k]·x̃} for k < r, where x̃ is row
     * {@code row} of x, times the segment's dropout mask while training.
     */
    static void loraShrink(Lora lora, int sg, int row, MemorySegment x, int in, float[] v, int vo) {
        Tensor a = lora.a[sg];
        if (a.data.getClass() != NATIVE_SEGMENT) a = new Tensor(DType.F32, a.shape(), plain(a.data)); // not from weight()
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
        return x.mul(0.5f).mul(erf(x.mul(0.70710678118654752f)).add(1f));
    }

    /** erf(z), {@link Erf#erfFast}'s rational approximation (z clamped to [−4, 4], where |erf| rounds to 1). */
    static FloatVector erf(FloatVector x) {
        FloatVector z = x.max(-4f).min(4f);
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
        return p.div(q);
    }

    /**
     * e^x lane-wise for x ≤ 0 (softmax's arguments) as 2^t, t = x·log₂e: n = t rounded to the
     * nearest integer (by adding and subtracting 1.5·2²³), f = t − n ∈ [−½, ½] computed from x
     * with log₂e split in two (two FMAs, so f does not inherit the rounding of t), 2^f by its
     * degree-6 Taylor polynomial (truncation ≤ 1.2e−7 at |f| = ½), times 2^n made as the float
     * of the integer 1 << (n + 30) (the polynomial's coefficients carry the 2^−30: exact).
     * Relative error ≤ 2.2e−7 against Math.exp over [−20.7, 0]; e^0 is exactly 1. x is clamped
     * at −30·ln 2 ≈ −20.79 (n ≥ −30), so anything below, −∞ included, gives e^−20.79 ≈ 9.3e−10
     * (2^−30): in a softmax, whose largest term is e^0 = 1, that moves Σ by at most 9.3e−10 per
     * key (2.4e−7 relative with 256 keys, all of them 21 below the largest).
     *
     * <p>Why not the usual bit trick (n added to the exponent bits with {@code
     * reinterpretAsInts}): until C2 compiles the caller, the Vector API runs a reinterpretation
     * as a store into a {@code byte[]} segment, and that store enters the one JDK method that every
     * vector store into a segment goes through. With a heap segment in that method's type profile,
     * C2 compiled the GEMM micro-kernel with two receiver types per store, passed its node budget
     * and left stores as calls that box their vectors (bench/check-inlining.sh e: in 5 of 7
     * runs), which depends on compile timing and lasts for the JVM's life (one such `rr bench`
     * run: the routed query 2.1× and the batches ~1.2× slower than in the others). Casts (F2I,
     * I2F) run without segments. Going through a native scratch vector instead made the
     * attention 0.70× as fast.
     */
    static FloatVector exp(FloatVector x) {
        x = x.max(EXP_MIN);
        FloatVector tm = x.mul(LOG2E).add(MAGIC);             // n + 1.5·2²³, n = round(t)
        FloatVector f = MAGIC.sub(tm);                        // −n
        f = x.fma(LOG2E_HI, f);                               // t − n with log₂e's float
        f = x.fma(LOG2E_LO, f);                               // … and the rest of log₂e
        FloatVector p = EXP_C6.fma(f, EXP_C5).fma(f, EXP_C4).fma(f, EXP_C3).fma(f, EXP_C2).fma(f, EXP_C1).fma(f, EXP_C0);
        // 2^(n + 30) = float(1 << (n + 30)), n + 30 ∈ [0, 30]: tm − 1.5·2²³ + 30 is that integer, exactly
        IntVector k = (IntVector) tm.sub(MAGIC_30).convert(VectorOperators.F2I, 0);
        return p.mul((FloatVector) ONES.lanewise(VectorOperators.LSHL, k).convert(VectorOperators.I2F, 0));
    }

    // exp's constants as vectors made once: a broadcast written inside exp is hoisted by C2 only
    // after parsing, and until then every one counts against queryPanel's node budget
    private static final FloatVector EXP_MIN = FloatVector.broadcast(S, -20.79f);
    private static final FloatVector LOG2E = FloatVector.broadcast(S, 1.44269504088896341f);
    private static final FloatVector LOG2E_HI = FloatVector.broadcast(S, 1.44269502162933349609375f);
    private static final FloatVector LOG2E_LO = FloatVector.broadcast(S, 1.925962991e-8f);
    private static final FloatVector MAGIC = FloatVector.broadcast(S, 12582912f);          // 1.5·2²³
    private static final FloatVector MAGIC_30 = FloatVector.broadcast(S, 12582912f - 30f);
    // 2^−30·(ln 2)^k / k!: the Taylor coefficients of 2^f, carrying the 2^−30 of 2^(n + 30)
    private static final FloatVector EXP_C6 = FloatVector.broadcast(S, 0x1p-30f * 1.5403530393381606e-4f);
    private static final FloatVector EXP_C5 = FloatVector.broadcast(S, 0x1p-30f * 1.3333558146428443e-3f);
    private static final FloatVector EXP_C4 = FloatVector.broadcast(S, 0x1p-30f * 9.618129107628477e-3f);
    private static final FloatVector EXP_C3 = FloatVector.broadcast(S, 0x1p-30f * 5.550410866482158e-2f);
    private static final FloatVector EXP_C2 = FloatVector.broadcast(S, 0x1p-30f * 2.402265069591007e-1f);
    private static final FloatVector EXP_C1 = FloatVector.broadcast(S, 0x1p-30f * 6.931471805599453e-1f);
    private static final FloatVector EXP_C0 = FloatVector.broadcast(S, 0x1p-30f);
    private static final IntVector ONES = IntVector.broadcast(S.withLanes(int.class), 1);

    // ---------------------------------------------------------------- linear

    /**
     * W [out, in] repacked for the broadcast-form GEMM: {@code panels} panels of NR columns,
     * each k-major ({@code data[(p·in + k)·NR + j] = W[p·NR + j, k]}); columns past {@code out}
     * in the last panel are zero. Lives as long as the weight tensor that holds it.
     */
    static final class Packed {
        final MemorySegment source; // the [out, in] data it was packed from
        final MemorySegment data;
        final MemorySegment[] panel; // panel p as its own exact slice [in, NR]: the kernels index it from 0
        final MemorySegment[][] panelK; // [p][kb]: rows [kb·KC, +KC) of panel p, exact slices
        final int out, in, panels;
        Packed transposed; // Wᵀ's panels, for linear's backward (packed on its first use)
        Fused fused;       // this weight's panels followed by others' (linearsHeadMajor), made on first use

        Packed(MemorySegment source, int out, int in) {
            this.source = source;
            this.out = out;
            this.in = in;
            this.panels = (out + NR - 1) / NR;
            this.data = Arena.ofAuto().allocate((long) panels * in * NR * 4, 64);
            this.panel = new MemorySegment[panels];
            for (int p = 0; p < panels; p++) panel[p] = data.asSlice((long) p * in * NR * 4, (long) in * NR * 4);
            this.panelK = new MemorySegment[panels][kBlocks(in)];
            for (int p = 0; p < panels; p++)
                for (int b = 0; b < panelK[p].length; b++)
                    panelK[p][b] = panel[p].asSlice((long) b * KC * NR * 4, (long) Math.min(KC, in - b * KC) * NR * 4);
        }

        /** The panels of several weights of the same input width, one after another (no copy). */
        Packed(Packed[] parts) {
            this.source = null;
            this.data = null;
            this.in = parts[0].in;
            int o = 0, n = 0;
            for (Packed p : parts) { o += p.out; n += p.panels; }
            this.out = o;
            this.panels = n;
            this.panel = new MemorySegment[n];
            this.panelK = new MemorySegment[n][];
            int i = 0;
            for (Packed p : parts)
                for (int q = 0; q < p.panels; q++, i++) { panel[i] = p.panel[q]; panelK[i] = p.panelK[q]; }
        }
    }

    /** Weights fused for {@link #linearsHeadMajor}: their panels in a row and their biases in one vector. */
    static final class Fused {
        final Packed[] parts;
        final MemorySegment[] biasSources; // identity of the bias tensors' data (null: none)
        final Packed packed;
        final MemorySegment bias;          // null when no part has one

        Fused(Packed[] parts, Tensor[] bias) {
            this.parts = parts;
            this.packed = new Packed(parts);
            this.biasSources = new MemorySegment[parts.length];
            boolean any = false;
            for (int j = 0; j < parts.length; j++) {
                biasSources[j] = bias[j] == null ? null : bias[j].data;
                any |= bias[j] != null;
            }
            if (!any) { this.bias = null; return; }
            this.bias = Arena.ofAuto().allocate((long) packed.out * 4, 64);
            long o = 0;
            for (int j = 0; j < parts.length; j++) {
                if (bias[j] != null) MemorySegment.copy(plain(bias[j].data), 0, this.bias, o * 4, (long) parts[j].out * 4);
                o += parts[j].out;
            }
        }

        boolean matches(Packed[] packed, Tensor[] bias) {
            if (packed.length != parts.length) return false;
            for (int j = 0; j < parts.length; j++)
                if (packed[j] != parts[j] || biasSources[j] != (bias[j] == null ? null : bias[j].data)) return false;
            return true;
        }
    }

    /**
     * Scratch for x packed in tiles of MR rows, k-major ({@code tile[t][k·MR + r] = x[(t0 + t)·MR + r, k]},
     * t0 the first tile of the chunk's row block, 0 for a query), one per thread and input width K
     * (a BERT layer has two: C and F), each tile its own exact slice.
     */
    static final class XTiles {
        final int in;
        final MemorySegment[] tile;
        final MemorySegment[][] tileK; // [t][kb]: k in [kb·KC, +KC) of tile t, exact slices

        XTiles(int in, int tiles) {
            this.in = in;
            MemorySegment data = Arena.ofAuto().allocate((long) tiles * MR * in * 4, 64);
            tile = new MemorySegment[tiles];
            tileK = new MemorySegment[tiles][kBlocks(in)];
            for (int t = 0; t < tiles; t++) {
                tile[t] = data.asSlice((long) t * MR * in * 4, (long) MR * in * 4);
                for (int b = 0; b < tileK[t].length; b++)
                    tileK[t][b] = tile[t].asSlice((long) b * KC * MR * 4, (long) Math.min(KC, in - b * KC) * MR * 4);
            }
        }
    }

    @Override
    public void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu) {
        linear(y, x, rows, w, bias, lora, gelu, 0);
    }

    /** Head-major output needs the packed path and panels that never straddle a head (NR divides D). */
    @Override
    public boolean supportsHeadMajor(int headDim) { return packWeights && headDim > 0 && headDim % NR == 0; }

    private void requireHeadMajor(int headDim) {
        if (!supportsHeadMajor(headDim))
            throw new UnsupportedOperationException("the head-major layout needs packed weights and a head size that is a multiple of " + NR + ", got " + headDim);
    }

    /** Where element (row i, column o) of a [rows, out] output lives: row-major, or head-major when hd > 0. */
    static long outputOffset(int i, int o, int rows, int out, int hd) {
        return hd == 0 ? (long) i * out + o : ((long) (o / hd) * rows + i) * hd + o % hd;
    }

    @Override
    public void linearHeadMajor(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, int headDim) {
        requireHeadMajor(headDim);
        if (w.dim(0) % headDim != 0) throw new IllegalArgumentException("linear weight " + w + " has no whole heads of " + headDim);
        linear(y, x, rows, w, bias, lora, false, headDim);
    }

    @Override
    public void linearsHeadMajor(Tensor y, Tensor x, int rows, Tensor[] w, Tensor[] bias, int headDim) {
        requireHeadMajor(headDim);
        if (w.length == 0 || bias.length != w.length) throw new IllegalArgumentException(w.length + " weights and " + bias.length + " biases");
        long out = 0;
        for (int j = 0; j < w.length; j++) {
            if (w[j].dim(0) % headDim != 0) throw new IllegalArgumentException("linear weight " + j + " " + w[j] + " has no whole heads of " + headDim);
            if (w[j].dim(1) != w[0].dim(1)) throw new IllegalArgumentException("linear weights " + w[0] + " and " + w[j] + " read different input widths");
            out += w[j].dim(0);
        }
        if (y.data.byteSize() < (long) rows * out * 4) throw new IllegalArgumentException("output " + y + " has no room for " + rows + " rows of " + out);
        if (rows <= 0) return;
        boolean packedAll = true;
        for (Tensor t : w) packedAll &= t.device instanceof Packed p && p.source == t.data;
        if (!packedAll && rows < COLD_ROWS && coldCalls > 0) { // cold: one linear each, into its part of y
            long o = 0;
            for (int j = 0; j < w.length; j++) {
                long n = rows * w[j].dim(0);
                linear(new Tensor(DType.F32, new long[]{rows, w[j].dim(0)}, y.data.asSlice(o * 4, n * 4)), x, rows, w[j], bias[j], null, false, headDim);
                o += n;
            }
            return;
        }
        Packed[] parts = fusedParts;
        if (parts.length != w.length) parts = fusedParts = new Packed[w.length];
        for (int j = 0; j < w.length; j++) parts[j] = packed(w[j]);
        Fused f = parts[0].fused;
        if (f == null || !f.matches(parts, bias)) f = parts[0].fused = new Fused(parts.clone(), bias);
        gemm(y.data, x.data, rows, f.packed, f.bias, null, false, false, headDim);
        Arrays.fill(parts, null);
    }

    private Packed[] fusedParts = new Packed[3];

    /** {@code headDim} > 0: y is written head-major, [out / headDim][rows][headDim]. */
    private void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu, int headDim) {
        if (rows <= 0) return;
        Lora ad = lora != null && lora.count > 0 ? lora : null;
        if (!packWeights) {
            LinearTask t = linearTask;
            t.y = y.data; t.x = x.data; t.w = plain(w.toF32().data); t.bias = bias == null ? null : plain(bias.data);
            t.rows = rows; t.out = (int) w.dim(0); t.in = (int) w.dim(1); t.gelu = gelu;
            t.lora = ad;
            if (ad != null) shrink(t, ad);
            pool.run(t, (t.out + NB - 1) / NB);
            t.y = t.x = t.w = t.bias = null;
            t.lora = null;
            return;
        }
        MemorySegment b = bias == null ? null : plain(bias.data);
        if (rows < COLD_ROWS && coldCalls > 0 && !(w.device instanceof Packed p && p.source == w.data)) {
            coldCalls--;
            coldLinear(y.data, x.data, rows, w, b, ad, gelu, headDim);
            return;
        }
        gemm(y.data, x.data, rows, packed(w), b, ad, gelu, false, headDim);
    }

    /** Linear calls left to {@link #coldLinear}: about two passes of a 6-layer model (package-private: tests set it). */
    int coldCalls = 64;
    /** {@link #coldLinear} takes fewer rows than this: a query of up to 17 tokens (three row tiles). */
    static final int COLD_ROWS = 3 * MR;

    /**
     * A linear of fewer than {@link #COLD_ROWS} rows on a weight not packed yet, while the JVM is
     * cold (the first {@link #coldCalls} such calls: the first passes of a process, e.g. `rr embed
     * "hello"`): scalar loops over W read in place, which C1 compiles within the first call,
     * instead of packing W (42 MB for MiniLM) and running the Vector API in the interpreter. The
     * result is bit-identical to the packed path's: per output, the micro-kernel lane's FMA chain
     * in k order — for a full tile (whole row tile, whole panel) from the bias, per K block, later
     * blocks added to y; for an edge tile from 0 over all of K, the bias added after — then the
     * epilogue's LoRA expand and GELU in the same order and form (vector lanes, or the scalar tail
     * past the last whole vector of a partial panel). CpuColdLinearTest checks the bits.
     */
    private void coldLinear(MemorySegment y, MemorySegment x, int rows, Tensor w, MemorySegment bias, Lora ad, boolean gelu, int headDim) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        GemmTask g = gemmTask;
        if (ad != null) { // the shrink v = A·x and Bᵀ·scale, as the packed path prepares them
            g.x = x; g.rows = rows; g.in = in; g.out = out; g.panels = (out + NR - 1) / NR; g.lora = ad;
            g.prepareLora(ad);
        }
        ColdTask t = coldTask;
        t.y = y; t.x = x; t.w = plain(w.toF32().data); t.bias = bias; t.lora = ad; t.gelu = gelu;
        t.rows = rows; t.out = out; t.in = in; t.panels = (out + NR - 1) / NR; t.hd = headDim;
        pool.run(t, t.chunks = Math.min(t.panels, pool.threads() * 2)); // panels split over the threads
        t.y = t.x = t.w = t.bias = null;
        t.lora = null;
        g.x = null;
        g.lora = null;
    }

    private final ColdTask coldTask = new ColdTask();

    /** {@link #coldLinear}'s loops; a chunk is a run of NR-column panels. */
    final class ColdTask implements Parallel.Task {
        MemorySegment y, x, w, bias;
        Lora lora;
        boolean gelu;
        int rows, out, in, panels, chunks;
        int hd; // > 0: y head-major, [out / hd][rows][hd] (as GemmTask.hd)

        @Override
        public void run(int chunk, int worker) {
            int p0 = (int) ((long) panels * chunk / chunks), p1 = (int) ((long) panels * (chunk + 1) / chunks);
            for (int p = p0; p < p1; p++) panel(p * NR);
        }

        private void panel(int o0) {
            GemmTask g = gemmTask;
            int fullRows = rows / MR * MR, fullCols = out / NR * NR;
            int cols = Math.min(NR, out - o0), vb = cols == NR ? NR : S.loopBound(cols);
            for (int i = 0; i < rows; i++) {
                int sg = lora == null ? -1 : g.seg[i];
                long xo = (long) i * in;
                for (int c = 0; c < cols; c++) {
                    int o = o0 + c;
                    long wo = (long) o * in;
                    float a;
                    if (i < fullRows && o < fullCols) { // a full tile: from the bias, K block by K block
                        a = bias != null ? bias.getAtIndex(Tensor.F32, o) : 0f;
                        for (int k = 0, k1 = Math.min(KC, in); k < k1; k++) a = Math.fma(x.getAtIndex(Tensor.F32, xo + k), w.getAtIndex(Tensor.F32, wo + k), a);
                        for (int k0 = KC; k0 < in; k0 += KC) {
                            float part = 0f;
                            for (int k = k0, k1 = Math.min(k0 + KC, in); k < k1; k++) part = Math.fma(x.getAtIndex(Tensor.F32, xo + k), w.getAtIndex(Tensor.F32, wo + k), part);
                            a = a + part;
                        }
                    } else { // an edge tile: from 0 over all of K, then the bias
                        a = 0f;
                        for (int k = 0; k < in; k++) a = Math.fma(x.getAtIndex(Tensor.F32, xo + k), w.getAtIndex(Tensor.F32, wo + k), a);
                        if (bias != null) a += bias.getAtIndex(Tensor.F32, o);
                    }
                    if (sg >= 0) {
                        int r = (int) lora.a[sg].dim(0), bo = g.btOff[sg] + o, vo = i * g.vStride;
                        if (c < vb) { float e = 0f; for (int k = 0; k < r; k++) e = Math.fma(g.bt[bo + k * g.outPad], g.v[vo + k], e); a += e; }
                        else for (int k = 0; k < r; k++) a += g.v[vo + k] * g.bt[bo + k * g.outPad];
                    }
                    if (gelu) a = c < vb ? geluLane(a) : CpuBackend.gelu(a);
                    y.setAtIndex(Tensor.F32, outputOffset(i, o, rows, out, hd), a);
                }
            }
        }
    }

    /** One lane of {@link #gelu(FloatVector)}, bit for bit (fused multiply-adds where it has them). */
    static float geluLane(float x) {
        float z = Math.min(Math.max(x * 0.70710678118654752f, -4f), 4f), z2 = z * z;
        float p = Erf.A13;
        p = Math.fma(p, z2, Erf.A11);
        p = Math.fma(p, z2, Erf.A9);
        p = Math.fma(p, z2, Erf.A7);
        p = Math.fma(p, z2, Erf.A5);
        p = Math.fma(p, z2, Erf.A3);
        p = Math.fma(p, z2, Erf.A1);
        p = p * z;
        float q = Erf.B8;
        q = Math.fma(q, z2, Erf.B6);
        q = Math.fma(q, z2, Erf.B4);
        q = Math.fma(q, z2, Erf.B2);
        q = Math.fma(q, z2, Erf.B0);
        return x * 0.5f * (p / q + 1f);
    }

    /**
     * y (+)= x·Wᵀ over W's packed panels, with the fused epilogue (bias, LoRA, GELU; none of
     * them with {@code accumulate}, which adds the product to what y holds).
     */
    private void gemm(MemorySegment y, MemorySegment x, int rows, Packed p, MemorySegment bias, Lora ad, boolean gelu, boolean accumulate, int headDim) {
        GemmTask g = gemmTask;
        g.y = y; g.x = x; g.bias = bias; g.w = p.panel; g.wk = p.panelK; g.accumulate = accumulate;
        g.rows = rows; g.out = p.out; g.in = p.in; g.panels = p.panels; g.gelu = gelu;
        g.tiles = (rows + MR - 1) / MR;
        g.hd = headDim;
        g.ld = headDim == 0 ? p.out : headDim;
        g.lora = ad;
        if (ad != null) g.prepareLora(ad);
        // Enough rows: chunks are row blocks (x tiles sized for L2, W panels stream past), and each
        // chunk packs its block's x tiles. Few rows (a query): the chunks split the panels, and each
        // thread packs all of x, once per call. Either way into tiles of the thread's own: tiles
        // written by one core and read (or next written) by the other move between the cores'
        // caches line by line; per-thread tiles made whole passes 1.02-1.04× faster, bit-identical
        // (in-JVM A/B, bench/README.md, "seventh session").
        int want = pool.threads() == 1 ? 1 : pool.threads() * 4;
        int groups;
        if (g.tiles >= want) {
            int l2 = Math.max(1, X_BLOCK_BYTES / (MR * Math.min(g.in, KC) * 4));
            g.blockTiles = Math.min(l2, (g.tiles + want - 1) / want);
            g.packInChunk = true;
            groups = 1;
        } else {
            g.blockTiles = g.tiles;
            g.packInChunk = false;
            groups = Math.min(g.panels, want);
        }
        g.call++;
        g.rowBlocks = (g.tiles + g.blockTiles - 1) / g.blockTiles;
        g.groupPanels = (g.panels + groups - 1) / groups;
        groups = (g.panels + g.groupPanels - 1) / g.groupPanels;
        pool.run(g, g.rowBlocks * groups);
        g.y = g.x = g.bias = null;
        g.w = null;
        g.wk = null;
        g.lora = null;
    }

    /** The packed panels of {@code w}, packing them on first use (in parallel; once per weight). */
    private Packed packed(Tensor w) {
        if (w.device instanceof Packed p && p.source == w.data) return p;
        if (w.rank() != 2) throw new IllegalArgumentException("linear weight must be [out, in], got " + w);
        Tensor f = w.toF32();
        Packed p = new Packed(w.data, (int) w.dim(0), (int) w.dim(1));
        packTask.w = plain(f.data); packTask.p = p;
        pool.run(packTask, p.panels);
        packTask.w = null; packTask.p = null;
        w.device = p;
        return p;
    }

    /**
     * The panels of Wᵀ, for linear's backward: dx = dy·W is the linear dy → dx whose weight is
     * Wᵀ [in, out], so panel p holds W[o, p·NR + j] at [o·NR + j]. Packed on first use, kept
     * beside {@link #packed}'s panels (training doubles the weights' packed memory).
     */
    private Packed packedTransposed(Tensor w) {
        Packed f = packed(w);
        if (f.transposed != null) return f.transposed;
        Packed t = new Packed(f.source, f.in, f.out);
        packTask.w = plain(w.toF32().data); packTask.p = t; packTask.transpose = true;
        pool.run(packTask, t.panels);
        packTask.w = null; packTask.p = null; packTask.transpose = false;
        return f.transposed = t;
    }

    /** Repacks W [out, in] into k-major panels (or Wᵀ's: {@code transpose}); a chunk is one panel. */
    static final class PackTask implements Parallel.Task {
        MemorySegment w;
        Packed p;
        boolean transpose;

        @Override
        public void run(int panel, int worker) {
            int in = p.in, o0 = panel * NR;
            long base = (long) panel * in * NR;
            if (transpose) { // p.in = W's out, p.out = W's in: panel column j is W's column o0 + j
                int cols = Math.min(NR, p.out - o0);
                for (int k = 0; k < in; k++) {
                    long src = (long) k * p.out + o0, dst = base + (long) k * NR;
                    if (cols == NR) { store(load(w, src), p.data, dst); store(load(w, src + L), p.data, dst + L); }
                    else for (int j = 0; j < NR; j++) p.data.setAtIndex(Tensor.F32, dst + j, j < cols ? w.getAtIndex(Tensor.F32, src + j) : 0f);
                }
                return;
            }
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

    /** The broadcast-form GEMM with its fused epilogue; a chunk is (row block × panel group). */
    final class GemmTask implements Parallel.Task {
        boolean packInChunk;          // each chunk packs its row block's x tiles first
        boolean accumulate;           // y += x·Wᵀ (no epilogue) instead of y = …
        MemorySegment y, x, bias;
        MemorySegment[] w;            // the packed panels of W, [in, NR] each
        MemorySegment[][] wk;         // the same per K block
        XTiles[][] xCache = new XTiles[1][4]; // per worker (only it touches its row): x tile scratch per input width
        int[] packedCall = new int[1];        // few rows: the call whose x the worker's tiles hold
        int call;
        int rows, out, in, panels, tiles, blockTiles, rowBlocks, groupPanels;
        boolean gelu;
        int hd;                       // > 0: y head-major, [out / hd][rows][hd] (hd a multiple of NR)
        int ld;                       // y's row stride: out, or hd when head-major
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

        /** The x tile scratch for width {@code in} with room for {@code tiles} tiles (grown, never shrunk). */
        XTiles xTiles(int in, int tiles, int worker) {
            XTiles[] cache = xCache[worker];
            int slot = -1;
            for (int i = 0; i < cache.length; i++) {
                if (cache[i] != null && cache[i].in == in) { slot = i; break; }
                if (cache[i] == null && slot < 0) slot = i;
            }
            if (slot < 0) slot = 0; // more widths than slots: replace the first
            XTiles c = cache[slot];
            if (c == null || c.in != in || c.tile.length < tiles) cache[slot] = c = new XTiles(in, Math.max(tiles, c != null && c.in == in ? c.tile.length * 2 : 1));
            return c;
        }

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
            rowsTask.chunks = chunksFor(rows, in * maxR);
            pool.run(rowsTask, rowsTask.chunks);
            rowsTask.gemm = null;
        }

        void shrinkRow(int i) {
            int sg = seg[i];
            if (sg >= 0) loraShrink(lora, sg, i, x, in, v, i * vStride);
        }

        @Override
        public void run(int chunk, int worker) {
            int rb = chunk % rowBlocks, pg = chunk / rowBlocks;
            int t0 = rb * blockTiles, t1 = Math.min(tiles, t0 + blockTiles);
            XTiles mine = xTiles(in, blockTiles, worker); // its tile j holds x's tile t0 + j (t0 = 0 with few rows)
            if (packInChunk) packX(mine.tile, t0, t1);
            else if (packedCall[worker] != call) { packX(mine.tile, 0, tiles); packedCall[worker] = call; }
            MemorySegment[] xp = mine.tile;
            MemorySegment[][] xk = mine.tileK;
            int p0 = pg * groupPanels, p1 = Math.min(panels, p0 + groupPanels);
            MemorySegment e = edge[worker];
            // full tiles: K blocks outermost, so the block's x tiles (for this K range) stay in L2
            // while the panels stream past; the last K block finishes each tile (epilogue)
            int kbs = wk[0].length;
            int tFull = Math.min(t1, rows / MR), pFull = Math.min(p1, out / NR);
            for (int kb = 0; kb < kbs; kb++) {
                int kl = Math.min(KC, in - kb * KC);
                boolean first = kb == 0 && !accumulate, last = kb == kbs - 1;
                for (int p = p0; p < pFull; p++) {
                    int o = p * NR;
                    MemorySegment wp = wk[p][kb];
                    long yo = yOff(0, o);
                    for (int t = t0; t < tFull; t++) {
                        long off = yo + (long) t * MR * ld;
                        if (first) { // the bias joins the accumulators before the first store
                            if (bias != null) kernel(xk[t - t0][kb], wp, kl, y, off, ld, bias, o);
                            else kernel(xk[t - t0][kb], wp, kl, y, off, ld);
                        } else { // a later K block: its partial sum into scratch, then added to y
                            kernel(xk[t - t0][kb], wp, kl, e, 0, NR);
                            addTile(e, y, off, ld);
                        }
                        if (last) epilogue(y, off, ld, t * MR, MR, o, NR, false);
                    }
                }
            }
            // edge tiles (rows past the last full tile, columns past the last full panel): whole K
            // into scratch, copy the valid part, then finish it in y
            for (int p = p0; p < p1; p++) {
                int o = p * NR, cols = Math.min(NR, out - o);
                for (int t = t0; t < t1; t++) {
                    if (t < tFull && p < pFull) continue;
                    int i = t * MR, n = Math.min(MR, rows - i);
                    // all 6 rows even for a tail of fewer (its x rows are packed as zeros): a
                    // 4-row kernel for the tail of a 16-token query (6 + 6 + 4) made the whole
                    // pass 1.11× slower than this (A/B in one JVM, 21 rounds)
                    kernel(xp[t - t0], w[p], in, e, 0, NR);
                    for (int r = 0; r < n; r++) {
                        long src = (long) r * NR, dst = yOff(i + r, o);
                        if (accumulate) {
                            if (cols == NR) { store(load(y, dst).add(load(e, src)), y, dst); store(load(y, dst + L).add(load(e, src + L)), y, dst + L); }
                            else for (int j = 0; j < cols; j++) y.setAtIndex(Tensor.F32, dst + j, y.getAtIndex(Tensor.F32, dst + j) + e.getAtIndex(Tensor.F32, src + j));
                        } else if (cols == NR) { store(load(e, src), y, dst); store(load(e, src + L), y, dst + L); }
                        else for (int j = 0; j < cols; j++) y.setAtIndex(Tensor.F32, dst + j, e.getAtIndex(Tensor.F32, src + j));
                    }
                    epilogue(y, yOff(i, o), ld, i, n, o, cols, true);
                }
            }
        }

        /** Where y's (row i, column o) lives; a panel's columns never cross a head (hd is a multiple of NR). */
        long yOff(int i, int o) { return outputOffset(i, o, rows, out, hd); }

        /** x rows of tiles [ta, tb) into xp[t - ta][k·MR + r] (rows past {@code rows} are zero). */
        void packX(MemorySegment[] xp, int ta, int tb) {
            for (int t = ta; t < tb; t++) {
                MemorySegment tile = xp[t - ta];
                for (int r = 0; r < MR; r++) {
                    int i = t * MR + r;
                    if (i < rows) {
                        MemorySegment src = x.asSlice((long) i * in * 4, (long) in * 4);
                        for (int k = 0; k < in; k++) tile.setAtIndex(Tensor.F32, (long) k * MR + r, src.getAtIndex(Tensor.F32, k));
                    } else {
                        for (int k = 0; k < in; k++) tile.setAtIndex(Tensor.F32, (long) k * MR + r, 0f);
                    }
                }
            }
        }

        /** bias, LoRA expand, GELU on the n×cols tile at {@code dst[off]} (row stride ld), rows i.., columns o.. */
        private void epilogue(MemorySegment dst, long off, int ld, int i, int n, int o, int cols, boolean addBias) {
            MemorySegment bias = addBias ? this.bias : null;
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

    /** NR zeros: the starting value of a tile's accumulators when there is no bias. */
    static final MemorySegment ZEROS = Arena.global().allocate(NR * 4L, 64);

    /** {@link #kernel(MemorySegment, MemorySegment, int, MemorySegment, long, int, MemorySegment, long)} from zero. */
    static void kernel(MemorySegment xt, MemorySegment wp, int k, MemorySegment dst, long off, int ld) {
        kernel(xt, wp, k, dst, off, ld, ZEROS, 0);
    }

    /**
     * The 6×NR micro-kernel: {@code dst[r, 0..NR) = init[io, +NR) + Σ_k xt[k·6 + r] · wp[k·NR, +NR)}
     * for r in [0, 6), written at {@code dst[off + r·ld]}. 12 accumulators stay in registers over
     * all of K; they start from {@code init} (the bias of a linear's first K block, else zeros).
     * {@code xt} and {@code wp} are exact slices indexed from 0 by the loop counter: that lets C2
     * drop the per-access bounds checks (measured: ~1.4× over offsets into the big segments).
     * (Adding a bias to the accumulators after the loop instead made the method too large for
     * C2's node budget: six of its twelve stores were left as calls that boxed their vectors —
     * bench/check-inlining.sh.)
     */
    static void kernel(MemorySegment xt, MemorySegment wp, int k, MemorySegment dst, long off, int ld, MemorySegment init, long io) {
        FloatVector c00 = load(init, io), c01 = load(init, io + L), c10 = c00, c11 = c01, c20 = c00, c21 = c01;
        FloatVector c30 = c00, c31 = c01, c40 = c00, c41 = c01, c50 = c00, c51 = c01;
        for (int kk = 0; kk < k; kk++) {
            long xo = kk * (MR * 4L), wo = kk * (NR * 4L);
            FloatVector b0 = FloatVector.fromMemorySegment(S, wp, wo, LE), b1 = FloatVector.fromMemorySegment(S, wp, wo + L * 4L, LE);
            FloatVector a = FloatVector.broadcast(S, xt.get(Tensor.F32, xo));
            c00 = a.fma(b0, c00); c01 = a.fma(b1, c01);
            a = FloatVector.broadcast(S, xt.get(Tensor.F32, xo + 4));
            c10 = a.fma(b0, c10); c11 = a.fma(b1, c11);
            a = FloatVector.broadcast(S, xt.get(Tensor.F32, xo + 8));
            c20 = a.fma(b0, c20); c21 = a.fma(b1, c21);
            a = FloatVector.broadcast(S, xt.get(Tensor.F32, xo + 12));
            c30 = a.fma(b0, c30); c31 = a.fma(b1, c31);
            a = FloatVector.broadcast(S, xt.get(Tensor.F32, xo + 16));
            c40 = a.fma(b0, c40); c41 = a.fma(b1, c41);
            a = FloatVector.broadcast(S, xt.get(Tensor.F32, xo + 20));
            c50 = a.fma(b0, c50); c51 = a.fma(b1, c51);
        }
        store(c00, dst, off); store(c01, dst, off + L); off += ld;
        store(c10, dst, off); store(c11, dst, off + L); off += ld;
        store(c20, dst, off); store(c21, dst, off + L); off += ld;
        store(c30, dst, off); store(c31, dst, off + L); off += ld;
        store(c40, dst, off); store(c41, dst, off + L); off += ld;
        store(c50, dst, off); store(c51, dst, off + L);
    }

    /**
     * {@code dst[off + r·ld, 0..NR) += tile[r, 0..NR)} for the 6 rows. (A kernel that starts
     * from dst instead of zero needs one vector register more than AVX2 has: C2 spills an
     * accumulator and the loop runs ~1.5× slower.)
     */
    static void addTile(MemorySegment tile, MemorySegment dst, long off, int ld) {
        for (int r = 0; r < MR; r++, off += ld) {
            store(load(dst, off).add(load(tile, (long) r * NR)), dst, off);
            store(load(dst, off + L).add(load(tile, (long) r * NR + L)), dst, off + L);
        }
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
        rowsTask.chunks = chunksFor(t.rows, t.in * maxR);
        pool.run(rowsTask, rowsTask.chunks);
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
            float s00 = sum(c00), s01 = sum(c01);
            float s02 = sum(c02), s03 = sum(c03);
            float s10 = sum(c10), s11 = sum(c11);
            float s12 = sum(c12), s13 = sum(c13);
            float s20 = sum(c20), s21 = sum(c21);
            float s22 = sum(c22), s23 = sum(c23);
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
            float s0 = sum(c0), s1 = sum(c1);
            float s2 = sum(c2), s3 = sum(c3);
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
        attention(out, q, k, v, batch, heads, false);
    }

    @Override
    public void attentionHeadMajor(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        requireHeadMajor((int) (q.numel() / q.dim(0)) / heads);
        attention(out, q, k, v, batch, heads, true);
    }

    private void attention(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads, boolean headMajor) {
        AttentionTask t = attentionTask;
        t.headMajor = headMajor;
        t.out = out.data; t.q = q.data; t.k = k.data; t.v = v.data; t.batch = batch; t.heads = heads;
        t.c = (int) (q.numel() / q.dim(0));
        t.d = t.c / heads;
        int threads = pool.threads();
        if (t.scratch.length < threads) t.scratch = new AttentionScratch[threads];
        for (int w = 0; w < threads; w++)
            if (t.scratch[w] == null || t.scratch[w].d != t.d || t.scratch[w].cap < batch.maxLen)
                t.scratch[w] = new AttentionScratch(t.d, Math.max(batch.maxLen, t.scratch[w] == null ? 0 : t.scratch[w].cap));
        pool.run(t, batch.size * heads);
        t.out = t.q = t.k = t.v = null;
        t.batch = null;
    }

    /**
     * One worker's attention buffers for head size D and sequences up to {@code cap} tokens, in
     * the GEMM micro-kernel's layouts, each tile or panel its own slice indexed from 0. The
     * queries sit on the vector lanes, 16 at a time: Qᵀ as one panel ([D][16], pre-scaled by
     * 1/√D), K in tiles of 6 keys ([D][6]), Sᵀ = K·Qᵀ and then the probabilities as one panel
     * ([keys][16]), V in tiles of 6 head columns ([T][6]), Oᵀ = Vᵀ·Pᵀ as one panel ([D][16]).
     */
    static final class AttentionScratch {
        final int d, cap, dTiles;
        final MemorySegment qPanel;      // [D][16]
        final MemorySegment[] kTile;     // per 6 keys: [D][6]
        final MemorySegment[] vTile;     // per 6 head columns: [cap][6]
        final MemorySegment sPanel;      // [keys rounded up to 6][16]
        final MemorySegment oPanel;      // [D rounded up to 6][16]
        final float[] inv = new float[NR]; // 1 / Σ per query lane

        AttentionScratch(int d, int cap) {
            this.d = d;
            this.cap = cap;
            this.dTiles = (d + MR - 1) / MR;
            int keyTiles = (cap + MR - 1) / MR;
            Arena a = Arena.ofAuto();
            qPanel = a.allocate((long) d * NR * 4, 64);
            kTile = slices(a, keyTiles, (long) d * MR);
            vTile = slices(a, dTiles, (long) cap * MR);
            sPanel = a.allocate((long) keyTiles * MR * NR * 4, 64);
            oPanel = a.allocate((long) dTiles * MR * NR * 4, 64);
        }

        private static MemorySegment[] slices(Arena a, int n, long floats) {
            MemorySegment data = a.allocate(Math.max(1, n * floats) * 4, 64);
            MemorySegment[] s = new MemorySegment[n];
            for (int i = 0; i < n; i++) s[i] = data.asSlice(i * floats * 4, floats * 4);
            return s;
        }
    }

    /**
     * Per (sequence, head), 16 queries at a time on the vector lanes: {@code Sᵀ = K·(Q/√D)ᵀ} with
     * the GEMM micro-kernel (6 keys × 16 queries per call, K = D), the softmax over keys down the
     * rows, element-wise (max, exp, sum: no horizontal reductions, no transposed copy of P), then
     * {@code Oᵀ = Vᵀ·Pᵀ} with the same kernel (6 head columns × 16 queries per call, K = T),
     * scaled by 1/Σ per query as it is written back. Pad keys (past T, up to the 6-key tile) are
     * zeros whose score rows the softmax never reads; pad queries (past T, up to 16) are zero
     * columns whose outputs are never written.
     */
    final class AttentionTask implements Parallel.Task {
        MemorySegment out, q, k, v;
        Batch batch;
        int heads, c, d;
        boolean headMajor; // q, k, v as [heads][tokens][D] instead of [tokens][heads·D]
        AttentionScratch[] scratch = new AttentionScratch[0];

        @Override
        public void run(int chunk, int worker) { // a chunk is one (sequence, head) pair
            AttentionScratch a = scratch[worker];
            int b = chunk / heads, h = chunk % heads;
            int s0 = batch.start[b], len = batch.length(b);
            long hd = (long) h * d;
            // where token i's head-h slice of q, k, v starts: base + i·stride
            long base = headMajor ? (long) h * batch.tokens * d : hd, stride = headMajor ? d : c;
            // K tiles ([D][6 keys], zero past len) and V tiles ([T][6 head columns], zero past D)
            for (int t = 0, keyTiles = (len + MR - 1) / MR; t < keyTiles; t++) {
                MemorySegment kt = a.kTile[t];
                for (int r = 0; r < MR; r++) {
                    int j = t * MR + r;
                    if (j < len) {
                        MemorySegment row = k.asSlice((base + (s0 + j) * stride) * 4, (long) d * 4);
                        for (int e = 0; e < d; e++) kt.setAtIndex(Tensor.F32, (long) e * MR + r, row.getAtIndex(Tensor.F32, e));
                    } else {
                        for (int e = 0; e < d; e++) kt.setAtIndex(Tensor.F32, (long) e * MR + r, 0f);
                    }
                }
            }
            for (int t = 0; t < a.dTiles; t++) {
                MemorySegment vt = a.vTile[t];
                int e0 = t * MR, w = Math.min(MR, d - e0);
                for (int j = 0; j < len; j++) {
                    MemorySegment row = v.asSlice((base + (s0 + j) * stride + e0) * 4, (long) w * 4);
                    for (int r = 0; r < MR; r++) vt.setAtIndex(Tensor.F32, (long) j * MR + r, r < w ? row.getAtIndex(Tensor.F32, r) : 0f);
                }
            }
            float scale = (float) (1.0 / Math.sqrt(d));
            for (int i0 = 0; i0 < len; i0 += NR) queryPanel(a, s0 + i0, Math.min(NR, len - i0), len, hd, base, stride, scale);
        }

        /**
         * Rows {@code [i, i + nq)} (nq ≤ 16) of one sequence's head {@code hd}, against its {@code
         * len} keys (K and V tiles already packed). Kept out of {@link #run} on purpose: C2 stops
         * inlining once a compilation passes its node budget (NodeCountInliningCutoff), and a
         * Vector API call that is not inlined boxes every vector. With the softmax inside run, the
         * exp and the vector stores after it were cut off that way (-XX:+PrintInlining) and the
         * attention ran 1.6× slower. This method is too large (bytecodes) for C2 to inline into
         * run, so it is compiled on its own budget; the softmax keeps a single exp call site.
         */
        private void queryPanel(AttentionScratch a, int i, int nq, int len, long hd, long base, long stride, float scale) {
            MemorySegment qp = a.qPanel, sp = a.sPanel, op = a.oPanel;
            // Qᵀ panel ([D][16 queries], scaled; queries past nq are 0). One scalar store site
            // here, not two: this method is near C2's node budget (see the class comment).
            if (nq < NR) qp.fill((byte) 0);
            for (int x = 0; x < nq; x++) {
                MemorySegment row = q.asSlice((base + (i + x) * stride) * 4, (long) d * 4);
                for (int e = 0; e < d; e++) qp.setAtIndex(Tensor.F32, (long) e * NR + x, row.getAtIndex(Tensor.F32, e) * scale);
            }
            // Sᵀ: all keys against these queries, [keys][16]
            for (int t = 0, keyTiles = (len + MR - 1) / MR; t < keyTiles; t++) kernel(a.kTile[t], qp, d, sp, (long) t * MR * NR, NR);
            softmax(sp, len, a.inv);
            // Oᵀ = Vᵀ·Pᵀ, 6 head columns at a time, [D][16] (the last tile's columns past D are
            // zeros: all 6 rows are computed, as in the GEMM's tail tiles)
            for (int t = 0; t < a.dTiles; t++) kernel(a.vTile[t], sp, len, op, (long) t * MR * NR, NR);
            // out rows = Oᵀ columns · 1/Σ
            for (int x = 0; x < nq; x++) {
                long dst = (long) (i + x) * c + hd;
                float inv = a.inv[x];
                for (int e = 0; e < d; e++) out.setAtIndex(Tensor.F32, dst + e, op.getAtIndex(Tensor.F32, (long) e * NR + x) * inv);
            }
        }

        /**
         * In place on the score panel's rows [0, len), each query a lane: s_jx → exp(s_jx − max_j s_jx);
         * {@code inv[x] = 1 / Σ_j}. Rows past len (pad keys) are not read.
         */
        private void softmax(MemorySegment sp, int len, float[] inv) {
            for (int h = 0; h < NR; h += L) { // one half of the lanes at a time: one exp call site
                FloatVector m = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
                for (int j = 0; j < len; j++) m = m.max(load(sp, (long) j * NR + h));
                FloatVector z = FloatVector.zero(S);
                for (int j = 0; j < len; j++) {
                    FloatVector x = exp(load(sp, (long) j * NR + h).sub(m));
                    store(x, sp, (long) j * NR + h);
                    z = z.add(x);
                }
                FloatVector.broadcast(S, 1f).div(z).intoArray(inv, h);
            }
        }
    }

    // ---------------------------------------------------------------- row-wise ops

    /** Chunks for a row-wise op: up to 4 per thread, but none under ~4K elements (a query's rows run inline). */
    private int chunksFor(int rows) { return Math.min(rows, pool.threads() * 4); }

    private int chunksFor(int rows, int width) {
        return Math.max(1, Math.min(chunksFor(rows), (int) Math.min(Integer.MAX_VALUE, (long) rows * width / 4096)));
    }

    @Override
    public void embed(Tensor out, int[] ids, int[] positions, int[] types, Batch batch,
                      Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) {
        RowsTask t = rowsTask;
        t.op = RowsTask.EMBED; t.out = out.data; t.ids = ids; t.positions = positions; t.types = types;
        t.word = plain(word.data); t.pos = plain(pos.data); t.type = plain(type.data); t.gamma = plain(gamma.data); t.beta = plain(beta.data);
        t.eps = eps; t.c = (int) word.dim(1); t.rows = batch.tokens;
        t.chunks = chunksFor(t.rows, t.c);
        pool.run(t, t.chunks);
        t.clear();
    }

    @Override
    public void addLayerNorm(Tensor out, Tensor x, Tensor residual, int rows, Tensor gamma, Tensor beta, float eps) {
        RowsTask t = rowsTask;
        t.op = RowsTask.ADD_LN; t.out = out.data; t.x = x.data; t.residual = residual.data;
        t.gamma = plain(gamma.data); t.beta = plain(beta.data); t.eps = eps; t.c = (int) gamma.numel(); t.rows = rows;
        t.chunks = chunksFor(rows, t.c);
        pool.run(t, t.chunks);
        t.clear();
    }

    @Override
    public void pool(Tensor out, Tensor hidden, Batch batch, Pooling mode) {
        RowsTask t = rowsTask;
        t.op = mode == Pooling.CLS ? RowsTask.POOL_CLS : RowsTask.POOL_MEAN;
        t.out = out.data; t.x = hidden.data; t.batch = batch; t.c = (int) (hidden.numel() / hidden.dim(0));
        t.rows = batch.size;
        t.chunks = chunksFor(batch.size, (int) Math.min(Integer.MAX_VALUE, (long) t.c * Math.max(1, batch.tokens / Math.max(1, batch.size))));
        pool.run(t, t.chunks);
        t.clear();
    }

    @Override
    public void l2Normalize(Tensor x, int rows) {
        RowsTask t = rowsTask;
        t.op = RowsTask.L2; t.out = x.data; t.c = (int) (x.numel() / x.dim(0)); t.rows = rows;
        t.chunks = chunksFor(rows, t.c);
        pool.run(t, t.chunks);
        t.clear();
    }

    /** Row-parallel ops; a chunk is a contiguous range of rows. */
    final class RowsTask implements Parallel.Task {
        static final int EMBED = 0, ADD_LN = 1, POOL_MEAN = 2, POOL_CLS = 3, L2 = 4, SHRINK = 5, SHRINK_PACKED = 6;
        int op, rows, c, chunks;
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
            int n = chunks;
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
            float total = sum(acc);
            for (; j < c; j++) total += out.getAtIndex(Tensor.F32, o + j);
            float mean = total / c;
            FloatVector m = FloatVector.broadcast(S, mean);
            acc = FloatVector.zero(S);
            for (j = 0; j < bound; j += L) { FloatVector d = load(out, o + j).sub(m); acc = d.fma(d, acc); }
            float var = sum(acc);
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
        if (!packWeights || rows <= 0) { training.linearBackward(dx, accumulate, dy, x, rows, w, lora); return; }
        // dx (+)= dy·W is the forward GEMM over Wᵀ's panels (CpuTraining's row-axpy form read all
        // of W once per row: half of a training step's time; bench/README.md, "Training throughput")
        gemm(dx.data, dy.data, rows, packedTransposed(w), null, null, false, accumulate, 0);
        training.loraBackward(dx, dy, x, rows, w, lora);
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
