package rrj.bench;

import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.Lora;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.Encoder;
import rrj.model.InfoNce;
import rrj.model.LoraAdapter;
import rrj.model.RandomBert;
import rrj.router.Beir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The CUDA backend against CpuBackend on a real model, on a GPU machine (bench/gpu/device-checks.sh
 * runs it). Exit code 1 if any check misses its bound.
 * <ol>
 *   <li>forward: each model directory's encoder on 96 SciFact queries and 32 corpus documents,
 *       with the base encoder and, given an experts directory, with the rows spread over base
 *       and two shipped experts in one mixed batch: per text cosine ≥ 0.9999 and max |Δ| ≤ 1e-3;</li>
 *   <li>gradients: one forward + InfoNCE + backward on each backend with the same LoRA (random
 *       A and B, so that dA is not zero; dropout 0.1 with the same seeds), for a tiny random
 *       BERT (LoRA on all six targets) and for each real model (query + value, r = 8, eight
 *       SciFact queries): for every LoRA gradient tensor and for dL/d(input),
 *       ‖g_cuda − g_cpu‖ / ‖g_cpu‖ ≤ 1e-3.</li>
 * </ol>
 * Run: {@code java … rrj.bench.GpuModelCheck [--model DIR [--experts DIR|none]]… [--data data/scifact]}
 * (experts default: {@code experts}, whose adapters fit the default model only); without
 * {@code --model} only the tiny random BERT's gradients are checked. {@code --backend ref}
 * (or {@code cpu}) puts another backend in CUDA's place: a dry run of the program without a GPU.
 */
public final class GpuModelCheck {
    private GpuModelCheck() {}

    static final double GRAD_TOL = 1e-3;

    public static void main(String[] args) throws IOException {
        Locale.setDefault(Locale.ROOT);
        List<Path[]> models = new ArrayList<>(); // {model dir, experts dir or null}
        Path data = Path.of("data/scifact");
        Path experts = Path.of("experts");
        String tested = "cuda";
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--model" -> models.add(new Path[]{Path.of(args[++i]), experts});
                case "--data" -> data = Path.of(args[++i]);
                case "--experts" -> { // for the --model before it (and the ones after, until the next --experts)
                    experts = args[++i].equals("none") ? null : Path.of(args[i]);
                    if (!models.isEmpty()) models.getLast()[1] = experts;
                }
                case "--backend" -> tested = args[++i];
                default -> throw new IllegalArgumentException("unknown argument " + args[i]
                        + " (--model DIR [--experts DIR|none] …, --data DIR, --backend NAME)");
            }
        }
        boolean ok = true;
        try (Backend cuda = Backends.create(tested, 1); Backend cpu = Backends.create("cpu", Runtime.getRuntime().availableProcessors())) {
            System.out.println(cuda.describe());
            BertConfig tiny = new BertConfig(60, 32, 2, 4, 64, 16, 2, 1e-12);
            var w = RandomBert.weights(tiny, 5);
            Bert tg = Bert.load(tiny, w, "tiny", cuda), tc = Bert.load(tiny, w, "tiny", cpu);
            SplittableRandom r = new SplittableRandom(7);
            int[][] seqs = new int[4][];
            for (int i = 0; i < seqs.length; i++) {
                seqs[i] = new int[3 + 4 * i];
                for (int j = 0; j < seqs[i].length; j++) seqs[i][j] = r.nextInt(tiny.vocabSize());
            }
            for (boolean normalize : new boolean[]{true, false})
                ok &= gradients("tiny random BERT, 6 targets, " + (normalize ? "mean+l2" : "cls"), tg, tc, seqs,
                        List.of(Bert.Target.values()), 4, normalize ? Backend.Pooling.MEAN : Backend.Pooling.CLS, normalize);
            for (Path[] m : models)
                try (Encoder eg = Encoder.open(m[0], cuda, null, null, null); Encoder ec = Encoder.open(m[0], cpu, null, null, null)) {
                    ok &= realModel(eg, ec, data, m[1]);
                }
        }
        System.out.println(ok ? "GPU MODEL CHECKS OK" : "GPU MODEL CHECKS FAILED");
        System.exit(ok ? 0 : 1);
    }

    static boolean realModel(Encoder eg, Encoder ec, Path data, Path experts) throws IOException {
        boolean ok = true;
        var queries = Beir.readQueries(Beir.find(data.resolve("queries.jsonl")));
        var corpus = Beir.readCorpus(Beir.find(data.resolve("corpus.jsonl")), "");
        List<String> texts = new ArrayList<>(queries.values().stream().limit(96).toList());
        texts.addAll(Arrays.asList(corpus.texts()).subList(0, 32));
        String model = eg.dir.getFileName().toString();
        ok &= compare(model + ", " + texts.size() + " texts, base", eg.embed(texts), ec.embed(texts));
        if (experts != null) ok &= mixedExperts(eg, ec, texts, experts);
        int[][] seqs = new int[8][];
        for (int i = 0; i < seqs.length; i++) seqs[i] = eg.tokenize(texts.get(i));
        ok &= gradients(model + ", query+value r=8, 8 SciFact queries", eg.bert, ec.bert, seqs,
                List.of(Bert.Target.QUERY, Bert.Target.VALUE), 8, eg.options.pooling(), eg.options.normalize());
        return ok;
    }

    /** The texts spread over base, scifact and arguana (the shipped experts) in one mixed batch. */
    static boolean mixedExperts(Encoder eg, Encoder ec, List<String> texts, Path experts) throws IOException {
        String[] names = {"scifact", "arguana"};
        LoraAdapter[] onG = new LoraAdapter[texts.size()], onC = new LoraAdapter[texts.size()];
        LoraAdapter[] ag = new LoraAdapter[names.length], ac = new LoraAdapter[names.length];
        for (int e = 0; e < names.length; e++) {
            ag[e] = LoraAdapter.load(names[e], experts.resolve(names[e]), eg.bert.config, eg.bert.backend(), Arena.ofAuto());
            ac[e] = LoraAdapter.load(names[e], experts.resolve(names[e]), ec.bert.config, ec.bert.backend(), Arena.ofAuto());
        }
        for (int i = 0; i < texts.size(); i++) {
            int e = i % 3 - 1; // base, scifact, arguana, base, ...
            onG[i] = e < 0 ? null : ag[e];
            onC[i] = e < 0 ? null : ac[e];
        }
        return compare(eg.dir.getFileName() + ", same texts, base + scifact + arguana mixed", eg.embed(texts, onG), ec.embed(texts, onC));
    }

    static boolean compare(String what, float[][] got, float[][] ref) {
        double worst = 1, maxDiff = 0;
        for (int i = 0; i < got.length; i++) {
            worst = Math.min(worst, Check.cosine(got[i], ref[i]));
            maxDiff = Math.max(maxDiff, Check.maxAbsDiff(got[i], ref[i]));
        }
        boolean ok = worst >= 0.9999 && maxDiff <= 1e-3;
        System.out.printf("forward   %-62s min cosine %.7f  max |Δ| %.2e  %s%n", what, worst, maxDiff, ok ? "ok" : "FAILED (need ≥ 0.9999, ≤ 1e-3)");
        return ok;
    }

    /** One training step's gradients on both backends from the same LoRA and batch; compares them. */
    static boolean gradients(String what, Bert onGpu, Bert onCpu, int[][] seqs, List<Bert.Target> targets, int rank,
                             Backend.Pooling mode, boolean normalize) {
        BertConfig c = onCpu.config;
        int L = c.numLayers(), T = Bert.Target.values().length, hidden = c.hiddenSize();
        SplittableRandom r = new SplittableRandom(11);
        float[][][][] ab = new float[L][T][][];
        for (int l = 0; l < L; l++)
            for (Bert.Target t : targets) {
                int in = t == Bert.Target.OUTPUT ? c.intermediateSize() : hidden, out = t == Bert.Target.INTERMEDIATE ? c.intermediateSize() : hidden;
                float[] a = new float[rank * in], b = new float[out * rank];
                for (int i = 0; i < a.length; i++) a[i] = (float) ((r.nextDouble() * 2 - 1) / Math.sqrt(in));
                for (int i = 0; i < b.length; i++) b[i] = (float) (r.nextGaussian() * 0.02);
                ab[l][t.ordinal()] = new float[][]{a, b};
            }
        double[][] docs = new double[seqs.length][hidden];
        for (double[] d : docs) {
            double n = 0;
            for (int k = 0; k < hidden; k++) { d[k] = r.nextGaussian(); n += d[k] * d[k]; }
            for (int k = 0; k < hidden; k++) d[k] /= Math.sqrt(n);
        }
        List<float[]> g = step(onGpu, seqs, targets, rank, ab, docs, mode, normalize), ref = step(onCpu, seqs, targets, rank, ab, docs, mode, normalize);
        double worst = 0;
        String worstName = "";
        for (int i = 0; i < ref.size(); i++) {
            double d2 = 0, r2 = 0;
            for (int k = 0; k < ref.get(i).length; k++) {
                double d = g.get(i)[k] - ref.get(i)[k];
                d2 += d * d;
                r2 += (double) ref.get(i)[k] * ref.get(i)[k];
            }
            double rel = Math.sqrt(d2) / Math.max(Math.sqrt(r2), 1e-30);
            if (rel > worst) { worst = rel; worstName = i == ref.size() - 1 ? "dL/d(input)" : "tensor " + i; }
        }
        boolean ok = worst <= GRAD_TOL;
        System.out.printf("gradients %-62s %d tensors  worst ‖Δ‖/‖g‖ %.2e (%s)  %s%n", what, ref.size(), worst, worstName,
                ok ? "ok" : "FAILED (need ≤ " + GRAD_TOL + ")");
        return ok;
    }

    /** Forward, InfoNCE (τ = 0.05) against {@code docs}, backward; returns every dA, dB, then dL/d(input), on the host. */
    static List<float[]> step(Bert bert, int[][] seqs, List<Bert.Target> targets, int rank, float[][][][] ab, double[][] docs,
                              Backend.Pooling mode, boolean normalize) {
        Backend be = bert.backend();
        BertConfig c = bert.config;
        int b = seqs.length, hidden = c.hiddenSize(), n = 0;
        int[] lens = new int[b];
        for (int i = 0; i < b; i++) { lens[i] = seqs[i].length; n += lens[i]; }
        int[] ids = new int[n];
        for (int i = 0, o = 0; i < b; o += lens[i], i++) System.arraycopy(seqs[i], 0, ids, o, lens[i]);
        Batch batch = new Batch(b).set(lens, b);
        Lora[][] plan = new Lora[c.numLayers()][Bert.Target.values().length];
        List<Tensor> grads = new ArrayList<>();
        for (int l = 0; l < c.numLayers(); l++)
            for (Bert.Target t : targets) {
                float[][] x = ab[l][t.ordinal()];
                int in = x[0].length / rank, out = x[1].length / rank;
                Lora lora = new Lora(1);
                lora.add(0, n, be.weight(Tensor.of(x[0], rank, in)), be.weight(Tensor.of(x[1], out, rank)), 32f / rank);
                Tensor ga = be.allocate(rank, in), gb = be.allocate(out, rank);
                be.write(new float[rank * in], 0, ga, 0, rank * in);
                be.write(new float[out * rank], 0, gb, 0, out * rank);
                lora.setGrad(0, ga, gb);
                lora.dropout = 0.1f;
                lora.seed = 1000 + 17L * (l * 8 + t.ordinal());
                plan[l][t.ordinal()] = lora;
                grads.add(ga);
                grads.add(gb);
            }
        Bert.Trace tr = bert.newTrace(n, b);
        bert.forward(ids, batch, plan, bert.weights, tr);
        Tensor pooled = bert.pool(tr, batch, mode, normalize);
        float[] flat = new float[b * hidden];
        be.read(pooled, 0, flat, 0, flat.length);
        double[][] q = new double[b][hidden], dq = new double[b][hidden];
        for (int i = 0; i < b; i++) for (int k = 0; k < hidden; k++) q[i][k] = flat[i * hidden + k];
        InfoNce.lossAndGrad(q, docs, 0.05, dq);
        for (int i = 0; i < b; i++) for (int k = 0; k < hidden; k++) flat[i * hidden + k] = (float) dq[i][k];
        be.write(flat, 0, tr.dPooled, 0, flat.length);
        Tensor dIn = bert.backward(tr, batch, plan, bert.weights, mode, normalize);
        List<float[]> out = new ArrayList<>();
        for (Tensor t : grads) out.add(host(be, t, Math.toIntExact(t.numel())));
        out.add(host(be, dIn, n * hidden));
        return out;
    }

    static float[] host(Backend be, Tensor t, int n) {
        float[] x = new float[n];
        be.read(t, 0, x, 0, n);
        return x;
    }
}
