package rrj.model;

import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Trains one LoRA expert on the query side of a frozen encoder (DESIGN.md §2): InfoNCE over
 * query·document dot products with in-batch negatives (τ = 0.05), documents encoded by the
 * frozen base encoder (given as vectors: no activations kept, no gradient), AdamW (lr 1e-4,
 * weight decay 0.01, β = (0.9, 0.999), ε = 1e-8, PyTorch's decoupled decay), linear warm-up
 * over the first 10 % of steps then linear decay to 0, gradient clipping at global norm 1,
 * LoRA dropout 0.1. Only A and B train; gradients flow through every frozen layer below them.
 *
 * <p>Deterministic given the seed and the thread count: the initialisation, the dropout masks
 * (a hash of seed, step, module, row, column) and the reductions are all fixed.
 *
 * <p>Initialisation as PEFT's default: A ~ U(−1/√in, 1/√in) (kaiming_uniform with a = √5),
 * B = 0, so the untrained expert is exactly the base model.
 */
public final class LoraTrainer {

    /** Hyper-parameters; {@link #defaults} are the paper's recipe. */
    public record Hyper(int rank, double alpha, List<Bert.Target> targets, double lr, double weightDecay,
                        double warmupFraction, double dropout, double temperature, double clipNorm, long seed) {
        public static Hyper defaults() {
            return new Hyper(8, 32, List.of(Bert.Target.QUERY, Bert.Target.VALUE), 1e-4, 0.01, 0.1, 0.1, 0.05, 1.0, 42);
        }
    }

    /** Training stopped because the loss or a gradient became NaN/infinite. */
    public static final class DivergedException extends RuntimeException {
        public DivergedException(String message) { super(message); }
    }

    public final Encoder encoder;
    public final Hyper hyper;
    public final LoraAdapter adapter;
    public final int totalSteps;
    public int step;                 // steps done
    private final List<Tensor> params = new ArrayList<>(), grads = new ArrayList<>();
    private final List<float[]> m = new ArrayList<>(), v = new ArrayList<>();
    private final Lora[][] plan;
    private final Bert.Trace trace;
    private final Batch batch = new Batch(64);

    /** A fresh adapter (B = 0) named {@code name} for {@code encoder}'s model. */
    public LoraTrainer(String name, Encoder encoder, Hyper hyper, int totalSteps) {
        this.encoder = encoder;
        this.hyper = hyper;
        this.totalSteps = totalSteps;
        Backend be = encoder.bert.backend();
        BertConfig c = encoder.bert.config;
        int L = c.numLayers(), T = Bert.Target.values().length;
        Tensor[][] A = new Tensor[L][T], B = new Tensor[L][T];
        float[][] scale = new float[L][T];
        SplittableRandom rnd = new SplittableRandom(hyper.seed());
        plan = new Lora[L][T];
        for (int l = 0; l < L; l++)
            for (Bert.Target t : hyper.targets()) {
                int in = t == Bert.Target.OUTPUT ? c.intermediateSize() : c.hiddenSize();
                int out = t == Bert.Target.INTERMEDIATE ? c.intermediateSize() : c.hiddenSize();
                float[] a = new float[hyper.rank() * in];
                double bound = 1 / Math.sqrt(in);
                for (int i = 0; i < a.length; i++) a[i] = (float) ((rnd.nextDouble() * 2 - 1) * bound);
                Tensor ta = be.weight(Tensor.of(a, hyper.rank(), in)), tb = be.weight(Tensor.of(new float[out * hyper.rank()], out, hyper.rank()));
                int ti = t.ordinal();
                A[l][ti] = ta;
                B[l][ti] = tb;
                scale[l][ti] = (float) (hyper.alpha() / hyper.rank());
                Tensor ga = be.allocate(hyper.rank(), in), gb = be.allocate(out, hyper.rank());
                params.add(ta); grads.add(ga); m.add(new float[(int) ta.numel()]); v.add(new float[(int) ta.numel()]);
                params.add(tb); grads.add(gb); m.add(new float[(int) tb.numel()]); v.add(new float[(int) tb.numel()]);
                plan[l][ti] = new Lora(1);
            }
        Map<String, Object> cfg = LoraAdapter.peftConfig(hyper.rank(), hyper.alpha(), false, List.of(), encoder.dir.getFileName().toString());
        cfg.put("target_modules", LoraAdapter.peftTargets(hyper.targets()));
        cfg.put("lora_dropout", hyper.dropout());
        adapter = new LoraAdapter(name, null, L, A, B, scale, cfg);
        trace = encoder.bert.newTrace(64, 8);
        // gradient tensors hang off the plan's segments; index them in params order
        int p = 0;
        for (int l = 0; l < L; l++)
            for (Bert.Target t : hyper.targets()) {
                plan[l][t.ordinal()].add(0, 0, A[l][t.ordinal()], B[l][t.ordinal()], scale[l][t.ordinal()]);
                plan[l][t.ordinal()].setGrad(0, grads.get(p), grads.get(p + 1));
                p += 2;
            }
    }

    /** The learning rate at step s (0-based): linear warm-up, then linear decay to 0. */
    public double learningRate(int s) {
        int warm = Math.max(1, (int) Math.round(hyper.warmupFraction() * totalSteps));
        if (s < warm) return hyper.lr() * (s + 1) / warm;
        return hyper.lr() * Math.max(0, totalSteps - s) / Math.max(1, totalSteps - warm);
    }

    /**
     * One optimisation step on a batch: query token ids (with specials) and the base-encoder
     * embeddings of their positive documents ({@code docs[i]} is query i's positive; all other
     * rows are its negatives). Returns the loss before the update.
     */
    public double step(int[][] queries, float[][] docs) {
        Bert bert = encoder.bert;
        Backend be = bert.backend();
        int b = queries.length, c = bert.config.hiddenSize();
        if (b != docs.length || b < 2) throw new IllegalArgumentException("a training batch needs ≥ 2 (query, document) pairs, got " + b);
        int n = 0;
        int[] lens = new int[b];
        for (int i = 0; i < b; i++) { lens[i] = queries[i].length; n += lens[i]; }
        int[] packed = new int[n];
        for (int i = 0, o = 0; i < b; i++) { System.arraycopy(queries[i], 0, packed, o, lens[i]); o += lens[i]; }
        batch.set(lens, b);
        for (int l = 0; l < plan.length; l++)
            for (int t = 0; t < plan[l].length; t++) {
                Lora x = plan[l][t];
                if (x == null) continue;
                x.rowEnd[0] = n;
                x.dropout = (float) hyper.dropout();
                x.seed = hyper.seed() * 0x9E3779B97F4A7C15L + step * 1_000_003L + l * 104_729L + t * 7_919L; // a fresh mask per step and module
            }
        for (Tensor g : grads) { // through the backend: on a device backend the gradients live in device memory
            float[] zero = gradHost(g);
            java.util.Arrays.fill(zero, 0f);
            be.write(zero, 0, g, 0, zero.length);
        }
        bert.forward(packed, batch, plan, bert.weights, trace);
        Tensor pooled = bert.pool(trace, batch, encoder.options.pooling(), encoder.options.normalize());
        float[] flat = new float[b * c];
        be.read(pooled, 0, flat, 0, flat.length);
        double[][] q = new double[b][c], d = new double[b][c], dq = new double[b][c];
        for (int i = 0; i < b; i++) for (int k = 0; k < c; k++) { q[i][k] = flat[i * c + k]; d[i][k] = docs[i][k]; }
        double loss = InfoNce.lossAndGrad(q, d, hyper.temperature(), dq);
        if (!Double.isFinite(loss)) throw new DivergedException("loss is " + loss + " at step " + (step + 1));
        for (int i = 0; i < b; i++) for (int k = 0; k < c; k++) flat[i * c + k] = (float) dq[i][k];
        be.write(flat, 0, trace.dPooled, 0, flat.length);
        bert.backward(trace, batch, plan, bert.weights, encoder.options.pooling(), encoder.options.normalize());
        for (Lora[] row : plan) for (Lora x : row) if (x != null) x.dropout = 0; // inference with this adapter sees no dropout
        adamW();
        step++;
        return loss;
    }

    /** Global-norm clipping, then PyTorch's AdamW update on every A and B. */
    private void adamW() {
        double norm2 = 0;
        Backend be = encoder.bert.backend();
        for (Tensor g : grads) {
            float[] h = gradHost(g);
            be.read(g, 0, h, 0, h.length);
            for (float x : h) norm2 += (double) x * x;
        }
        double norm = Math.sqrt(norm2);
        if (!Double.isFinite(norm)) throw new DivergedException("gradient norm is " + norm + " at step " + (step + 1));
        double clip = norm > hyper.clipNorm() ? hyper.clipNorm() / (norm + 1e-6) : 1.0;
        double lr = learningRate(step), b1 = 0.9, b2 = 0.999, eps = 1e-8;
        int t = step + 1;
        double c1 = 1 - Math.pow(b1, t), c2 = 1 - Math.pow(b2, t);
        for (int p = 0; p < params.size(); p++) {
            Tensor w = params.get(p);
            float[] g = gradHost(grads.get(p));
            float[] mp = m.get(p), vp = v.get(p);
            for (int i = 0; i < mp.length; i++) {
                double gi = g[i] * clip;
                double wi = w.getFloat(i);
                wi -= lr * hyper.weightDecay() * wi;
                mp[i] = (float) (b1 * mp[i] + (1 - b1) * gi);
                vp[i] = (float) (b2 * vp[i] + (1 - b2) * gi * gi);
                wi -= lr * (mp[i] / c1) / (Math.sqrt(vp[i] / c2) + eps);
                w.setFloat(i, (float) wi);
            }
        }
        lastGradNorm = norm;
    }

    public double lastGradNorm;

    private final java.util.IdentityHashMap<Tensor, float[]> gradCopies = new java.util.IdentityHashMap<>();

    /** The host copy of a gradient tensor (read from the backend in {@link #adamW}). */
    private float[] gradHost(Tensor g) {
        return gradCopies.computeIfAbsent(g, t -> new float[Math.toIntExact(t.numel())]);
    }

    // ------------------------------------------------------------------ checkpoints

    /**
     * Saves the adapter (PEFT layout) and the optimiser state ({@code trainer_state.safetensors}:
     * Adam moments, step, extra fields) into {@code dir}, atomically per file.
     */
    public void checkpoint(Path dir, Map<String, String> extra) throws IOException {
        adapter.save(dir);
        Map<String, Tensor> st = new LinkedHashMap<>();
        for (int p = 0; p < params.size(); p++) {
            st.put("m." + p, Tensor.of(m.get(p), m.get(p).length));
            st.put("v." + p, Tensor.of(v.get(p), v.get(p).length));
        }
        Map<String, String> meta = new LinkedHashMap<>(extra);
        meta.put("step", Integer.toString(step));
        meta.put("total_steps", Integer.toString(totalSteps));
        Safetensors.write(dir.resolve("trainer_state.safetensors"), st, meta);
    }

    /** Restores adapter weights and optimiser state written by {@link #checkpoint}; returns its extra fields. */
    public Map<String, String> resume(Path dir) throws IOException {
        BertConfig c = encoder.bert.config;
        LoraAdapter saved = LoraAdapter.load(adapter.name, dir, c, encoder.bert.backend(), Arena.ofAuto());
        Safetensors.File st = Safetensors.open(dir.resolve("trainer_state.safetensors"), Arena.ofAuto());
        int p = 0;
        for (int l = 0; l < c.numLayers(); l++)
            for (Bert.Target t : hyper.targets()) {
                if (!saved.has(l, t)) throw new IllegalArgumentException(dir + ": checkpoint lacks layer " + l + " " + t.module);
                copyInto(adapter.a[l][t.ordinal()], saved.a[l][t.ordinal()], dir);
                copyInto(adapter.b[l][t.ordinal()], saved.b[l][t.ordinal()], dir);
                p += 2;
            }
        for (int i = 0; i < p; i++) {
            float[] mm = st.get("m." + i).toFloatArray(), vv = st.get("v." + i).toFloatArray();
            if (mm.length != m.get(i).length) throw new IllegalArgumentException(dir + ": optimiser state " + i + " has the wrong size");
            System.arraycopy(mm, 0, m.get(i), 0, mm.length);
            System.arraycopy(vv, 0, v.get(i), 0, vv.length);
        }
        step = Integer.parseInt(st.metadata().get("step"));
        return st.metadata();
    }

    private static void copyInto(Tensor dst, Tensor src, Path dir) {
        if (dst.numel() != src.numel()) throw new IllegalArgumentException(dir + ": checkpoint tensor shape differs (different --rank?)");
        for (long i = 0; i < dst.numel(); i++) dst.setFloat(i, src.getFloat(i));
    }

    /** True when the checkpoint directory holds a resumable state. */
    public static boolean hasCheckpoint(Path dir) {
        return Files.exists(dir.resolve("trainer_state.safetensors")) && Files.exists(dir.resolve("adapter_model.safetensors"));
    }
}
