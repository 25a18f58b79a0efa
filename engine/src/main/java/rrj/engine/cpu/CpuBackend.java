package rrj.engine.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.Erf;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

/**
 * The CPU backend: Vector API kernels on a fixed thread pool. Weights are read in place from
 * their (memory-mapped) segments in PyTorch's [out, in] layout; nothing is repacked.
 *
 * <p>GEMM ({@link #linear}) is the "dot" form {@code y[i,o] = Σ_k x[i,k]·W[o,k]}: both operands
 * are contiguous along k, so a 3×4 register tile (3 rows of x × 4 rows of W, 12 vector
 * accumulators) streams k with vector loads and reduces the lanes once per output at the end.
 * The threads split W's rows in blocks of {@link #NB} (about 200 KB for K = 768, which stays
 * in L2 while every x row passes over it). Bias, GELU and the LoRA expand are applied to the
 * 3×4 tile before it is stored (one pass over y).
 *
 * <p>Not thread-safe: one op at a time per backend instance (the kernels reuse their task
 * objects and scratch); callers that serve many threads batch requests into one forward pass.
 *
 * <p>Not here: reduced-precision weights, repacked panels, fused QKV — candidates for the CPU
 * speed work, each with its test against {@link rrj.engine.ReferenceBackend}.
 */
public final class CpuBackend implements Backend {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    static final int NB = 64; // W rows per GEMM work block

    private final Parallel pool;
    private final Arena arena = Arena.ofShared();

    // Long-lived task objects: kernels set their fields and hand them to the pool (no allocation per call).
    private final LinearTask linearTask = new LinearTask();
    private final AttentionTask attentionTask = new AttentionTask();
    private final RowsTask rowsTask = new RowsTask();

    public CpuBackend(int threads) {
        if (threads < 1) throw new IllegalArgumentException("--threads must be ≥ 1, got " + threads);
        pool = new Parallel(threads);
    }

    @Override public String name() { return "cpu"; }

    @Override
    public String describe() {
        return "backend=cpu vector=" + S.vectorBitSize() + "-bit (" + L + " floats) threads=" + pool.threads();
    }

    @Override public Tensor weight(Tensor hostWeight) { return hostWeight.toF32(); }

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

    static float dot(MemorySegment a, long ai, MemorySegment b, long bi, int n) {
        FloatVector acc = FloatVector.zero(S);
        int k = 0;
        for (int bound = S.loopBound(n); k < bound; k += L) acc = load(a, ai + k).fma(load(b, bi + k), acc);
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (; k < n; k++) s += a.getAtIndex(Tensor.F32, ai + k) * b.getAtIndex(Tensor.F32, bi + k);
        return s;
    }

    static float gelu(float x) { return 0.5f * x * (1f + Erf.erfFast(x * 0.70710678118654752f)); }

    // ---------------------------------------------------------------- linear

    @Override
    public void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu) {
        LinearTask t = linearTask;
        t.y = y.data; t.x = x.data; t.w = w.data; t.bias = bias == null ? null : bias.data;
        t.rows = rows; t.out = (int) w.dim(0); t.in = (int) w.dim(1); t.gelu = gelu;
        t.lora = lora != null && lora.count > 0 ? lora : null;
        if (t.lora != null) shrink(t, lora);
        pool.run(t, (t.out + NB - 1) / NB);
        t.y = t.x = t.w = t.bias = null;
        t.lora = null;
    }

    /** LoRA shrink for every segment: v[i, 0..r) = A·x[i] (the "SGMV shrink"), into t.v. */
    private void shrink(LinearTask t, Lora lora) {
        int maxR = lora.maxRank();
        if (t.v == null || t.v.length < (long) t.rows * maxR) t.v = new float[Math.max(t.rows * maxR, 16)];
        if (t.seg == null || t.seg.length < t.rows) t.seg = new int[Math.max(t.rows, 16)];
        java.util.Arrays.fill(t.seg, 0, t.rows, -1);
        for (int s = 0; s < lora.count; s++)
            for (int i = lora.rowStart[s]; i < lora.rowEnd[s] && i < t.rows; i++) t.seg[i] = s;
        t.vStride = maxR;
        rowsTask.op = RowsTask.SHRINK; rowsTask.lin = t; rowsTask.rows = t.rows;
        pool.run(rowsTask, chunksFor(t.rows));
        rowsTask.lin = null;
    }

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
        if (t.scores == null || t.scores.length < threads || t.scores[0].length < batch.maxLen) {
            t.scores = new float[threads][Math.max(batch.maxLen, 64)];
        }
        pool.run(t, batch.size * heads);
        t.out = t.q = t.k = t.v = null;
        t.batch = null;
    }

    final class AttentionTask implements Parallel.Task {
        MemorySegment out, q, k, v;
        Batch batch;
        int heads, c, d;
        float[][] scores; // per worker: one row of attention probabilities

        @Override
        public void run(int chunk, int worker) {
            float[] p = scores[worker]; // a chunk is one (sequence, head) pair
            int b = chunk / heads, h = chunk % heads;
            int s0 = batch.start[b], len = batch.length(b);
            float scale = (float) (1.0 / Math.sqrt(d));
            for (int i = 0; i < len; i++) {
                long qi = (long) (s0 + i) * c + h * d;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = 0; j < len; j++) {
                    float s = dot(q, qi, k, (long) (s0 + j) * c + h * d, d) * scale;
                    p[j] = s;
                    if (s > max) max = s;
                }
                float sum = 0;
                for (int j = 0; j < len; j++) { float e = (float) Math.exp(p[j] - max); p[j] = e; sum += e; }
                float inv = 1f / sum;
                // out[i] = Σ_j p_j · v[j], vectorized over the head's D columns
                int e = 0;
                for (int bound = S.loopBound(d); e < bound; e += L) {
                    FloatVector a = FloatVector.zero(S);
                    for (int j = 0; j < len; j++) a = load(v, (long) (s0 + j) * c + h * d + e).fma(FloatVector.broadcast(S, p[j]), a);
                    a.mul(inv).intoMemorySegment(out, (qi + e) * 4, LE);
                }
                for (; e < d; e++) {
                    float a = 0;
                    for (int j = 0; j < len; j++) a += p[j] * v.getAtIndex(Tensor.F32, (long) (s0 + j) * c + h * d + e);
                    out.setAtIndex(Tensor.F32, qi + e, a * inv);
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
        static final int EMBED = 0, ADD_LN = 1, POOL_MEAN = 2, POOL_CLS = 3, L2 = 4, SHRINK = 5;
        int op, rows, c;
        MemorySegment out, x, residual, word, pos, type, gamma, beta;
        int[] ids, positions, types;
        float eps;
        Batch batch;
        LinearTask lin;

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
            if (sg < 0) return;
            Tensor a = lin.lora.a[sg];
            int r = (int) a.dim(0);
            for (int k = 0; k < r; k++)
                lin.v[i * lin.vStride + k] = dot(a.data, (long) k * lin.in, lin.x, (long) i * lin.in, lin.in);
        }
    }
}
