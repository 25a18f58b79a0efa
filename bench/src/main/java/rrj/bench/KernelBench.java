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

import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * The CPU backend's kernels on the shapes of {@link Shapes}, one JMH state per op. Times are
 * per call; {@link JmhReport} turns them into GFLOP/s (or GB/s) and % of {@link FmaPeak}.
 *
 * <ul>
 *   <li>{@link Gemm#linear}: {@code y = x·Wᵀ + b} for every projection shape × {16, 128, 512, 4096} rows, ours
 *       and ONNX Runtime's MatMul + Add (MLAS, W prepacked) as the baseline;</li>
 *   <li>{@link Gelu}: the FFN-up linear with and without the fused GELU (the difference is GELU's cost);</li>
 *   <li>{@link Attention}: T ∈ {16, 128, 512}, 12 heads, D ∈ {32, 64}, B = 1024 / T sequences;</li>
 *   <li>{@link AddLayerNorm}: rows × C ∈ {384, 768} (reported as GB/s).</li>
 * </ul>
 * Run: {@code java -jar bench/target/benchmarks.jar KernelBench} (see bench/README.md).
 */
public class KernelBench {
    private KernelBench() {}

    static final String[] JVM = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"};

    static Tensor random(Backend be, SplittableRandom r, double std, long... shape) {
        Tensor t = be.allocate(shape);
        float[] v = new float[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = (float) (std * (2 * r.nextDouble() - 1));
        be.write(v, 0, t, 0, v.length);
        return t;
    }

    static Tensor weight(Backend be, SplittableRandom r, double std, long... shape) {
        Tensor t = Tensor.allocate(null, shape);
        for (long i = 0; i < t.numel(); i++) t.setFloat(i, (float) (std * (2 * r.nextDouble() - 1)));
        return be.weight(t);
    }

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 3, time = 1)
    @Measurement(iterations = 5, time = 1)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class Gemm {
        @Param({"base.qkvo", "base.ffn_up", "base.ffn_down", "minilm.qkvo", "minilm.ffn_up", "minilm.ffn_down"})
        public String shape;
        @Param({"16", "128", "512", "4096"})
        public int rows;
        /** cpu: our backend; ort: ONNX Runtime's MatMul + Add (MLAS) on the same shape and threads, the baseline. */
        @Param({"cpu", "ort"})
        public String backend;
        @Param({"2"})
        public int threads;

        Backend be;
        Tensor x, y, w, b;
        OrtGemm ort;

        @Setup(Level.Trial)
        public void setUp() throws Exception {
            Shapes.Linear s = Shapes.LINEAR.get(shape);
            SplittableRandom r = new SplittableRandom(1);
            if (backend.equals("ort")) {
                float[] xs = new float[rows * s.in()], wkn = new float[s.in() * s.out()], bs = new float[s.out()];
                for (int i = 0; i < xs.length; i++) xs[i] = (float) (2 * r.nextDouble() - 1);
                for (int i = 0; i < wkn.length; i++) wkn[i] = (float) (0.1 * r.nextDouble() - 0.05);
                for (int i = 0; i < bs.length; i++) bs[i] = (float) (0.1 * r.nextDouble() - 0.05);
                ort = new OrtGemm(rows, s.in(), s.out(), threads, xs, wkn, bs);
                ort.run();
                return;
            }
            be = Backends.create(backend, threads);
            x = random(be, r, 1, rows, s.in());
            y = be.allocate(rows, s.out());
            w = weight(be, r, 0.05, s.out(), s.in());
            b = weight(be, r, 0.05, s.out());
            be.linear(y, x, rows, w, b, null, false); // first use packs W: not part of the measurement
        }

        @TearDown(Level.Trial)
        public void tearDown() throws Exception {
            if (be != null) be.close();
            if (ort != null) ort.close();
        }

        @Benchmark
        public Object linear() throws Exception {
            if (ort != null) return ort.run();
            be.linear(y, x, rows, w, b, null, false);
            return y;
        }
    }

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 3, time = 1)
    @Measurement(iterations = 5, time = 1)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class Gelu {
        @Param({"base.ffn_up", "minilm.ffn_up"})
        public String shape;
        @Param({"512"})
        public int rows;
        @Param({"2"})
        public int threads;

        Backend be;
        Tensor x, y, w, b;

        @Setup(Level.Trial)
        public void setUp() {
            Shapes.Linear s = Shapes.LINEAR.get(shape);
            be = Backends.create("cpu", threads);
            SplittableRandom r = new SplittableRandom(2);
            x = random(be, r, 1, rows, s.in());
            y = be.allocate(rows, s.out());
            w = weight(be, r, 0.05, s.out(), s.in());
            b = weight(be, r, 0.05, s.out());
            be.linear(y, x, rows, w, b, null, true);
        }

        @TearDown(Level.Trial)
        public void tearDown() { be.close(); }

        @Benchmark
        public Tensor linearGelu() {
            be.linear(y, x, rows, w, b, null, true);
            return y;
        }

        @Benchmark
        public Tensor linearOnly() {
            be.linear(y, x, rows, w, b, null, false);
            return y;
        }
    }

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 3, time = 1)
    @Measurement(iterations = 5, time = 1)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class Attention {
        @Param({"16", "128", "512"})
        public int seqLen;
        @Param({"32", "64"})
        public int headDim;
        @Param({"cpu"})
        public String backend;
        @Param({"2"})
        public int threads;
        /** heads: q, k, v as [heads][N][D] (what inference uses where the backend offers it); rows: [N][heads·D]. */
        @Param({"heads", "rows"})
        public String layout;

        static final int HEADS = 12;
        Backend be;
        Tensor q, k, v, out;
        Batch batch;

        @Setup(Level.Trial)
        public void setUp() {
            be = Backends.create(backend, threads);
            if (!List.of("heads", "rows").contains(layout)) throw new IllegalArgumentException("layout must be heads or rows, got " + layout);
            if (layout.equals("heads") && !be.supportsHeadMajor(headDim))
                throw new IllegalArgumentException(backend + " has no head-major layout for head size " + headDim + " (use -p layout=rows)");
            int b = Shapes.attentionBatch(seqLen), n = b * seqLen, c = HEADS * headDim;
            int[] lens = new int[b];
            java.util.Arrays.fill(lens, seqLen);
            batch = new Batch(b).set(lens, b);
            SplittableRandom r = new SplittableRandom(3);
            q = random(be, r, 1, n, c);
            k = random(be, r, 1, n, c);
            v = random(be, r, 1, n, c);
            out = be.allocate(n, c);
        }

        @TearDown(Level.Trial)
        public void tearDown() { be.close(); }

        @Benchmark
        public Tensor attention() {
            if (layout.equals("heads")) be.attentionHeadMajor(out, q, k, v, batch, HEADS);
            else be.attention(out, q, k, v, batch, HEADS);
            return out;
        }
    }

    @State(Scope.Benchmark)
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 3, time = 1)
    @Measurement(iterations = 5, time = 1)
    @Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
    public static class AddLayerNorm {
        @Param({"128", "4096"})
        public int rows;
        @Param({"384", "768"})
        public int hidden;
        @Param({"cpu"})
        public String backend;
        @Param({"2"})
        public int threads;

        Backend be;
        Tensor x, res, out, g, b;

        @Setup(Level.Trial)
        public void setUp() {
            be = Backends.create(backend, threads);
            SplittableRandom r = new SplittableRandom(4);
            x = random(be, r, 1, rows, hidden);
            res = random(be, r, 1, rows, hidden);
            out = be.allocate(rows, hidden);
            g = weight(be, r, 1, hidden);
            b = weight(be, r, 1, hidden);
        }

        @TearDown(Level.Trial)
        public void tearDown() { be.close(); }

        @Benchmark
        public Tensor addLayerNorm() {
            be.addLayerNorm(out, x, res, rows, g, b, 1e-12f);
            return out;
        }
    }
}
