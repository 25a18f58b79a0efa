package rrj.bench;

import rrj.model.BertConfig;
import rrj.model.RandomBert;

import java.util.Map;

/**
 * The named shape tables every benchmark draws from (candle's shape tables, llm.c's napkin
 * maths), and the FLOP / byte counts that turn a time into GFLOP/s or GB/s. One place, so that
 * the JMH benchmarks, their report ({@link JmhReport}) and {@code rr bench} agree.
 *
 * <p>Legend: N token rows, B sequences, T tokens per sequence, C hidden, H heads, D = C/H,
 * F FFN width. A multiply-add counts as 2 FLOPs; softmax, GELU and LayerNorm are not counted
 * as FLOPs (they are reported as time, or as GB/s).
 */
public final class Shapes {
    private Shapes() {}

    /** A linear projection: {@code in → out} (W is [out, in]). */
    public record Linear(String name, int in, int out) {}

    /** The projection shapes of BERT-base (Contriever) and all-MiniLM-L6-v2. */
    public static final Map<String, Linear> LINEAR = Map.of(
            "base.qkvo", new Linear("base.qkvo", 768, 768),        // query / key / value / attention output
            "base.ffn_up", new Linear("base.ffn_up", 768, 3072),   // intermediate.dense
            "base.ffn_down", new Linear("base.ffn_down", 3072, 768), // output.dense
            "minilm.qkvo", new Linear("minilm.qkvo", 384, 384),
            "minilm.ffn_up", new Linear("minilm.ffn_up", 384, 1536),
            "minilm.ffn_down", new Linear("minilm.ffn_down", 1536, 384));

    /** Token rows the GEMM benchmarks run: a query, a short batch, one long sequence, a full batch. */
    public static final int[] ROWS = {16, 128, 512, 4096};

    /** Attention batches: B sequences of T tokens, B·T = 1024 token rows. */
    public static int attentionBatch(int t) { return Math.max(1, 1024 / t); }

    /** The two model shapes. */
    public static BertConfig config(String model) {
        return switch (model) {
            case "base" -> RandomBert.baseConfig();
            case "minilm" -> new BertConfig(30522, 384, 6, 12, 1536, 512, 2, 1e-12); // all-MiniLM-L6-v2
            default -> throw new IllegalArgumentException("unknown model shape '" + model + "' (base, minilm)");
        };
    }

    /** The same shape with {@code layers} layers. */
    public static BertConfig withLayers(BertConfig c, int layers) {
        return new BertConfig(c.vocabSize(), c.hiddenSize(), layers, c.numHeads(), c.intermediateSize(),
                c.maxPositionEmbeddings(), c.typeVocabSize(), c.layerNormEps());
    }

    public static double linearFlops(int rows, int in, int out) { return 2.0 * rows * in * out; }

    /** q·kᵀ and p·v for one sequence of T tokens over all heads: 2·T²·C each. */
    public static double attentionFlops(int t, int c) { return 4.0 * t * t * c; }

    /** One encoder layer over one sequence of T tokens: Q, K, V, O, FFN up and down, attention. */
    public static double layerFlops(BertConfig c, int t) {
        int C = c.hiddenSize(), F = c.intermediateSize();
        return linearFlops(t, C, C) * 4 + linearFlops(t, C, F) + linearFlops(t, F, C) + attentionFlops(t, C);
    }

    /** The encoder over one sequence of T tokens (embeddings and pooling are not counted). */
    public static double forwardFlops(BertConfig c, int t) { return c.numLayers() * layerFlops(c, t); }

    /** LoRA on query and value, rank r, one sequence of T tokens: shrink and expand, 2 targets per layer. */
    public static double loraFlops(BertConfig c, int t, int r) {
        return c.numLayers() * 2 * (linearFlops(t, c.hiddenSize(), r) + linearFlops(t, r, c.hiddenSize()));
    }

    /** add + LayerNorm moves x, residual in and the output out: 3 fp32 matrices. */
    public static double addLayerNormBytes(int rows, int c) { return 3.0 * 4 * rows * c; }
}
