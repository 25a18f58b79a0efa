package rrj.engine;

/**
 * The operations a BERT encoder needs, implemented once per device (ggml's backend table,
 * candle's device enum). {@code Bert.forward} calls only these, so the same forward pass runs
 * on every backend.
 *
 * <p>Conventions: every matrix is row-major fp32; activations are packed token rows
 * ({@link Batch}), {@code N} rows of width {@code C}. Linear weights use PyTorch's
 * {@code [out, in]} layout. Tensors passed as activations must come from {@link #allocate};
 * weights must have gone through {@link #weight} once.
 *
 * <p>Legend: N token rows, B sequences, C hidden, H heads, D = C/H, F FFN width, R LoRA rank.
 */
public interface Backend extends AutoCloseable {

    /** Short name as given to {@code --backend}: "ref", "cpu", "cuda". */
    String name();

    /** One line for the log: backend, vector width, threads. */
    String describe();

    /** Makes a weight resident for this backend (fp32; converted from fp16/bf16 storage if needed). */
    Tensor weight(Tensor hostWeight);

    /** A zeroed fp32 activation buffer of the given shape, owned by this backend. */
    Tensor allocate(long... shape);

    /** Copies {@code n} floats from the activation {@code src} (from offset {@code srcOffset}) into {@code dst}. */
    void read(Tensor src, long srcOffset, float[] dst, int dstOffset, int n);

    /** Copies host floats into the activation {@code dst} at {@code dstOffset}. */
    void write(float[] src, int srcOffset, Tensor dst, long dstOffset, int n);

    /**
     * Embeddings: {@code out[i] = LayerNorm(word[ids[i]] + pos[positions[i]] + type[types[i]])}
     * for the first {@code batch.tokens} rows. out: [N, C].
     */
    void embed(Tensor out, int[] ids, int[] positions, int[] types, Batch batch,
               Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps);

    /**
     * {@code y[rows, out] = x[rows, in]·Wᵀ + bias (+ LoRA segments) (then GELU if gelu)}.
     * {@code bias} and {@code lora} may be null. With LoRA the adapter term joins the base
     * product before the optional activation.
     */
    void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu);

    /**
     * Bidirectional multi-head attention per sequence of the batch:
     * {@code out = softmax(q·kᵀ/√D)·v} per head, where q, k, v, out are [N, C] with heads laid
     * side by side (head h = columns [h·D, (h+1)·D)). No cross-sequence attention, no mask
     * beyond the sequence bounds.
     */
    void attention(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads);

    /**
     * Whether this backend offers the head-major layout for attention's inputs at head size
     * {@code headDim}: {@link #linearHeadMajor} writes q, k, v as {@code [heads][N][D]} (each
     * head's rows one contiguous run) and {@link #attentionHeadMajor} reads them so. Optional:
     * a backend that says no is used with {@link #linear} and {@link #attention}.
     */
    default boolean supportsHeadMajor(int headDim) { return false; }

    /**
     * {@link #linear} without activation, y written head-major: output column o of row i at
     * {@code y[(o / headDim)·rows·headDim + i·headDim + o % headDim]}, i.e. [out / headDim][rows][headDim].
     */
    default void linearHeadMajor(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, int headDim) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no head-major layout");
    }

    /**
     * {@link #linearHeadMajor} of one input through several weights at once (a layer's query, key
     * and value projections), without LoRA: weight j's heads follow weight j − 1's in y, so y is
     * {@code [Σ_j out_j / headDim][rows][headDim]} — with three weights of C outputs, q, k and v
     * head-major one after another. {@code bias[j]} may be null.
     */
    default void linearsHeadMajor(Tensor y, Tensor x, int rows, Tensor[] w, Tensor[] bias, int headDim) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no head-major layout");
    }

    /**
     * {@link #attention} with q, k, v head-major ({@code [heads][N][D]}, N = batch.tokens, as
     * {@link #linearHeadMajor} writes them); {@code out} is [N, C] as in {@link #attention}.
     */
    default void attentionHeadMajor(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no head-major layout");
    }

    /** {@code out[i] = LayerNorm(x[i] + residual[i])} over rows of width C; out may alias residual. */
    void addLayerNorm(Tensor out, Tensor x, Tensor residual, int rows, Tensor gamma, Tensor beta, float eps);

    /** Pools token rows into one row per sequence. out: [B, C]. */
    void pool(Tensor out, Tensor hidden, Batch batch, Pooling mode);

    /** Divides each of the first {@code rows} rows by its L2 norm (rows of norm 0 stay 0). */
    void l2Normalize(Tensor x, int rows);

    // ------------------------------------------------------------------ training (backward)
    // Each forward op's backward, as llm.c pairs them. Only LoRA matrices receive weight
    // gradients; every other gradient is an activation gradient flowing through frozen weights.

    /** {@code out = gelu(x)} (exact erf form) over the first {@code rows} rows; the unfused form training keeps. */
    void gelu(Tensor out, Tensor x, int rows);

    /** {@code dx = dy · gelu'(x)}, where {@code gelu'(x) = Φ(x) + x·φ(x)}. */
    void geluBackward(Tensor dx, Tensor dy, Tensor x, int rows);

    /**
     * Backward of {@link #linear} (without activation): {@code dx (+)= dy·W + Σ_s s·(dy·B)·A}
     * (dropout mask applied on the way back into x), and, when the segments carry gradient
     * tensors, {@code dA += s·(dy·B)ᵀ·x̃}, {@code dB += s·dyᵀ·(x̃·Aᵀ)} with x̃ the dropped-out x.
     */
    void linearBackward(Tensor dx, boolean accumulate, Tensor dy, Tensor x, int rows, Tensor w, Lora lora);

    /** Backward of {@link #attention}: recomputes the probabilities from q and k, writes dq, dk, dv. */
    void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k, Tensor v, Batch batch, int heads);

    /** Backward of {@link #addLayerNorm}: {@code dsum} is the gradient w.r.t. both x and residual (their sum is normalised). */
    void addLayerNormBackward(Tensor dsum, Tensor dy, Tensor x, Tensor residual, int rows, Tensor gamma, float eps);

    /** Backward of {@link #pool}: spreads {@code dpooled} [B, C] over the token rows of {@code dh} [N, C]. */
    void poolBackward(Tensor dh, Tensor dpooled, Batch batch, Pooling mode);

    /** Backward of {@link #l2Normalize}: {@code x} is the input before normalisation. */
    void l2NormalizeBackward(Tensor dx, Tensor dy, Tensor x, int rows);

    /** {@code dst[0..n) += src[0..n)}. */
    void add(Tensor dst, Tensor src, long n);

    /** Copies {@code n} elements from {@code src} to {@code dst} (both activations of this backend). */
    void copy(Tensor dst, Tensor src, long n);

    @Override
    default void close() {}

    enum Pooling { MEAN, CLS }
}
