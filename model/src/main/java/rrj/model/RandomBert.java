package rrj.model;

import rrj.engine.Tensor;

import java.lang.foreign.Arena;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Random BERT weights under their HF names, for tests and benchmarks of shapes we have no
 * checkpoint for (BERT-base: 768 hidden, 12 heads, 3072 FFN). Initialised like HF's
 * {@code _init_weights}: normal(0, 0.02) matrices and embeddings, zero biases — except that
 * biases and LayerNorm parameters get small random values too, so that a kernel that drops
 * them cannot pass a parity test.
 */
public final class RandomBert {
    private RandomBert() {}

    public static Map<String, Tensor> weights(BertConfig c, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        Arena arena = Arena.ofAuto();
        Map<String, Tensor> m = new LinkedHashMap<>();
        int C = c.hiddenSize(), F = c.intermediateSize();
        m.put("embeddings.word_embeddings.weight", normal(arena, r, 0, 0.02, c.vocabSize(), C));
        m.put("embeddings.position_embeddings.weight", normal(arena, r, 0, 0.02, c.maxPositionEmbeddings(), C));
        m.put("embeddings.token_type_embeddings.weight", normal(arena, r, 0, 0.02, c.typeVocabSize(), C));
        m.put("embeddings.LayerNorm.weight", normal(arena, r, 1, 0.1, C));
        m.put("embeddings.LayerNorm.bias", normal(arena, r, 0, 0.1, C));
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "encoder.layer." + l + ".";
            for (String s : new String[]{"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
                m.put(p + s + ".weight", normal(arena, r, 0, 0.02 * 2, C, C));
                m.put(p + s + ".bias", normal(arena, r, 0, 0.05, C));
            }
            m.put(p + "attention.output.LayerNorm.weight", normal(arena, r, 1, 0.1, C));
            m.put(p + "attention.output.LayerNorm.bias", normal(arena, r, 0, 0.1, C));
            m.put(p + "intermediate.dense.weight", normal(arena, r, 0, 0.02 * 2, F, C));
            m.put(p + "intermediate.dense.bias", normal(arena, r, 0, 0.05, F));
            m.put(p + "output.dense.weight", normal(arena, r, 0, 0.02 * 2, C, F));
            m.put(p + "output.dense.bias", normal(arena, r, 0, 0.05, C));
            m.put(p + "output.LayerNorm.weight", normal(arena, r, 1, 0.1, C));
            m.put(p + "output.LayerNorm.bias", normal(arena, r, 0, 0.1, C));
        }
        return m;
    }

    public static Tensor normal(Arena arena, SplittableRandom r, double mean, double std, long... shape) {
        Tensor t = Tensor.allocate(arena, shape);
        long n = t.numel();
        for (long i = 0; i < n; i++) t.setFloat(i, (float) (mean + std * gaussian(r)));
        return t;
    }

    private static double gaussian(SplittableRandom r) { // Box–Muller; SplittableRandom has no nextGaussian before JDK 17 streams
        double u = 1 - r.nextDouble(), v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }

    /** BERT-base shape (bert-base-uncased / Contriever). */
    public static BertConfig baseConfig() { return new BertConfig(30522, 768, 12, 12, 3072, 512, 2, 1e-12); }
}
