package rrj.model;

import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.DType;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.util.Arrays;
import java.util.Map;

/**
 * The BERT encoder (HF modeling_bert.py's BertModel without the pooler), as one forward pass
 * over named backend ops on flat buffers — llm.c's gpt2_forward, for an encoder.
 *
 * <p>Legend: B sequences, N = Σ lengths packed token rows (no padding anywhere), C hidden,
 * H heads, D = C/H, F FFN width, R LoRA rank, L layers.
 *
 * <p>Easy to get wrong, and done as HF does: LayerNorm comes AFTER each residual add
 * (post-LN); GELU is the exact erf form; attention is bidirectional and sees only the tokens
 * of its own sequence (the padding mask, without the padding); mean pooling averages every
 * token of the sequence, [CLS] and [SEP] included.
 *
 * <p>Activations are allocated once for a maximum of {@code capacity} token rows and reused;
 * a larger batch grows them once. Not thread-safe: one forward pass at a time.
 */
public final class Bert {

    /** One encoder layer's weights; HF names relative to {@code encoder.layer.N.}. */
    public record Layer(
            Tensor wq, Tensor bq,     // attention.self.query.{weight [C,C], bias [C]}
            Tensor wk, Tensor bk,     // attention.self.key
            Tensor wv, Tensor bv,     // attention.self.value
            Tensor wo, Tensor bo,     // attention.output.dense [C,C]
            Tensor ln1g, Tensor ln1b, // attention.output.LayerNorm [C]
            Tensor wi, Tensor bi,     // intermediate.dense [F,C]
            Tensor wf, Tensor bf,     // output.dense [C,F]
            Tensor ln2g, Tensor ln2b  // output.LayerNorm [C]
    ) {}

    /** All weights; HF names for a bare BertModel (no {@code bert.} prefix). */
    public record Weights(
            Tensor wordEmb,   // embeddings.word_embeddings.weight [V,C]
            Tensor posEmb,    // embeddings.position_embeddings.weight [P,C]
            Tensor typeEmb,   // embeddings.token_type_embeddings.weight [T,C]
            Tensor embLnG,    // embeddings.LayerNorm.weight [C]
            Tensor embLnB,    // embeddings.LayerNorm.bias [C]
            Layer[] layers) {}

    /** LoRA targets: the HF module names of a BERT layer that {@link Backend#linear} can adapt. */
    public enum Target {
        QUERY("attention.self.query"), KEY("attention.self.key"), VALUE("attention.self.value"),
        ATTENTION_OUTPUT("attention.output.dense"), INTERMEDIATE("intermediate.dense"), OUTPUT("output.dense");

        public final String module;

        Target(String module) { this.module = module; }
    }

    public final BertConfig config;
    public final Weights weights;
    private final Backend backend;
    private final int headDim;
    private final boolean headMajor; // inference writes q, k, v head-major (Backend.supportsHeadMajor)

    // activations, [capacity, ·]
    private int capacity;
    private Tensor h;    // [N, C] hidden state, layer input and output
    private Tensor h1;   // [N, C] after attention + LayerNorm
    private Tensor q, k, v, ctx; // [N, C]
    private Tensor qkv;  // head-major backends: q, k, v one after another, each [heads][N][D], in [3·capacity, C]
    private int qkvRows = -1;
    private Tensor qh, kh, vh; // qkv's three parts for a batch of qkvRows rows
    private Tensor tmp;  // [N, C] attention output dense / FFN output before the residual
    private Tensor ff;   // [N, F] FFN hidden after GELU
    private Tensor pooled; // [B ≤ N, C]
    private int[] positions = new int[0], types = new int[0];

    public Bert(BertConfig config, Weights weights, Backend backend) {
        this.config = config;
        this.weights = weights;
        this.backend = backend;
        this.headDim = config.headDim();
        this.headMajor = backend != null && backend.supportsHeadMajor(headDim); // null: check() validates names and shapes only
    }

    /** Loads and checks every weight from a safetensors file, making each resident on the backend. */
    public static Bert load(BertConfig c, Safetensors.File file, Backend backend) {
        return load(c, file.tensors(), file.path().toString(), backend);
    }

    /** As {@link #load(BertConfig, Safetensors.File, Backend)} from tensors in memory; {@code where} names them in errors. */
    public static Bert load(BertConfig c, Map<String, Tensor> t, String where, Backend backend) {
        int C = c.hiddenSize(), F = c.intermediateSize();
        Layer[] layers = new Layer[c.numLayers()];
        for (int l = 0; l < layers.length; l++) {
            String p = "encoder.layer." + l + ".";
            layers[l] = new Layer(
                    w(t, where, backend, p + "attention.self.query.weight", C, C), w(t, where, backend, p + "attention.self.query.bias", C),
                    w(t, where, backend, p + "attention.self.key.weight", C, C), w(t, where, backend, p + "attention.self.key.bias", C),
                    w(t, where, backend, p + "attention.self.value.weight", C, C), w(t, where, backend, p + "attention.self.value.bias", C),
                    w(t, where, backend, p + "attention.output.dense.weight", C, C), w(t, where, backend, p + "attention.output.dense.bias", C),
                    w(t, where, backend, p + "attention.output.LayerNorm.weight", C), w(t, where, backend, p + "attention.output.LayerNorm.bias", C),
                    w(t, where, backend, p + "intermediate.dense.weight", F, C), w(t, where, backend, p + "intermediate.dense.bias", F),
                    w(t, where, backend, p + "output.dense.weight", C, F), w(t, where, backend, p + "output.dense.bias", C),
                    w(t, where, backend, p + "output.LayerNorm.weight", C), w(t, where, backend, p + "output.LayerNorm.bias", C));
        }
        if (t.containsKey("encoder.layer." + layers.length + ".attention.self.query.weight"))
            throw new Safetensors.FormatException(where + ": has more layers than num_hidden_layers=" + layers.length);
        Weights ws = new Weights(
                w(t, where, backend, "embeddings.word_embeddings.weight", c.vocabSize(), C),
                w(t, where, backend, "embeddings.position_embeddings.weight", c.maxPositionEmbeddings(), C),
                w(t, where, backend, "embeddings.token_type_embeddings.weight", c.typeVocabSize(), C),
                w(t, where, backend, "embeddings.LayerNorm.weight", C),
                w(t, where, backend, "embeddings.LayerNorm.bias", C),
                layers);
        return new Bert(c, ws, backend);
    }

    /** Checks names and shapes of every weight against the config without loading anything. */
    public static void check(BertConfig c, Safetensors.File file) {
        load(c, file, null);
    }

    private static Tensor w(Map<String, Tensor> t, String where, Backend backend, String name, long... shape) {
        Tensor x = t.get(name);
        if (x == null) throw new Safetensors.FormatException(where + ": missing tensor '" + name + "'");
        if (!Arrays.equals(x.shape(), shape))
            throw new Safetensors.FormatException(where + ": tensor '" + name + "' has shape " + Arrays.toString(x.shape())
                    + ", config.json implies " + Arrays.toString(shape));
        return backend == null ? x : backend.weight(x);
    }

    public Backend backend() { return backend; }

    private void ensureCapacity(int tokens) {
        if (tokens <= capacity) return;
        int n = Math.max(tokens, 64);
        int C = config.hiddenSize(), F = config.intermediateSize();
        h = backend.allocate(n, C); h1 = backend.allocate(n, C);
        if (headMajor) { qkv = backend.allocate(3L * n, C); qkvRows = -1; }
        else { q = backend.allocate(n, C); k = backend.allocate(n, C); v = backend.allocate(n, C); }
        ctx = backend.allocate(n, C); tmp = backend.allocate(n, C);
        ff = backend.allocate(n, F);
        pooled = backend.allocate(n, C);
        positions = new int[n];
        types = new int[n];
        capacity = n;
    }

    /** Reserves activations for batches of up to {@code tokens} packed rows. */
    public void reserve(int tokens) { ensureCapacity(tokens); }

    /**
     * The encoder over a packed batch: {@code ids} holds the B sequences back to back as laid
     * out by {@code batch}. Returns the last hidden state [N, C] (valid until the next call).
     *
     * @param lora per layer and {@link Target} ordinal, the LoRA segments to apply, or null
     */
    public Tensor forward(int[] ids, Batch batch, Lora[][] lora) {
        return forward(ids, batch, lora, weights);
    }

    /**
     * As {@link #forward(int[], Batch, Lora[][])} with another weight set of the same shapes
     * (the "merged" LoRA mode: {@link LoraAdapter#merge}).
     */
    public Tensor forward(int[] ids, Batch batch, Lora[][] lora, Weights W) {
        return forward(ids, batch, lora, W, null);
    }

    /**
     * The forward pass. With a {@link Trace} (training), every activation the backward pass
     * needs is kept per layer and GELU runs unfused so that its input survives; without one,
     * the buffers are reused layer after layer.
     */
    public Tensor forward(int[] ids, Batch batch, Lora[][] lora, Weights W, Trace tr) {
        BertConfig c = config;
        int n = batch.tokens;
        ensureCapacity(n);
        if (tr != null) tr.ensure(n, batch.size);
        for (int b = 0; b < batch.size; b++) {
            int len = batch.length(b);
            if (len > c.maxPositionEmbeddings())
                throw new IllegalArgumentException("sequence " + b + " has " + len + " tokens, more than max_position_embeddings "
                        + c.maxPositionEmbeddings());
            for (int i = 0; i < len; i++) positions[batch.start[b] + i] = i;
        }
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= c.vocabSize())
                throw new IllegalArgumentException("token id " + ids[i] + " at position " + i + " is outside the vocabulary (" + c.vocabSize() + ")");
        }
        float eps = (float) c.layerNormEps();
        if (headMajor && tr == null && qkvRows != n) { // q, k, v: consecutive parts of qkv for this batch's rows
            qh = qkvPart(0, n); kh = qkvPart(1, n); vh = qkvPart(2, n);
            qkvRows = n;
        }
        // embeddings: word + position + token type (all 0: single-segment inputs), then LayerNorm
        Tensor x = tr == null ? h : tr.h[0];
        backend.embed(x, ids, positions, types, batch, W.wordEmb(), W.posEmb(), W.typeEmb(), W.embLnG(), W.embLnB(), eps);
        if (tr != null && tr.inputDelta != null) backend.add(x, tr.inputDelta, (long) n * c.hiddenSize()); // gradient checks perturb the input here
        for (int l = 0; l < c.numLayers(); l++) {
            Layer L = W.layers()[l];
            Lora[] ad = lora == null ? null : lora[l];
            Tensor hIn = tr == null ? h : tr.h[l], hOut = tr == null ? h : tr.h[l + 1];
            boolean hm = headMajor && tr == null;
            Tensor q = hm ? qh : tr == null ? this.q : tr.q[l], k = hm ? kh : tr == null ? this.k : tr.k[l], v = hm ? vh : tr == null ? this.v : tr.v[l];
            Tensor ctx = tr == null ? this.ctx : tr.ctx[l], att = tr == null ? tmp : tr.att[l], h1 = tr == null ? this.h1 : tr.h1[l];
            Tensor ff = tr == null ? this.ff : tr.ff[l], ffOut = tr == null ? tmp : tr.ffOut[l];
            // self-attention: Q, K, V projections (LoRA targets "query", "key", "value")
            if (hm) { // q, k, v as [heads][N][D]: attention reads each head's rows as one run
                Lora lq = at(ad, Target.QUERY), lk = at(ad, Target.KEY), lv = at(ad, Target.VALUE);
                if (none(lq) && none(lk) && none(lv)) { // one GEMM for the three (x packed once)
                    backend.linearsHeadMajor(qkv, hIn, n, new Tensor[]{L.wq(), L.wk(), L.wv()}, new Tensor[]{L.bq(), L.bk(), L.bv()}, headDim);
                } else {
                    backend.linearHeadMajor(q, hIn, n, L.wq(), L.bq(), lq, headDim);
                    backend.linearHeadMajor(k, hIn, n, L.wk(), L.bk(), lk, headDim);
                    backend.linearHeadMajor(v, hIn, n, L.wv(), L.bv(), lv, headDim);
                }
                backend.attentionHeadMajor(ctx, q, k, v, batch, c.numHeads());
            } else {
                backend.linear(q, hIn, n, L.wq(), L.bq(), at(ad, Target.QUERY), false);
                backend.linear(k, hIn, n, L.wk(), L.bk(), at(ad, Target.KEY), false);
                backend.linear(v, hIn, n, L.wv(), L.bv(), at(ad, Target.VALUE), false);
                backend.attention(ctx, q, k, v, batch, c.numHeads());
            }
            // attention output: dense, residual, LayerNorm (post-LN)
            backend.linear(att, ctx, n, L.wo(), L.bo(), at(ad, Target.ATTENTION_OUTPUT), false);
            backend.addLayerNorm(h1, att, hIn, n, L.ln1g(), L.ln1b(), eps);
            // feed-forward: dense + exact GELU (fused unless training keeps its input), dense, residual, LayerNorm
            if (tr == null) {
                backend.linear(ff, h1, n, L.wi(), L.bi(), at(ad, Target.INTERMEDIATE), true);
            } else {
                backend.linear(tr.ffPre[l], h1, n, L.wi(), L.bi(), at(ad, Target.INTERMEDIATE), false);
                backend.gelu(ff, tr.ffPre[l], n);
            }
            backend.linear(ffOut, ff, n, L.wf(), L.bf(), at(ad, Target.OUTPUT), false);
            backend.addLayerNorm(hOut, ffOut, h1, n, L.ln2g(), L.ln2b(), eps);
        }
        return tr == null ? h : tr.h[c.numLayers()];
    }

    /**
     * The backward pass, the forward in reverse op by op (llm.c's gpt2_backward): from the
     * gradient of the pooled (and normalised) embeddings {@code tr.dPooled} [B, C] down to the
     * embedding output. LoRA weight gradients accumulate into the segments' gradient tensors;
     * every frozen layer passes activation gradients only. Returns dL/d(embedding output) [N, C].
     */
    public Tensor backward(Trace tr, Batch batch, Lora[][] lora, Weights W, Backend.Pooling mode, boolean normalize) {
        BertConfig c = config;
        int n = batch.tokens, C = c.hiddenSize();
        float eps = (float) c.layerNormEps();
        Tensor dp = tr.dPooled;
        if (normalize) { backend.l2NormalizeBackward(tr.dPooledRaw, tr.dPooled, tr.pooledRaw, batch.size); dp = tr.dPooledRaw; }
        backend.poolBackward(tr.dh, dp, batch, mode);
        for (int l = c.numLayers() - 1; l >= 0; l--) {
            Layer L = W.layers()[l];
            Lora[] ad = lora == null ? null : lora[l];
            // hOut = LN2(ffOut + h1)
            backend.addLayerNormBackward(tr.dsum, tr.dh, tr.ffOut[l], tr.h1[l], n, L.ln2g(), eps);
            backend.linearBackward(tr.dff, false, tr.dsum, tr.ff[l], n, L.wf(), at(ad, Target.OUTPUT));
            backend.geluBackward(tr.dff, tr.dff, tr.ffPre[l], n);
            backend.linearBackward(tr.dh1, false, tr.dff, tr.h1[l], n, L.wi(), at(ad, Target.INTERMEDIATE));
            backend.add(tr.dh1, tr.dsum, (long) n * C); // the residual around the FFN
            // h1 = LN1(att + hIn)
            backend.addLayerNormBackward(tr.dsum, tr.dh1, tr.att[l], tr.h[l], n, L.ln1g(), eps);
            backend.linearBackward(tr.dctx, false, tr.dsum, tr.ctx[l], n, L.wo(), at(ad, Target.ATTENTION_OUTPUT));
            backend.attentionBackward(tr.dq, tr.dk, tr.dv, tr.dctx, tr.q[l], tr.k[l], tr.v[l], batch, c.numHeads());
            backend.linearBackward(tr.dh, false, tr.dq, tr.h[l], n, L.wq(), at(ad, Target.QUERY));
            backend.linearBackward(tr.dh, true, tr.dk, tr.h[l], n, L.wk(), at(ad, Target.KEY));
            backend.linearBackward(tr.dh, true, tr.dv, tr.h[l], n, L.wv(), at(ad, Target.VALUE));
            backend.add(tr.dh, tr.dsum, (long) n * C); // the residual around attention
        }
        return tr.dh;
    }

    /** Pools the traced last hidden state into {@code tr.pooled} (normalised if asked), keeping the raw pool for backward. */
    public Tensor pool(Trace tr, Batch batch, Backend.Pooling mode, boolean normalize) {
        backend.pool(tr.pooledRaw, tr.h[config.numLayers()], batch, mode);
        backend.copy(tr.pooled, tr.pooledRaw, (long) batch.size * config.hiddenSize());
        if (normalize) backend.l2Normalize(tr.pooled, batch.size);
        return tr.pooled;
    }

    /** A new trace for training batches of up to {@code tokens} rows and {@code sequences} sequences. */
    public Trace newTrace(int tokens, int sequences) {
        Trace t = new Trace();
        t.ensure(tokens, sequences);
        return t;
    }

    /**
     * What training keeps from the forward pass, and the gradient buffers of the backward pass:
     * allocated once per batch shape (grown, never shrunk).
     */
    public final class Trace {
        public Tensor[] h;              // [L+1][N, C] layer inputs; h[L] is the last hidden state
        public Tensor[] q, k, v, ctx;   // [L][N, C]
        public Tensor[] att, h1, ffOut; // [L][N, C] attention dense out, after LN1, FFN dense out
        public Tensor[] ffPre, ff;      // [L][N, F] before and after GELU
        public Tensor pooledRaw, pooled, dPooled, dPooledRaw; // [B, C]
        public Tensor dh, dh1, dsum, dctx, dq, dk, dv;        // [N, C]
        public Tensor dff;                                    // [N, F]
        /** When set, added to the embedding output: how a gradient check perturbs the encoder's input. */
        public Tensor inputDelta;
        int tokens, sequences;

        void ensure(int n, int b) {
            if (n <= tokens && b <= sequences) return;
            n = Math.max(n, tokens);
            b = Math.max(b, sequences);
            int L = config.numLayers(), C = config.hiddenSize(), F = config.intermediateSize();
            h = new Tensor[L + 1];
            for (int l = 0; l <= L; l++) h[l] = backend.allocate(n, C);
            q = alloc(L, n, C); k = alloc(L, n, C); v = alloc(L, n, C); ctx = alloc(L, n, C);
            att = alloc(L, n, C); h1 = alloc(L, n, C); ffOut = alloc(L, n, C);
            ffPre = alloc(L, n, F); ff = alloc(L, n, F);
            pooledRaw = backend.allocate(b, C); pooled = backend.allocate(b, C);
            dPooled = backend.allocate(b, C); dPooledRaw = backend.allocate(b, C);
            dh = backend.allocate(n, C); dh1 = backend.allocate(n, C); dsum = backend.allocate(n, C);
            dctx = backend.allocate(n, C); dq = backend.allocate(n, C); dk = backend.allocate(n, C); dv = backend.allocate(n, C);
            dff = backend.allocate(n, F);
            tokens = n;
            sequences = b;
        }

        private Tensor[] alloc(int count, long rows, long cols) {
            Tensor[] t = new Tensor[count];
            for (int i = 0; i < count; i++) t[i] = backend.allocate(rows, cols);
            return t;
        }
    }

    private static Lora at(Lora[] ad, Target t) { return ad == null ? null : ad[t.ordinal()]; }

    private static boolean none(Lora l) { return l == null || l.count == 0; }

    /** Part j (q, k, v) of {@link #qkv} for a batch of n rows: [n, C] floats at j·n·C. */
    private Tensor qkvPart(int j, int n) {
        long bytes = (long) n * config.hiddenSize() * 4;
        return new Tensor(DType.F32, new long[]{n, config.hiddenSize()}, qkv.data.asSlice(j * bytes, bytes));
    }

    /** Pools the last hidden state of {@link #forward} into [B, C] (valid until the next call). */
    public Tensor pool(Batch batch, Backend.Pooling mode, boolean normalize) {
        backend.pool(pooled, h, batch, mode);
        if (normalize) backend.l2Normalize(pooled, batch.size);
        return pooled;
    }
}
