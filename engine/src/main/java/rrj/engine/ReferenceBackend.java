package rrj.engine;

/**
 * The oracle: every op as the plainest loops, one thread, no Vector API, accumulation in
 * double. Slow on purpose and kept in main code (llm.c's matmul_forward_naive) so that every
 * fast kernel is tested against it and it can always be chosen with {@code --backend ref}.
 *
 * <p>Mirrors HF modeling_bert.py op for op: post-LayerNorm, exact erf GELU, bidirectional
 * attention restricted to each sequence's own tokens.
 */
public final class ReferenceBackend implements Backend {
    private double[] scores = new double[0]; // one attention row, grown when a longer sequence comes

    @Override public String name() { return "ref"; }
    @Override public String describe() { return "backend=ref (plain loops, 1 thread, double accumulation)"; }

    @Override public Tensor weight(Tensor hostWeight) { return hostWeight.toF32(); }

    @Override public Tensor allocate(long... shape) { return Tensor.allocate(java.lang.foreign.Arena.ofAuto(), shape); }

    @Override
    public void read(Tensor src, long srcOffset, float[] dst, int dstOffset, int n) {
        java.lang.foreign.MemorySegment.copy(src.data, Tensor.F32, srcOffset * 4, dst, dstOffset, n);
    }

    @Override
    public void write(float[] src, int srcOffset, Tensor dst, long dstOffset, int n) {
        java.lang.foreign.MemorySegment.copy(src, srcOffset, dst.data, Tensor.F32, dstOffset * 4, n);
    }

    private static float get(Tensor t, long i) { return t.data.getAtIndex(Tensor.F32, i); }
    private static void set(Tensor t, long i, float v) { t.data.setAtIndex(Tensor.F32, i, v); }

    @Override
    public void embed(Tensor out, int[] ids, int[] positions, int[] types, Batch batch,
                      Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) {
        int c = (int) word.dim(1);
        double[] row = new double[c];
        for (int i = 0; i < batch.tokens; i++) {
            for (int j = 0; j < c; j++)
                row[j] = (double) get(word, (long) ids[i] * c + j) + get(pos, (long) positions[i] * c + j)
                        + get(type, (long) types[i] * c + j);
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
        for (int j = 0; j < c; j++) set(out, off + j, (float) ((row[j] - mean) * inv * get(gamma, j) + get(beta, j)));
    }

    @Override
    public void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu) {
        int out = (int) w.dim(0), in = (int) w.dim(1);
        for (int i = 0; i < rows; i++) {
            // which LoRA segment (if any) this row belongs to
            int seg = -1;
            if (lora != null)
                for (int s = 0; s < lora.count; s++) if (i >= lora.rowStart[s] && i < lora.rowEnd[s]) { seg = s; break; }
            double[] ax = null;
            if (seg >= 0) { // v = A·x, the LoRA "shrink"
                Tensor a = lora.a[seg];
                int r = (int) a.dim(0);
                ax = new double[r];
                for (int k = 0; k < r; k++) {
                    double s = 0;
                    for (int j = 0; j < in; j++) s += (double) get(a, (long) k * in + j) * get(x, (long) i * in + j);
                    ax[k] = s;
                }
            }
            for (int o = 0; o < out; o++) {
                double s = bias == null ? 0 : get(bias, o);
                for (int j = 0; j < in; j++) s += (double) get(w, (long) o * in + j) * get(x, (long) i * in + j);
                if (seg >= 0) { // + scale · B·v, the LoRA "expand"
                    Tensor b = lora.b[seg];
                    double e = 0;
                    for (int k = 0; k < ax.length; k++) e += (double) get(b, (long) o * ax.length + k) * ax[k];
                    s += lora.scale[seg] * e;
                }
                set(y, (long) i * out + o, (float) (gelu ? Erf.gelu(s) : s));
            }
        }
    }

    @Override
    public void attention(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        int c = (int) (q.numel() / q.dim(0));
        int d = c / heads;
        double scale = 1.0 / Math.sqrt(d);
        if (scores.length < batch.maxLen) scores = new double[batch.maxLen];
        for (int b = 0; b < batch.size; b++) {
            int s0 = batch.start[b], len = batch.length(b);
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < len; i++) {
                    long qi = (long) (s0 + i) * c + h * d;
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < len; j++) {
                        long kj = (long) (s0 + j) * c + h * d;
                        double s = 0;
                        for (int e = 0; e < d; e++) s += (double) get(q, qi + e) * get(k, kj + e);
                        scores[j] = s * scale;
                        max = Math.max(max, scores[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < len; j++) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
                    for (int e = 0; e < d; e++) {
                        double acc = 0;
                        for (int j = 0; j < len; j++) acc += scores[j] * get(v, (long) (s0 + j) * c + h * d + e);
                        set(out, qi + e, (float) (acc / sum));
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
            for (int j = 0; j < c; j++) row[j] = (double) get(x, (long) i * c + j) + get(residual, (long) i * c + j);
            layerNormRow(row, out, (long) i * c, gamma, beta, eps);
        }
    }

    @Override
    public void pool(Tensor out, Tensor hidden, Batch batch, Pooling mode) {
        int c = (int) (hidden.numel() / hidden.dim(0));
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
                set(out, (long) b * c + j, (float) s);
            }
        }
    }

    @Override
    public void l2Normalize(Tensor x, int rows) {
        int c = (int) (x.numel() / x.dim(0));
        for (int i = 0; i < rows; i++) {
            double s = 0;
            for (int j = 0; j < c; j++) { double v = get(x, (long) i * c + j); s += v * v; }
            // sentence-transformers' Normalize: x / max(‖x‖, 1e-12)
            double n = Math.max(Math.sqrt(s), 1e-12);
            for (int j = 0; j < c; j++) set(x, (long) i * c + j, (float) (get(x, (long) i * c + j) / n));
        }
    }
}
