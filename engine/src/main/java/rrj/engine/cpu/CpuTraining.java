package rrj.engine.cpu;

import jdk.incubator.vector.FloatVector;
import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.Erf;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.lang.foreign.MemorySegment;

import static rrj.engine.cpu.CpuBackend.L;
import static rrj.engine.cpu.CpuBackend.LE;
import static rrj.engine.cpu.CpuBackend.S;
import static rrj.engine.cpu.CpuBackend.dot;
import static rrj.engine.cpu.CpuBackend.load;

/**
 * The backward ops of {@link CpuBackend} (training): Vector API kernels on the backend's
 * thread pool, each the mirror of a forward op and each tested against
 * {@link rrj.engine.ReferenceBackend}'s plain loops. Kept apart from the forward kernels so
 * that inference code stays small.
 *
 * <p>The data-parallel split never lets two threads write the same element: rows for
 * row-wise ops, (sequence, head) pairs for attention, row blocks for the input gradient of
 * linear. LoRA weight gradients (a reduction over rows) run on the calling thread: they are
 * r·(in + out) per row, small next to the frozen GEMM.
 */
final class CpuTraining {
    private final Parallel pool;
    private final Task task = new Task();
    private float[][] scratch;   // per worker: one attention row (probabilities, then dP)
    private float[] xDrop = new float[0], dyB = new float[0], ax = new float[0];

    CpuTraining(Parallel pool) { this.pool = pool; }

    private int chunks(int rows) { return Math.max(1, Math.min(rows, pool.threads() * 4)); }

    void gelu(Tensor out, Tensor x, int rows, boolean backward, Tensor dy) {
        Task t = task;
        t.op = backward ? Task.GELU_BACK : Task.GELU;
        t.a = out.data; t.b = x.data; t.c2 = dy == null ? null : dy.data;
        t.width = (int) (x.numel() / x.dim(0)); t.rows = rows;
        if (backward && (t.rowScratch.length < pool.threads() || t.rowScratch[0].length < t.width)) {
            t.rowScratch = new float[pool.threads()][t.width];
        }
        pool.run(t, chunks(rows));
        t.clear();
    }

    void addLayerNormBackward(Tensor dsum, Tensor dy, Tensor x, Tensor residual, int rows, Tensor gamma, float eps) {
        Task t = task;
        t.op = Task.LN_BACK; t.a = dsum.data; t.b = dy.data; t.c2 = x.data; t.d = residual.data; t.e = gamma.data;
        t.eps = eps; t.width = (int) gamma.numel(); t.rows = rows;
        pool.run(t, chunks(rows));
        t.clear();
    }

    void poolBackward(Tensor dh, Tensor dpooled, Batch batch, Backend.Pooling mode) {
        Task t = task;
        t.op = mode == Backend.Pooling.CLS ? Task.POOL_CLS_BACK : Task.POOL_MEAN_BACK;
        t.a = dh.data; t.b = dpooled.data; t.batch = batch; t.width = (int) (dh.numel() / dh.dim(0)); t.rows = batch.size;
        pool.run(t, chunks(batch.size));
        t.clear();
    }

    void l2NormalizeBackward(Tensor dx, Tensor dy, Tensor x, int rows) {
        Task t = task;
        t.op = Task.L2_BACK; t.a = dx.data; t.b = dy.data; t.c2 = x.data; t.width = (int) (x.numel() / x.dim(0)); t.rows = rows;
        pool.run(t, chunks(rows));
        t.clear();
    }

    void add(Tensor dst, Tensor src, long n) {
        Task t = task;
        t.op = Task.ADD; t.a = dst.data; t.b = src.data; t.n = n; t.rows = (int) Math.min(Integer.MAX_VALUE, (n + 4095) / 4096);
        pool.run(t, chunks(t.rows));
        t.clear();
    }

    void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        Task t = task;
        int threads = pool.threads();
        if (scratch == null || scratch.length < threads || scratch[0].length < 2 * batch.maxLen)
            scratch = new float[threads][Math.max(2 * batch.maxLen, 128)];
        t.op = Task.ATT_BACK; t.a = dq.data; t.b = dk.data; t.c2 = dv.data; t.d = dout.data; t.e = q.data; t.f = k.data; t.g = v.data;
        t.batch = batch; t.heads = heads; t.width = (int) (q.numel() / q.dim(0));
        pool.run(t, batch.size * heads);
        t.clear();
    }

    void linearBackward(Tensor dx, boolean accumulate, Tensor dy, Tensor x, int rows, Tensor w, Lora lora) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        Task t = task;
        t.op = Task.LIN_BACK; t.a = dx.data; t.b = dy.data; t.e = w.data; t.accumulate = accumulate;
        t.rows = rows; t.in = in; t.out = out;
        pool.run(t, (rows + 3) / 4);
        t.clear();
        loraBackward(dx, dy, x, rows, w, lora);
    }

    /** linear's backward, the LoRA part alone: every segment's dx term and dA, dB. */
    void loraBackward(Tensor dx, Tensor dy, Tensor x, int rows, Tensor w, Lora lora) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        if (lora != null) for (int s = 0; s < lora.count; s++) loraBackward(dx, dy, x, rows, in, out, lora, s);
    }

    /** The LoRA part of linear's backward for segment s: dx += s·(dy·B)·A ⊙ mask, and dA, dB. */
    private void loraBackward(Tensor dx, Tensor dy, Tensor x, int rows, int in, int out, Lora lora, int s) {
        int r0 = lora.rowStart[s], r1 = Math.min(lora.rowEnd[s], rows), m = r1 - r0;
        if (m <= 0) return;
        LoraBackTask t = loraTask;
        t.r = (int) lora.a[s].dim(0);
        if (xDrop.length < m * in) xDrop = new float[m * in];
        if (dyB.length < m * t.r) { dyB = new float[m * t.r]; ax = new float[m * t.r]; }
        t.lora = lora; t.s = s; t.r0 = r0; t.m = m; t.in = in; t.out = out; t.sc = lora.scale[s];
        t.xs = x.data; t.dys = dy.data; t.as = lora.a[s].data; t.bs = lora.b[s].data; t.dxs = dx.data;
        t.phase = 0;
        pool.run(t, t.chunks = Math.min(m, pool.threads() * 4));
        if (lora.gradA != null && lora.gradA[s] != null) {
            t.gA = lora.gradA[s].data; t.gB = lora.gradB[s].data;
            t.phase = 1;
            pool.run(t, t.r);
            t.phase = 2;
            pool.run(t, t.chunks = Math.min(out, pool.threads() * 4));
        }
        t.lora = null;
        t.xs = t.dys = t.as = t.bs = t.dxs = t.gA = t.gB = null;
    }

    private final LoraBackTask loraTask = new LoraBackTask();

    /**
     * One segment's LoRA backward in three pool runs, each element summed in the same order
     * whatever the chunking (so the bits do not depend on the thread count): phase 0, per row,
     * x̃ = x ⊙ mask, dyB = s·dy·B, ax = A·x̃ and dx += (dyB·A) ⊙ mask; phase 1, per rank row k of
     * dA, dA[k, :] += Σ_i dyB[i, k]·x̃[i, :]; phase 2, per rows of dB, dB[o, :] += s·dy[i, o]·ax[i, :].
     */
    final class LoraBackTask implements Parallel.Task {
        Lora lora;
        int s, r, r0, m, in, out, phase, chunks; // chunks: of rows (phase 0) or of dB rows (phase 2)
        float sc;
        MemorySegment xs, dys, as, bs, dxs, gA, gB;

        @Override
        public void run(int chunk, int worker) {
            switch (phase) {
                case 0 -> {
                    for (int i = (int) ((long) m * chunk / chunks), e = (int) ((long) m * (chunk + 1) / chunks); i < e; i++) row(i);
                }
                case 1 -> gradA(chunk);
                default -> {
                    for (int o = (int) ((long) out * chunk / chunks), e = (int) ((long) out * (chunk + 1) / chunks); o < e; o++) gradB(o);
                }
            }
        }

        private void row(int i) {
            int row = r0 + i;
            for (int j = 0; j < in; j++) xDrop[i * in + j] = xs.getAtIndex(Tensor.F32, (long) row * in + j) * lora.dropScale(row, j);
            for (int k = 0; k < r; k++) {
                float acc = 0;
                for (int o = 0; o < out; o++) acc += dys.getAtIndex(Tensor.F32, (long) row * out + o) * bs.getAtIndex(Tensor.F32, (long) o * r + k);
                dyB[i * r + k] = sc * acc;
                float t = 0;
                for (int j = 0; j < in; j++) t += as.getAtIndex(Tensor.F32, (long) k * in + j) * xDrop[i * in + j];
                ax[i * r + k] = t;
            }
            for (int j = 0; j < in; j++) {
                float e = 0;
                for (int k = 0; k < r; k++) e += dyB[i * r + k] * as.getAtIndex(Tensor.F32, (long) k * in + j);
                long at = (long) row * in + j;
                dxs.setAtIndex(Tensor.F32, at, dxs.getAtIndex(Tensor.F32, at) + e * lora.dropScale(row, j));
            }
        }

        private void gradA(int k) { // dA[k, :] += Σ_i dyB[i, k] · x̃[i, :]
            for (int i = 0; i < m; i++) {
                float c = dyB[i * r + k];
                for (int j = 0; j < in; j++) {
                    long at = (long) k * in + j;
                    gA.setAtIndex(Tensor.F32, at, gA.getAtIndex(Tensor.F32, at) + c * xDrop[i * in + j]);
                }
            }
        }

        private void gradB(int o) { // dB[o, :] += s · dy[i, o] · (A·x̃_i)
            for (int i = 0; i < m; i++) {
                float c = sc * dys.getAtIndex(Tensor.F32, (long) (r0 + i) * out + o);
                for (int k = 0; k < r; k++) {
                    long at = (long) o * r + k;
                    gB.setAtIndex(Tensor.F32, at, gB.getAtIndex(Tensor.F32, at) + c * ax[i * r + k]);
                }
            }
        }
    }

    final class Task implements Parallel.Task {
        static final int GELU = 0, GELU_BACK = 1, LN_BACK = 2, POOL_MEAN_BACK = 3, POOL_CLS_BACK = 4, L2_BACK = 5, ADD = 6, ATT_BACK = 7, LIN_BACK = 8;
        int op, rows, width, heads, in, out;
        long n;
        float eps;
        boolean accumulate;
        MemorySegment a, b, c2, d, e, f, g;
        Batch batch;

        void clear() { a = b = c2 = d = e = f = g = null; batch = null; }

        @Override
        public void run(int chunk, int worker) {
            switch (op) {
                case ATT_BACK -> attention(chunk, worker);
                case LIN_BACK -> linearRows(chunk * 4, Math.min(rows, chunk * 4 + 4));
                case ADD -> {
                    long from = (long) chunk * 4096 * ((rows + chunks(rows) - 1) / chunks(rows));
                    long to = Math.min(n, from + 4096L * ((rows + chunks(rows) - 1) / chunks(rows)));
                    long i = from;
                    for (; i + L <= to; i += L) load(a, i).add(load(b, i)).intoMemorySegment(a, i * 4, LE);
                    for (; i < to; i++) a.setAtIndex(Tensor.F32, i, a.getAtIndex(Tensor.F32, i) + b.getAtIndex(Tensor.F32, i));
                }
                default -> {
                    int nc = chunks(rows);
                    int r0 = (int) ((long) rows * chunk / nc), r1 = (int) ((long) rows * (chunk + 1) / nc);
                    for (int i = r0; i < r1; i++) row(i, worker);
                }
            }
        }

        private void row(int i, int worker) {
            long o = (long) i * width;
            switch (op) {
                case GELU -> geluRow(o);
                case GELU_BACK -> geluBackwardRow(o, worker);
                case LN_BACK -> lnBackward(o);
                case POOL_MEAN_BACK, POOL_CLS_BACK -> { // i is a sequence here
                    int s0 = batch.start[i], len = batch.length(i);
                    for (int t = 0; t < len; t++)
                        for (int j = 0; j < width; j++) {
                            float gr = b.getAtIndex(Tensor.F32, o + j);
                            a.setAtIndex(Tensor.F32, (long) (s0 + t) * width + j, op == POOL_CLS_BACK ? (t == 0 ? gr : 0f) : gr / len);
                        }
                }
                case L2_BACK -> {
                    float ss = dot(c2, o, c2, o, width), xdy = dot(c2, o, b, o, width);
                    float nrm = (float) Math.sqrt(ss);
                    for (int j = 0; j < width; j++) {
                        float v = nrm < 1e-12f ? b.getAtIndex(Tensor.F32, o + j) / 1e-12f
                                : (b.getAtIndex(Tensor.F32, o + j) - c2.getAtIndex(Tensor.F32, o + j) * xdy / ss) / nrm;
                        a.setAtIndex(Tensor.F32, o + j, v);
                    }
                }
                default -> throw new IllegalStateException("op " + op);
            }
        }

        /** GELU of one row (b → a): the same vector GELU as the inference epilogue's. */
        private void geluRow(long o) {
            int j = 0;
            for (int vb = S.loopBound(width); j < vb; j += L) CpuBackend.gelu(load(b, o + j)).intoMemorySegment(a, (o + j) * 4, LE);
            for (; j < width; j++) a.setAtIndex(Tensor.F32, o + j, CpuBackend.gelu(b.getAtIndex(Tensor.F32, o + j)));
        }

        /**
         * GELU's backward for one row: dx (a) = dy (c2)·(Φ(v) + v·φ(v)), v = x (b); dx may be dy
         * (Bert's backward runs it in place). Φ goes first into the worker's scratch row, then one
         * loop reads dy and writes dx element by element: erf and exp in one compilation passed
         * C2's node budget (its vector loads became calls that box, bench/check-inlining.sh).
         */
        private void geluBackwardRow(long o, int worker) {
            float[] cdf = rowScratch[worker];
            int vb = cdfPart(o, cdf);
            pdfPart(o, vb, cdf);
            for (int j = vb; j < width; j++) {
                float v = b.getAtIndex(Tensor.F32, o + j);
                float phi = 0.5f * (1f + Erf.erfFast(v * 0.70710678118654752f));
                float pdf = (float) (Math.exp(-0.5 * v * v) * 0.3989422804014327);
                a.setAtIndex(Tensor.F32, o + j, c2.getAtIndex(Tensor.F32, o + j) * (phi + v * pdf));
            }
        }

        /** cdf[j] = Φ(v_j) over the row's whole vectors; returns where the scalar tail starts. */
        private int cdfPart(long o, float[] cdf) {
            int j = 0;
            for (int vb = S.loopBound(width); j < vb; j += L)
                CpuBackend.erf(load(b, o + j).mul(0.70710678118654752f)).add(1f).mul(0.5f).intoArray(cdf, j);
            return j;
        }

        /** a = dy·(cdf + v·φ(v)) over [0, vb). */
        private void pdfPart(long o, int vb, float[] cdf) {
            for (int j = 0; j < vb; j += L) {
                FloatVector v = load(b, o + j);
                FloatVector pdf = CpuBackend.exp(v.mul(v).mul(-0.5f)).mul(0.3989422804014327f);
                load(c2, o + j).mul(v.fma(pdf, FloatVector.fromArray(S, cdf, j))).intoMemorySegment(a, (o + j) * 4, LE);
            }
        }

        /** Per worker, a row of floats (sized by the caller before the pool runs: see {@link #gelu}). */
        float[][] rowScratch = new float[0][];

        /**
         * One row of add+LayerNorm's backward: dsum = rstd·(g·dy − mean(g·dy) − x̂·mean(g·dy·x̂)),
         * x̂ recomputed from x + residual (c2 + d), g = γ (e), dy (b), into a.
         */
        private void lnBackward(long o) {
            int vb = S.loopBound(width), j;
            FloatVector vs = FloatVector.zero(S);
            for (j = 0; j < vb; j += L) vs = vs.add(load(c2, o + j).add(load(d, o + j)));
            float mean = CpuBackend.sum(vs);
            for (; j < width; j++) mean += c2.getAtIndex(Tensor.F32, o + j) + d.getAtIndex(Tensor.F32, o + j);
            mean /= width;
            FloatVector vv = FloatVector.zero(S);
            for (j = 0; j < vb; j += L) { FloatVector z = load(c2, o + j).add(load(d, o + j)).sub(mean); vv = z.fma(z, vv); }
            float var = CpuBackend.sum(vv);
            for (; j < width; j++) { float z = c2.getAtIndex(Tensor.F32, o + j) + d.getAtIndex(Tensor.F32, o + j) - mean; var += z * z; }
            float rstd = (float) (1.0 / Math.sqrt(var / width + eps));
            FloatVector v1 = FloatVector.zero(S), v2 = FloatVector.zero(S);
            for (j = 0; j < vb; j += L) {
                FloatVector xh = load(c2, o + j).add(load(d, o + j)).sub(mean).mul(rstd);
                FloatVector gd = load(e, j).mul(load(b, o + j));
                v1 = v1.add(gd);
                v2 = gd.fma(xh, v2);
            }
            float m1 = CpuBackend.sum(v1), m2 = CpuBackend.sum(v2); // lane order: the same bits before and after C2 (CpuBackend.sum)
            for (; j < width; j++) {
                float xh = (c2.getAtIndex(Tensor.F32, o + j) + d.getAtIndex(Tensor.F32, o + j) - mean) * rstd;
                float gd = e.getAtIndex(Tensor.F32, j) * b.getAtIndex(Tensor.F32, o + j);
                m1 += gd;
                m2 += gd * xh;
            }
            m1 /= width;
            m2 /= width;
            for (j = 0; j < vb; j += L) {
                FloatVector xh = load(c2, o + j).add(load(d, o + j)).sub(mean).mul(rstd);
                FloatVector gd = load(e, j).mul(load(b, o + j));
                gd.sub(m1).sub(xh.mul(m2)).mul(rstd).intoMemorySegment(a, (o + j) * 4, LE);
            }
            for (; j < width; j++) {
                float xh = (c2.getAtIndex(Tensor.F32, o + j) + d.getAtIndex(Tensor.F32, o + j) - mean) * rstd;
                a.setAtIndex(Tensor.F32, o + j, rstd * (e.getAtIndex(Tensor.F32, j) * b.getAtIndex(Tensor.F32, o + j) - m1 - xh * m2));
            }
        }

        /** dx[i0..i1) (+)= dy·W: for each output o, an axpy of W's row o scaled by dy[i, o], 4 rows × 2 vectors at a time. */
        private void linearRows(int i0, int i1) {
            MemorySegment dx = a, dy = b, w = e;
            int j = 0;
            for (int bound = in - 2 * L; j <= bound; j += 2 * L) {
                for (int i = i0; i < i1; i++) {
                    FloatVector c0 = accumulate ? load(dx, (long) i * in + j) : FloatVector.zero(S);
                    FloatVector c1 = accumulate ? load(dx, (long) i * in + j + L) : FloatVector.zero(S);
                    for (int o = 0; o < out; o++) {
                        FloatVector s = FloatVector.broadcast(S, dy.getAtIndex(Tensor.F32, (long) i * out + o));
                        c0 = load(w, (long) o * in + j).fma(s, c0);
                        c1 = load(w, (long) o * in + j + L).fma(s, c1);
                    }
                    c0.intoMemorySegment(dx, ((long) i * in + j) * 4, LE);
                    c1.intoMemorySegment(dx, ((long) i * in + j + L) * 4, LE);
                }
            }
            for (; j < in; j++)
                for (int i = i0; i < i1; i++) {
                    float acc = accumulate ? dx.getAtIndex(Tensor.F32, (long) i * in + j) : 0f;
                    for (int o = 0; o < out; o++) acc += dy.getAtIndex(Tensor.F32, (long) i * out + o) * w.getAtIndex(Tensor.F32, (long) o * in + j);
                    dx.setAtIndex(Tensor.F32, (long) i * in + j, acc);
                }
        }

        private void attention(int chunk, int worker) {
            MemorySegment dq = a, dk = b, dv = c2, dout = d, q = e, k = f, v = g;
            int c = width, dd = c / heads;
            int bi = chunk / heads, h = chunk % heads;
            int s0 = batch.start[bi], len = batch.length(bi);
            float[] p = scratch[worker];
            int dpOff = batch.maxLen;
            float scale = (float) (1.0 / Math.sqrt(dd));
            for (int t = 0; t < len; t++)
                for (int x = 0; x < dd; x++) {
                    long at = (long) (s0 + t) * c + h * dd + x;
                    dq.setAtIndex(Tensor.F32, at, 0f); dk.setAtIndex(Tensor.F32, at, 0f); dv.setAtIndex(Tensor.F32, at, 0f);
                }
            for (int i = 0; i < len; i++) {
                long qi = (long) (s0 + i) * c + h * dd;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = 0; j < len; j++) { p[j] = dot(q, qi, k, (long) (s0 + j) * c + h * dd, dd) * scale; max = Math.max(max, p[j]); }
                float sum = 0;
                for (int j = 0; j < len; j++) { p[j] = (float) Math.exp(p[j] - max); sum += p[j]; }
                float dotPdP = 0;
                for (int j = 0; j < len; j++) {
                    p[j] /= sum;
                    long vj = (long) (s0 + j) * c + h * dd;
                    float dpj = dot(dout, qi, v, vj, dd);
                    p[dpOff + j] = dpj;
                    dotPdP += p[j] * dpj;
                    for (int x = 0; x < dd; x++) dv.setAtIndex(Tensor.F32, vj + x, dv.getAtIndex(Tensor.F32, vj + x) + p[j] * dout.getAtIndex(Tensor.F32, qi + x));
                }
                for (int j = 0; j < len; j++) {
                    float ds = p[j] * (p[dpOff + j] - dotPdP) * scale;
                    long kj = (long) (s0 + j) * c + h * dd;
                    for (int x = 0; x < dd; x++) {
                        dq.setAtIndex(Tensor.F32, qi + x, dq.getAtIndex(Tensor.F32, qi + x) + ds * k.getAtIndex(Tensor.F32, kj + x));
                        dk.setAtIndex(Tensor.F32, kj + x, dk.getAtIndex(Tensor.F32, kj + x) + ds * q.getAtIndex(Tensor.F32, qi + x));
                    }
                }
            }
        }
    }
}
