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
import org.openjdk.jmh.annotations.Warmup;
import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.RandomBert;

import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * The oracle ({@link ReferenceBackend}: plain loops, one thread, double accumulation) on the
 * small shapes only — it is slow on purpose. The baseline the CPU backend's speed-up is read
 * against: the same op names and shapes as {@link KernelBench} and {@link ModelBench}.
 *
 * <p>Run: {@code java -jar bench/target/benchmarks.jar ReferenceBench}.
 */
public class ReferenceBench {
    private ReferenceBench() {}

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 2, time = 1)
    @Measurement(iterations = 3, time = 2)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class Gemm {
        @Param({"minilm.qkvo", "minilm.ffn_up", "base.qkvo"})
        public String shape;
        @Param({"16"})
        public int rows;
        @Param({"ref"})
        public String backend;

        Backend be;
        Tensor x, y, w, b;

        @Setup(Level.Trial)
        public void setUp() {
            Shapes.Linear s = Shapes.LINEAR.get(shape);
            be = new ReferenceBackend();
            SplittableRandom r = new SplittableRandom(1);
            x = KernelBench.random(be, r, 1, rows, s.in());
            y = be.allocate(rows, s.out());
            w = KernelBench.weight(be, r, 0.05, s.out(), s.in());
            b = KernelBench.weight(be, r, 0.05, s.out());
        }

        @Benchmark
        public Tensor linear() {
            be.linear(y, x, rows, w, b, null, false);
            return y;
        }
    }

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 2, time = 1)
    @Measurement(iterations = 3, time = 2)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class Attention {
        @Param({"16"})
        public int seqLen;
        @Param({"32", "64"})
        public int headDim;
        @Param({"ref"})
        public String backend;

        Backend be;
        Tensor q, k, v, out;
        Batch batch;

        @Setup(Level.Trial)
        public void setUp() {
            be = new ReferenceBackend();
            int b = Shapes.attentionBatch(seqLen), n = b * seqLen, c = 12 * headDim;
            int[] lens = new int[b];
            java.util.Arrays.fill(lens, seqLen);
            batch = new Batch(b).set(lens, b);
            SplittableRandom r = new SplittableRandom(3);
            q = KernelBench.random(be, r, 1, n, c);
            k = KernelBench.random(be, r, 1, n, c);
            v = KernelBench.random(be, r, 1, n, c);
            out = be.allocate(n, c);
        }

        @Benchmark
        public Tensor attention() {
            be.attention(out, q, k, v, batch, 12);
            return out;
        }
    }

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 2, time = 2)
    @Measurement(iterations = 3, time = 3)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class Model {
        @Param({"minilm"})
        public String model;
        @Param({"1", "0"})
        public int layers;
        @Param({"1x16"})
        public String batchShape;
        @Param({"ref"})
        public String backend;

        Bert bert;
        Batch batch;
        int[] ids;

        @Setup(Level.Trial)
        public void setUp() {
            BertConfig c = Shapes.config(model);
            if (layers > 0) c = Shapes.withLayers(c, layers);
            bert = Bert.load(c, RandomBert.weights(c, 5), "random " + model, new ReferenceBackend());
            String[] bt = batchShape.split("x");
            int b = Integer.parseInt(bt[0]), t = Integer.parseInt(bt[1]);
            int[] lens = new int[b];
            java.util.Arrays.fill(lens, t);
            batch = new Batch(b).set(lens, b);
            SplittableRandom r = new SplittableRandom(6);
            ids = new int[b * t];
            for (int i = 0; i < ids.length; i++) ids[i] = 1000 + r.nextInt(c.vocabSize() - 1000);
        }

        @Benchmark
        public Tensor forward() { return bert.forward(ids, batch, null); }
    }
}
