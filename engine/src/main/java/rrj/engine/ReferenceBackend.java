package rrj.engine;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * The oracle: every op, forward and backward, as the plainest loops, one thread, no Vector
 * API, accumulation in double. Slow on purpose and kept in main code (llm.c's
 * matmul_forward_naive) so that every fast kernel is tested against it and it can always be
 * chosen with {@code --backend ref}.
 *
 * <p>{@code new ReferenceBackend(true)} stores every activation and weight as float64: the
 * "float64 reference run" that gradient checks by finite differences need.
 *
 * <p>Mirrors HF modeling_bert.py op for op: post-LayerNorm, exact erf GELU, bidirectional
 * attention restricted to each sequence's own tokens.
 */
public final class ReferenceBackend implements Backend {
    private final boolean f64;
    private double[] scores = new double[0]; // one attention row, grown when a longer sequence comes

    public ReferenceBackend() { this(false); }

    public ReferenceBackend(boolean float64) { this.f64 = float64; }

    @Override public String name() { return "ref"; }
    @Override public String describe() { return "backend=ref (plain loops, 1 thread, double accumulation" + (f64 ? ", float64 storage)" : ")"); }

    @Override
    public Tensor weight(Tensor hostWeight) {
        if (!f64) return hostWeight.toF32();
        if (hostWeight.dtype == DType.F64) return hostWeight;
        Tensor t = Tensor.allocateF64(Arena.ofAuto(), hostWeight.shape());
        for (long i = 0; i < t.numel(); i++) t.data.setAtIndex(Tensor.F64, i, hostWeight.getFloat(i));
        return t;
    }

    @Override
    public Tensor allocate(long... shape) {
        return f64 ? Tensor.allocateF64(Arena.ofAuto(), shape) : Tensor.allocate(Arena.ofAuto(), shape);
    }

    @Override
    public void read(Tensor src, long srcOffset, float[] dst, int dstOffset, int n) {
        for (int i = 0; i < n; i++) dst[dstOffset + i] = (float) get(src, srcOffset + i);
    }

    @Override
    public void write(float[] src, int srcOffset, Tensor dst, long dstOffset, int n) {
        for (int i = 0; i < n; i++) set(dst, dstOffset + i, src[srcOffset + i]);
    }

    static double get(Tensor t, long i) {
        return t.dtype == DType.F64 ? t.data.getAtIndex(Tensor.F64, i) : t.data.getAtIndex(Tensor.F32, i);
    }

    static void set(Tensor t, long i, double v) {
        if (t.dtype == DType.F64) t.data.setAtIndex(Tensor.F64, i, v);
        else t.data.setAtIndex(Tensor.F32, i, (float) v);
    }

    private static int width(Tensor t) { return (int) (t.numel() / t.dim(0)); }

    @Override
    public void embed(Tensor out, int[] ids, int[] positions, int[] types, Batch batch,
                      Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) {
        int c = (int) word.dim(1);
        double[] row = new double[c];
        for (int i = 0; i < batch.tokens; i++) {
            for (int j = 0; j < c; j++)
                row[j] = get(word, (long) ids[i] * c + j) + get(pos, (long) positions[i] * c + j) + get(type, (long) types[i] * c + j);
            layerNormRow(row, out, (long) i * c, gamma, beta, eps);
        }
    }

    private static void layerNormRow(double[] row, Tensor out, long off, Tensor gamma, Tensor beta, float eps) {
        int c = row.length;
        double mean = 0;
        for (double v : row) mean += v;
        mean /= c;
        double var = 0;
        for (double v : row) var += (v - mean) * (v - mean);
        var /= c; // biased variance, as torch.nn.LayerNorm
        double inv = 1.0 / Math.sqrt(var + eps);
        for (int j = 0; j < c; j++) set(out, off + j, (row[j] - mean) * inv * get(gamma, j) + get(beta, j));
    }

    @Override
    public void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        for (int i = 0; i < rows; i++) {
            int seg = segment(lora, i);
            double[] ax = null;
            if (seg >= 0) { // v = A·x̃, the LoRA "shrink" (x̃: x with LoRA dropout while training)
                Tensor a = lora.a[seg];
                int r = (int) a.dim(0);
                ax = new double[r];
                for (int k = 0; k < r; k++) {
                    double s = 0;
                    for (int j = 0; j < in; j++) s += get(a, (long) k * in + j) * get(x, (long) i * in + j) * lora.dropScale(i, j);
                    ax[k] = s;
                }
            }
            for (int o = 0; o < out; o++) {
                double s = bias == null ? 0 : get(bias, o);
                for (int j = 0; j < in; j++) s += get(w, (long) o * in + j) * get(x, (long) i * in + j);
                if (seg >= 0) { // + scale · B·v, the LoRA "expand"
                    Tensor b = lora.b[seg];
                    double e = 0;
                    for (int k = 0; k < ax.length; k++) e += get(b, (long) o * ax.length + k) * ax[k];
                    s += lora.scale[seg] * e;
                }
                set(y, (long) i * out + o, gelu ? Erf.gelu(s) : s);
            }
        }
    }

    /** The LoRA segment holding row i, or -1. */
    private static int segment(Lora lora, int i) {
        if (lora != null)
            for (int s = 0; s < lora.count; s++) if (i >= lora.rowStart[s] && i < lora.rowEnd[s]) return s;
        return -1;
    }

    /** Softmax(q_i·k_j/√D) over j of one sequence and head, into scores[0..len). */
    private void probabilities(Tensor q, Tensor k, long qi, int s0, int len, int c, int h, int d) {
        double scale = 1.0 / Math.sqrt(d);
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < len; j++) {
            long kj = (long) (s0 + j) * c + h * d;
            double s = 0;
            for (int e = 0; e < d; e++) s += get(q, qi + e) * get(k, kj + e);
            scores[j] = s * scale;
            max = Math.max(max, scores[j]);
        }
        double sum = 0;
        for (int j = 0; j < len; j++) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
        for (int j = 0; j < len; j++) scores[j] /= sum;
    }

    @Override
    public void attention(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        int c = width(q);
        int d = c / heads;
        if (scores.length < batch.maxLen) scores = new double[batch.maxLen];
        for (int b = 0; b < batch.size; b++) {
            int s0 = batch.start[b], len = batch.length(b);
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < len; i++) {
                    long qi = (long) (s0 + i) * c + h * d;
                    probabilities(q, k, qi, s0, len, c, h, d);
                    for (int e = 0; e < d; e++) {
                        double acc = 0;
                        for (int j = 0; j < len; j++) acc += scores[j] * get(v, (long) (s0 + j) * c + h * d + e);
                        set(out, qi + e, acc);
                    }
                }
            }
        }
    }

    @Override
    public void addLayerNorm(Tensor out, Tensor x, Tensor residual, int rows, Tensor gamma, Tensor beta, float eps) {
        int c = (int) gamma.numel();
        double[] row = new double[c];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < c; j++) row[j] = get(x, (long) i * c + j) + get(residual, (long) i * c + j);
            layerNormRow(row, out, (long) i * c, gamma, beta, eps);
        }
    }

    @Override
    public void pool(Tensor out, Tensor hidden, Batch batch, Pooling mode) {
        int c = width(hidden);
        for (int b = 0; b < batch.size; b++) {
            int s0 = batch.start[b], len = batch.length(b);
            for (int j = 0; j < c; j++) {
                double s;
                if (mode == Pooling.CLS) s = get(hidden, (long) s0 * c + j);
                else { // mean over the sequence's tokens, [CLS] and [SEP] included, padding absent
                    s = 0;
                    for (int i = 0; i < len; i++) s += get(hidden, (long) (s0 + i) * c + j);
                    s /= len;
                }
                set(out, (long) b * c + j, s);
            }
        }
    }

    @Override
    public void l2Normalize(Tensor x, int rows) {
        int c = width(x);
        for (int i = 0; i < rows; i++) {
            double s = 0;
            for (int j = 0; j < c; j++) { double v = get(x, (long) i * c + j); s += v * v; }
            // sentence-transformers' Normalize: x / max(‖x‖, 1e-12)
            double n = Math.max(Math.sqrt(s), 1e-12);
            for (int j = 0; j < c; j++) set(x, (long) i * c + j, get(x, (long) i * c + j) / n);
        }
    }

    // ------------------------------------------------------------------ backward

    @Override
    public void gelu(Tensor out, Tensor x, int rows) {
        long n = (long) rows * width(x);
        for (long i = 0; i < n; i++) set(out, i, Erf.gelu(get(x, i)));
    }

    @Override
    public void geluBackward(Tensor dx, Tensor dy, Tensor x, int rows) {
        long n = (long) rows * width(x);
        for (long i = 0; i < n; i++) {
            double v = get(x, i);
            double cdf = 0.5 * (1 + Erf.erf(v / Math.sqrt(2)));
            double pdf = Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
            set(dx, i, get(dy, i) * (cdf + v * pdf));
        }
    }

    @Override
    public void linearBackward(Tensor dx, boolean accumulate, Tensor dy, Tensor x, int rows, Tensor w, Lora lora) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        for (int i = 0; i < rows; i++) {
            int seg = segment(lora, i);
            double[] dyB = null, ax = null;
            if (seg >= 0) {
                Tensor a = lora.a[seg], b = lora.b[seg];
                int r = (int) a.dim(0);
                float s = lora.scale[seg];
                dyB = new double[r]; // s · dy·B  [r]
                ax = new double[r];  // A·x̃       [r]
                for (int k = 0; k < r; k++) {
                    double acc = 0;
                    for (int o = 0; o < out; o++) acc += get(dy, (long) i * out + o) * get(b, (long) o * r + k);
                    dyB[k] = s * acc;
                    double t = 0;
                    for (int j = 0; j < in; j++) t += get(a, (long) k * in + j) * get(x, (long) i * in + j) * lora.dropScale(i, j);
                    ax[k] = t;
                }
                if (lora.gradA != null && lora.gradA[seg] != null) {
                    Tensor gA = lora.gradA[seg], gB = lora.gradB[seg];
                    for (int k = 0; k < r; k++)
                        for (int j = 0; j < in; j++)
                            set(gA, (long) k * in + j, get(gA, (long) k * in + j) + dyB[k] * get(x, (long) i * in + j) * lora.dropScale(i, j));
                    for (int o = 0; o < out; o++)
                        for (int k = 0; k < r; k++)
                            set(gB, (long) o * r + k, get(gB, (long) o * r + k) + s * get(dy, (long) i * out + o) * ax[k]);
                }
            }
            for (int j = 0; j < in; j++) {
                double acc = 0;
                for (int o = 0; o < out; o++) acc += get(dy, (long) i * out + o) * get(w, (long) o * in + j);
                if (seg >= 0) {
                    Tensor a = lora.a[seg];
                    double e = 0;
                    for (int k = 0; k < dyB.length; k++) e += dyB[k] * get(a, (long) k * in + j);
                    acc += e * lora.dropScale(i, j);
                }
                long at = (long) i * in + j;
                set(dx, at, accumulate ? get(dx, at) + acc : acc);
            }
        }
    }

    @Override
    public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        int c = width(q);
        int d = c / heads;
        double scale = 1.0 / Math.sqrt(d);
        if (scores.length < batch.maxLen) scores = new double[batch.maxLen];
        double[] dp = new double[batch.maxLen];
        long n = (long) batch.tokens * c;
        for (long i = 0; i < n; i++) { set(dq, i, 0); set(dk, i, 0); set(dv, i, 0); }
        for (int b = 0; b < batch.size; b++) {
            int s0 = batch.start[b], len = batch.length(b);
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < len; i++) {
                    long qi = (long) (s0 + i) * c + h * d;
                    probabilities(q, k, qi, s0, len, c, h, d);
                    // dP_ij = dO_i · v_j ; dV_j += P_ij dO_i
                    double dot = 0;
                    for (int j = 0; j < len; j++) {
                        long vj = (long) (s0 + j) * c + h * d;
                        double acc = 0;
                        for (int e = 0; e < d; e++) {
                            acc += get(dout, qi + e) * get(v, vj + e);
                            set(dv, vj + e, get(dv, vj + e) + scores[j] * get(dout, qi + e));
                        }
                        dp[j] = acc;
                        dot += scores[j] * acc;
                    }
                    // softmax backward: dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij'), then through q·k/√D
                    for (int j = 0; j < len; j++) {
                        double ds = scores[j] * (dp[j] - dot) * scale;
                        long kj = (long) (s0 + j) * c + h * d;
                        for (int e = 0; e < d; e++) {
                            set(dq, qi + e, get(dq, qi + e) + ds * get(k, kj + e));
                            set(dk, kj + e, get(dk, kj + e) + ds * get(q, qi + e));
                        }
                    }
                }
            }
        }
    }

    @Override
    public void addLayerNormBackward(Tensor dsum, Tensor dy, Tensor x, Tensor residual, int rows, Tensor gamma, float eps) {
        int c = (int) gamma.numel();
        double[] xh = new double[c];
        for (int i = 0; i < rows; i++) {
            long o = (long) i * c;
            double mean = 0;
            for (int j = 0; j < c; j++) { xh[j] = get(x, o + j) + get(residual, o + j); mean += xh[j]; }
            mean /= c;
            double var = 0;
            for (int j = 0; j < c; j++) var += (xh[j] - mean) * (xh[j] - mean);
            double rstd = 1.0 / Math.sqrt(var / c + eps);
            double m1 = 0, m2 = 0; // means of g·dy and g·dy·x̂
            for (int j = 0; j < c; j++) {
                xh[j] = (xh[j] - mean) * rstd;
                double g = get(gamma, j) * get(dy, o + j);
                m1 += g;
                m2 += g * xh[j];
            }
            m1 /= c;
            m2 /= c;
            for (int j = 0; j < c; j++) set(dsum, o + j, rstd * (get(gamma, j) * get(dy, o + j) - m1 - xh[j] * m2));
        }
    }

    @Override
    public void poolBackward(Tensor dh, Tensor dpooled, Batch batch, Pooling mode) {
        int c = width(dh);
        for (int b = 0; b < batch.size; b++) {
            int s0 = batch.start[b], len = batch.length(b);
            for (int i = 0; i < len; i++)
                for (int j = 0; j < c; j++) {
                    double g = get(dpooled, (long) b * c + j);
                    set(dh, (long) (s0 + i) * c + j, mode == Pooling.CLS ? (i == 0 ? g : 0) : g / len);
                }
        }
    }

    @Override
    public void l2NormalizeBackward(Tensor dx, Tensor dy, Tensor x, int rows) {
        int c = width(x);
        for (int i = 0; i < rows; i++) {
            long o = (long) i * c;
            double ss = 0, xdy = 0;
            for (int j = 0; j < c; j++) { ss += get(x, o + j) * get(x, o + j); xdy += get(x, o + j) * get(dy, o + j); }
            double n = Math.sqrt(ss);
            if (n < 1e-12) { // the clamp is active: y = x / 1e-12, a plain scaling
                for (int j = 0; j < c; j++) set(dx, o + j, get(dy, o + j) / 1e-12);
                continue;
            }
            // y = x/n: dx = (dy − y·(y·dy)) / n
            for (int j = 0; j < c; j++) set(dx, o + j, (get(dy, o + j) - get(x, o + j) * xdy / ss) / n);
        }
    }

    @Override
    public void add(Tensor dst, Tensor src, long n) {
        for (long i = 0; i < n; i++) set(dst, i, get(dst, i) + get(src, i));
    }

    @Override
    public void copy(Tensor dst, Tensor src, long n) {
        for (long i = 0; i < n; i++) set(dst, i, get(src, i));
    }
}
