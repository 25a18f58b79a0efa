package rrj.bench;

import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.Lora;
import rrj.engine.Tensor;
import rrj.engine.cuda.CudaBackend;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.RandomBert;

import java.lang.foreign.Arena;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * The GPU benchmark (one H100 run; DESIGN.md §6: GPU figures are absolute and compared with
 * cuBLAS alone and PyTorch on the same card). BERT-base shape, random weights
 * ({@link RandomBert}), fp32:
 * <ol>
 *   <li>parity first: the real {@link Bert} forward on CudaBackend against CpuBackend (1×16,
 *       a mixed-length batch, and the mixed batch with two LoRA experts): cosine ≥ 0.9999 and
 *       max |Δ| ≤ 1e-3 per pooled row, else the exit code is 1;</li>
 *   <li>forward pass (12 layers + mean pooling + reading the pooled rows back) at 128 × 128
 *       and 1 × 16 tokens, against the floor: the same GEMMs through cuBLAS alone
 *       ({@link CudaBackend#gemmFloorMillis});</li>
 *   <li>LoRA overhead at 128 × 128, r = 8 on query and value: no LoRA, 1 expert for all rows,
 *       8 experts (16 sequences each; one SGMV launch pair per adapted linear).</li>
 * </ol>
 * Medians of {@code --reps} timed runs after 3 warm-ups, wall clock with a sync per run.
 * bench/gpu/torch_eager.py times the same shapes in PyTorch eager for the comparison.
 *
 * <p>Run (on a GPU machine): {@code java --add-modules jdk.incubator.vector
 * --enable-native-access=ALL-UNNAMED -cp … rrj.bench.GpuBench [--reps 20] [--layers 12] [--quick]};
 * {@code --quick} runs tiny shapes to check the program (on cuda-emu, say), not for figures;
 * bench/gpu/device-checks.sh does it with the rest of the device checks.
 */
public final class GpuBench {
    private GpuBench() {}

    static final int C = 768, R = 8;

    public static void main(String[] args) {
        Locale.setDefault(Locale.ROOT);
        int reps = 20, layers = 12;
        int[][] shapes = {{128, 128}, {1, 16}}; // sequences × tokens; the first is also the LoRA shape
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--reps" -> reps = Integer.parseInt(args[++i]);
                case "--layers" -> layers = Integer.parseInt(args[++i]);
                case "--quick" -> shapes = new int[][]{{8, 8}, {1, 4}}; // checks the program (e.g. on cuda-emu), gives no figures
                default -> throw new IllegalArgumentException("unknown argument " + args[i] + " (--reps N, --layers L, --quick)");
            }
        }
        BertConfig c = Shapes.withLayers(RandomBert.baseConfig(), layers);
        long t0 = System.nanoTime();
        Map<String, Tensor> weights = RandomBert.weights(c, 1);
        System.out.printf("random BERT-base weights (%d layers) in %.1f s%n", layers, (System.nanoTime() - t0) / 1e9);
        boolean ok;
        try (Backend cuda = Backends.create("cuda", 1)) {
            System.out.println(cuda.describe());
            CudaBackend cb = (CudaBackend) cuda;
            Bert bert = Bert.load(c, weights, "random BERT-base", cuda);
            ok = parity(c, weights, bert);
            timings(c, bert, cb, reps, shapes);
        }
        System.out.println(ok ? "PARITY OK" : "PARITY FAILED");
        System.exit(ok ? 0 : 1);
    }

    // ------------------------------------------------------------------ parity with the CPU backend

    static boolean parity(BertConfig c, Map<String, Tensor> weights, Bert onCuda) {
        boolean ok = true;
        try (Backend cpu = Backends.create("cpu", Runtime.getRuntime().availableProcessors())) {
            Bert onCpu = Bert.load(c, weights, "random BERT-base", cpu);
            SplittableRandom r = new SplittableRandom(5);
            int[][] layouts = {{16}, {16, 5, 1, 33, 128}};
            for (int[] lens : layouts) {
                Batch batch = new Batch(lens.length).set(lens, lens.length);
                int[] ids = ids(batch.tokens, c, r);
                ok &= compare("parity " + Arrays.toString(lens), embed(onCuda, ids, batch, null), embed(onCpu, ids, batch, null), lens.length);
            }
            int[] lens = {16, 5, 1, 33, 128};
            Batch batch = new Batch(lens.length).set(lens, lens.length);
            int[] ids = ids(batch.tokens, c, r);
            int[][] ranges = {{0, batch.start[2]}, {batch.start[3], batch.tokens}}; // sequences 0-1 and 3-4; 2 has no expert
            Lora[][] onCudaPlan = plan(c, onCuda.backend(), ranges, 9), onCpuPlan = plan(c, cpu, ranges, 9);
            ok &= compare("parity " + Arrays.toString(lens) + " + 2 LoRA experts", embed(onCuda, ids, batch, onCudaPlan),
                    embed(onCpu, ids, batch, onCpuPlan), lens.length);
        }
        return ok;
    }

    static boolean compare(String what, float[] got, float[] ref, int rows) {
        double worst = 1;
        for (int b = 0; b < rows; b++)
            worst = Math.min(worst, Check.cosine(Arrays.copyOfRange(got, b * C, (b + 1) * C), Arrays.copyOfRange(ref, b * C, (b + 1) * C)));
        double maxDiff = Check.maxAbsDiff(got, ref);
        boolean ok = worst >= 0.9999 && maxDiff <= 1e-3;
        System.out.printf("%-50s min cosine %.7f  max |Δ| %.2e  %s%n", what, worst, maxDiff, ok ? "ok" : "FAILED (need ≥ 0.9999, ≤ 1e-3)");
        return ok;
    }

    static float[] embed(Bert bert, int[] ids, Batch batch, Lora[][] lora) {
        bert.forward(ids, batch, lora);
        Tensor pooled = bert.pool(batch, Backend.Pooling.MEAN, false);
        float[] out = new float[batch.size * C];
        bert.backend().read(pooled, 0, out, 0, out.length);
        return out;
    }

    static int[] ids(int n, BertConfig c, SplittableRandom r) {
        int[] ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = r.nextInt(c.vocabSize());
        return ids;
    }

    /** Per layer, query and value get one random r=8 expert per row range (rows outside every range: no LoRA). */
    static Lora[][] plan(BertConfig c, Backend be, int[][] ranges, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        Lora[][] p = new Lora[c.numLayers()][Bert.Target.values().length];
        for (int l = 0; l < c.numLayers(); l++)
            for (Bert.Target t : new Bert.Target[]{Bert.Target.QUERY, Bert.Target.VALUE}) {
                Lora lora = new Lora(ranges.length);
                for (int[] range : ranges) {
                    Tensor a = be.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 0.03, R, C));
                    Tensor b = be.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 0.03, C, R));
                    lora.add(range[0], range[1], a, b, 4f);
                }
                p[l][t.ordinal()] = lora;
            }
        return p;
    }

    // ------------------------------------------------------------------ timings

    static void timings(BertConfig c, Bert bert, CudaBackend cuda, int reps, int[][] shapes) {
        System.out.println();
        System.out.println("shape        ours (median)   cuBLAS floor   ours/floor   seq/s      TFLOP/s (ours)");
        for (int[] shape : shapes) {
            int b = shape[0], t = shape[1];
            Batch batch = uniform(b, t);
            int[] ids = ids(b * t, c, new SplittableRandom(3));
            bert.reserve(b * t);
            double ours = median(time(bert, ids, batch, null, reps));
            double floor = median(cuda.gemmFloorMillis(b, t, c.hiddenSize(), c.intermediateSize(), c.numHeads(), c.numLayers(), reps));
            double flops = Shapes.forwardFlops(c, t) * b;
            System.out.printf("%4d x %-4d  %9.3f ms   %9.3f ms   %8.2f   %9.1f   %6.2f%n", b, t, ours, floor, ours / floor,
                    b / (ours / 1e3), flops / (ours / 1e3) / 1e12);
        }
        System.out.println();
        int b = shapes[0][0], t = shapes[0][1];
        System.out.printf("LoRA r=8 on query+value, %d x %d   median      overhead vs none%n", b, t);
        Batch batch = uniform(b, t);
        int[] ids = ids(b * t, c, new SplittableRandom(4));
        double none = median(time(bert, ids, batch, null, reps));
        System.out.printf("  no LoRA                            %9.3f ms%n", none);
        for (int experts : new int[]{1, 8}) {
            int[][] ranges = new int[experts][];
            for (int e = 0; e < experts; e++) ranges[e] = new int[]{e * (b * t / experts), (e + 1) * (b * t / experts)};
            double ms = median(time(bert, ids, batch, plan(c, bert.backend(), ranges, 10 + experts), reps));
            System.out.printf("  %d expert%s                         %9.3f ms   %+6.1f %%%n", experts, experts == 1 ? " " : "s", ms, (ms / none - 1) * 100);
        }
    }

    static Batch uniform(int b, int t) {
        int[] lens = new int[b];
        Arrays.fill(lens, t);
        return new Batch(b).set(lens, b);
    }

    /** Wall time of each run (forward, pool, read back: the read waits for the GPU), after 3 warm-ups. */
    static double[] time(Bert bert, int[] ids, Batch batch, Lora[][] lora, int reps) {
        float[] out = new float[batch.size * C];
        double[] ms = new double[reps];
        for (int i = -3; i < reps; i++) {
            long t0 = System.nanoTime();
            bert.forward(ids, batch, lora);
            bert.backend().read(bert.pool(batch, Backend.Pooling.MEAN, false), 0, out, 0, out.length);
            if (i >= 0) ms[i] = (System.nanoTime() - t0) / 1e6;
        }
        return ms;
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
