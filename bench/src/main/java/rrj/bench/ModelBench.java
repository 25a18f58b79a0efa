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
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.RandomBert;

import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * {@code Bert.forward} on random weights of BERT-base and all-MiniLM-L6-v2 shape: one encoder
 * layer ({@code layers=1}) and the full encoder ({@code layers=0}: the model's own count), for
 * a query (1 × 16 tokens) and a batch (32 × 128). {@link JmhReport} gives GFLOP/s from
 * {@link Shapes#forwardFlops}.
 *
 * <p>Run: {@code java -jar bench/target/benchmarks.jar ModelBench} (see bench/README.md).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
public class ModelBench {
    @Param({"minilm", "base"})
    public String model;
    /** 0: all the model's layers; otherwise that many. */
    @Param({"1", "0"})
    public int layers;
    @Param({"1x16", "32x128"})
    public String batchShape;
    @Param({"cpu"})
    public String backend;
    @Param({"2"})
    public int threads;

    Backend be;
    Bert bert;
    Batch batch;
    int[] ids;

    @Setup(Level.Trial)
    public void setUp() {
        BertConfig c = Shapes.config(model);
        if (layers > 0) c = Shapes.withLayers(c, layers);
        be = Backends.create(backend, threads);
        bert = Bert.load(c, RandomBert.weights(c, 5), "random " + model, be);
        String[] bt = batchShape.split("x");
        int b = Integer.parseInt(bt[0]), t = Integer.parseInt(bt[1]);
        int[] lens = new int[b];
        java.util.Arrays.fill(lens, t);
        batch = new Batch(b).set(lens, b);
        SplittableRandom r = new SplittableRandom(6);
        ids = new int[b * t];
        for (int i = 0; i < ids.length; i++) ids[i] = 1000 + r.nextInt(c.vocabSize() - 1000);
        bert.reserve(b * t);
        bert.forward(ids, batch, null); // packs the weights
    }

    @TearDown(Level.Trial)
    public void tearDown() { be.close(); }

    @Benchmark
    public Tensor forward() { return bert.forward(ids, batch, null); }
}
