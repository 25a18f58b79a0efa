package rrj.bench;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Lora;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.RandomBert;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * LoRA overhead of the forward pass at BERT-base shape (768 hidden, 12 heads, 3072 FFN),
 * batch 32 × 128 tokens, r = 8 on query + value of every layer (the paper's experts):
 * {@code none} (no LoRA), {@code one} (one expert for all 32 sequences), {@code eight} (8
 * distinct experts, 4 sequences each, one forward pass: 8 row segments per adapted linear).
 * The ratio one/none and eight/none is the overhead; targets ≤ 1.10 and ≤ 1.15.
 *
 * <p>Run: {@code java -jar bench/target/benchmarks.jar LoraOverheadBench -p threads=2}
 * (see bench/README.md).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
public class LoraOverheadBench {
    @Param({"2"})
    public int threads;
    @Param({"12"})
    public int layers;

    static final int B = 32, T = 128, R = 8;
    Backend backend;
    Bert bert;
    Batch batch;
    int[] ids;
    Lora[][] one, eight;

    @Setup(Level.Trial)
    public void setUp() {
        BertConfig base = RandomBert.baseConfig();
        BertConfig c = new BertConfig(base.vocabSize(), base.hiddenSize(), layers, base.numHeads(), base.intermediateSize(),
                base.maxPositionEmbeddings(), base.typeVocabSize(), base.layerNormEps());
        backend = Backends.create("cpu", threads);
        bert = Bert.load(c, RandomBert.weights(c, 1), "random BERT-base", backend);
        int[] lens = new int[B];
        java.util.Arrays.fill(lens, T);
        batch = new Batch(B).set(lens, B);
        SplittableRandom r = new SplittableRandom(2);
        ids = new int[B * T];
        for (int i = 0; i < ids.length; i++) ids[i] = r.nextInt(c.vocabSize());
        bert.reserve(B * T);
        one = plan(c, 1, r);
        eight = plan(c, 8, r);
    }

    /** Per layer, query and value get {@code experts} segments of B·T/experts rows each. */
    Lora[][] plan(BertConfig c, int experts, SplittableRandom r) {
        Lora[][] p = new Lora[c.numLayers()][Bert.Target.values().length];
        int rowsPer = B * T / experts;
        for (int l = 0; l < c.numLayers(); l++)
            for (Bert.Target t : new Bert.Target[]{Bert.Target.QUERY, Bert.Target.VALUE}) {
                Lora lora = new Lora(experts);
                for (int e = 0; e < experts; e++) {
                    Tensor a = backend.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 0.03, R, c.hiddenSize()));
                    Tensor b = backend.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 0.03, c.hiddenSize(), R));
                    lora.add(e * rowsPer, (e + 1) * rowsPer, a, b, 4f);
                }
                p[l][t.ordinal()] = lora;
            }
        return p;
    }

    @TearDown(Level.Trial)
    public void tearDown() { backend.close(); }

    @Benchmark
    public Tensor none() { return bert.forward(ids, batch, null); }

    @Benchmark
    public Tensor one() { return bert.forward(ids, batch, one); }

    @Benchmark
    public Tensor eight() { return bert.forward(ids, batch, eight); }
}
