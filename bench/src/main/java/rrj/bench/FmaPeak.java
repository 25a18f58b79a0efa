package rrj.bench;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Threads;
import org.openjdk.jmh.annotations.Warmup;

import java.util.concurrent.TimeUnit;

/**
 * This machine's fp32 FMA peak through the Vector API: 12 independent accumulator chains
 * ({@code c = a·b + c}, enough to cover the FMA latency on 2 pipes), no memory traffic.
 * Throughput mode with one "operation" = one FLOP, so the score reads directly as GFLOP/s
 * (ops/ns), summed over the threads. {@code peak2} runs 2 threads (the engine's default),
 * {@code peak1} one. GEMM efficiency in {@link JmhReport} is stated against {@code peak2} of
 * the same run.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class FmaPeak {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int ITERS = 1 << 16;
    /** FLOPs per invocation: 12 chains × 8 lanes × 2 × ITERS; other vector widths run ITERS·8/lanes iterations. */
    static final int FLOPS = ITERS * 12 * 8 * 2;

    float seed = 1f;

    @Benchmark
    @Threads(2)
    @OperationsPerInvocation(FLOPS)
    public float peak2() { return chains(ITERS * 8 / S.length(), seed); }

    @Benchmark
    @Threads(1)
    @OperationsPerInvocation(FLOPS)
    public float peak1() { return chains(ITERS * 8 / S.length(), seed); }

    /**
     * 12 chains: more than latency (4 cycles on Zen 3) × pipes (2) = 8 FMAs must be in flight.
     * {@code a·b + c} with c the accumulator is the form the GEMM micro-kernel uses
     * ({@code vfmadd231ps}); measured here it also beats {@code c·a + b} by ~25%.
     */
    static float chains(int iters, float seed) {
        FloatVector a = FloatVector.broadcast(S, 1e-7f * seed), b = FloatVector.broadcast(S, 0.5f);
        FloatVector c0 = FloatVector.broadcast(S, seed), c1 = c0.add(1), c2 = c0.add(2), c3 = c0.add(3), c4 = c0.add(4), c5 = c0.add(5);
        FloatVector c6 = c0.add(6), c7 = c0.add(7), c8 = c0.add(8), c9 = c0.add(9), c10 = c0.add(10), c11 = c0.add(11);
        for (int i = 0; i < iters; i++) {
            c0 = a.fma(b, c0); c1 = a.fma(b, c1); c2 = a.fma(b, c2); c3 = a.fma(b, c3);
            c4 = a.fma(b, c4); c5 = a.fma(b, c5); c6 = a.fma(b, c6); c7 = a.fma(b, c7);
            c8 = a.fma(b, c8); c9 = a.fma(b, c9); c10 = a.fma(b, c10); c11 = a.fma(b, c11);
        }
        return c0.add(c1).add(c2).add(c3).add(c4).add(c5).add(c6).add(c7).add(c8).add(c9).add(c10).add(c11)
                .reduceLanes(VectorOperators.ADD);
    }
}
