package rrj.convert.onnx;

import rrj.convert.FileText;
import rrj.convert.onnx.OnnxModel.Node;
import rrj.convert.onnx.OnnxModel.TensorData;
import rrj.engine.Tensor;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Recovers Hugging Face {@code BertModel} weights (names without the {@code bert.} prefix, Linear
 * weights in PyTorch's {@code [out, in]} layout, fp32) and the model config from an ONNX export of
 * a BERT encoder (torch.onnx / HF optimum / Xenova exports, opset 11 and later).
 *
 * <p>Names are recovered by following the data flow from the graph inputs, never from initializer
 * names: the Gather over {@code input_ids} gives the word embeddings, the other two Gathers added to
 * it the position and token-type tables; then the embedding LayerNorm; then per layer the three
 * MatMul(+bias Add) projections reading the hidden state. Each projection is traced forward through
 * Reshape/Transpose/scalar-scale nodes to the attention MatMul it reaches: the one arriving as the
 * first input of the score MatMul is the query, as the second input the key, and the one arriving as
 * the second input of the probabilities x values MatMul (whose first input comes from the Softmax)
 * is the value. Then attention output dense + residual + LayerNorm, intermediate dense + erf GELU,
 * output dense + residual + LayerNorm, and an optional pooler (Gather of token 0, dense, Tanh).
 * The head count comes from the [batch, seq, heads, head_dim] Reshape constants and is checked
 * against the score scale (1/sqrt(head_dim), as a Div or Mul on the scores or split over Q and K).
 *
 * <p>Mirrors the module layout of transformers' {@code modeling_bert.py} (BertEmbeddings,
 * BertSelfAttention, BertSelfOutput, BertIntermediate, BertOutput, BertPooler) as torch.onnx
 * traces it. Deliberately not done: ONNX Runtime fused/optimized graphs (Attention,
 * SkipLayerNormalization, FastGelu, ...), quantized graphs, fused QKV projections, pre-LN
 * variants, causal masks, activations other than exact erf GELU, task heads (ignored). Anything
 * it does not recognise is refused with an {@link OnnxFormatException} naming the node.
 */
public final class OnnxBertConverter {
    private OnnxBertConverter() {}

    /** The inferred {@code config.json} values of the encoder. */
    public record Config(int vocabSize, int hiddenSize, int numHiddenLayers, int numAttentionHeads,
                         int intermediateSize, int maxPositionEmbeddings, int typeVocabSize,
                         double layerNormEps, String hiddenAct, boolean hasPooler) {

        /** As a Hugging Face config.json object (for {@code rrj.model.Json.write}). */
        public Map<String, Object> toHfConfig() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("architectures", List.of("BertModel"));
            m.put("model_type", "bert");
            m.put("vocab_size", vocabSize);
            m.put("hidden_size", hiddenSize);
            m.put("num_hidden_layers", numHiddenLayers);
            m.put("num_attention_heads", numAttentionHeads);
            m.put("intermediate_size", intermediateSize);
            m.put("max_position_embeddings", maxPositionEmbeddings);
            m.put("type_vocab_size", typeVocabSize);
            m.put("layer_norm_eps", layerNormEps);
            m.put("hidden_act", hiddenAct);
            return m;
        }
    }

    /** HF-named fp32 weights (insertion order: embeddings, layers in order, pooler) and the config. */
    public record Result(Map<String, Tensor> weights, Config config) {}

    /** Reads {@code onnxFile} and converts it; see the class comment. */
    public static Result convert(Path onnxFile) throws IOException {
        return convert(OnnxModel.open(onnxFile));
    }

    public static Result convert(OnnxModel model) {
        return new Matcher(model).run();
    }

    // ------------------------------------------------------------------------------------------

    private record Linear(Node node, Tensor weight, Tensor bias, int in, int out, String output) {}

    private record LayerNorm(Tensor weight, Tensor bias, double eps, String output) {}

    /** Where a projection's output ends up: {@code input} of {@code matmul}, scaled by {@code scale}. */
    private record Trace(Node matmul, int input, double scale, long[] headShape) {}

    private static final class Matcher {
        final OnnxModel model;
        final Path path;
        final OnnxModel.Graph graph;
        final Map<String, Node> producers;
        final Map<String, List<Node>> consumers;
        final Set<String> graphInputs = new HashSet<>();
        final Map<String, Tensor> weights = new LinkedHashMap<>();
        final Set<String> checkedMasks = new HashSet<>();
        double eps = Double.NaN;

        Matcher(OnnxModel model) {
            this.model = model;
            this.path = model.path;
            this.graph = model.graph;
            this.producers = graph.producers();
            this.consumers = graph.consumers();
            for (OnnxModel.ValueInfo v : graph.inputs())
                if (!graph.initializers().containsKey(v.name())) graphInputs.add(v.name());
        }

        Result run() {
            // --- embeddings
            Node word = wordGather();
            Tensor wordTable = table(word);
            int hidden = (int) wordTable.dim(1);
            List<Node> terms = new ArrayList<>();
            String sum = word.output(0);
            for (;;) {
                List<Node> us = users(sum);
                if (us.size() != 1 || !us.get(0).opType().equals("Add")) break;
                Node u = us.get(0);
                collectEmbeddingTerms(u, other(u, sum), terms);
                sum = u.output(0);
            }
            if (terms.size() != 2)
                throw fail(producers.get(sum), "the word embeddings Gather to be added to exactly two other embedding Gathers"
                        + " (position, token type), found " + terms.size());
            Node type, pos;
            String t0 = tracedGraphInput(terms.get(0).input(1)), t1 = tracedGraphInput(terms.get(1).input(1));
            if ("token_type_ids".equals(t0) && !"token_type_ids".equals(t1)) { type = terms.get(0); pos = terms.get(1); }
            else if ("token_type_ids".equals(t1) && !"token_type_ids".equals(t0)) { type = terms.get(1); pos = terms.get(0); }
            else if (table(terms.get(0)).dim(0) < table(terms.get(1)).dim(0)) { type = terms.get(0); pos = terms.get(1); }
            else { type = terms.get(1); pos = terms.get(0); }
            Tensor posTable = table(pos), typeTable = table(type);
            for (Node g : List.of(pos, type))
                if (table(g).dim(1) != hidden)
                    throw fail(g, "an embedding table of width " + hidden + " like the word embeddings, got " + Arrays.toString(table(g).shape()));
            weights.put("embeddings.word_embeddings.weight", wordTable);
            weights.put("embeddings.position_embeddings.weight", posTable);
            weights.put("embeddings.token_type_embeddings.weight", typeTable);
            LayerNorm eln = layerNorm(sum, hidden, "the embeddings LayerNorm");
            putLayerNorm("embeddings.LayerNorm", eln);

            // --- encoder layers
            String h = eln.output;
            int layers = 0, heads = -1, ffn = -1;
            while (isLayerStart(h)) {
                int[] hf = layer(layers, h, hidden);
                h = lastLayerOutput;
                if (heads >= 0 && (hf[0] != heads || hf[1] != ffn))
                    throw new OnnxFormatException(path + ": layer " + layers + " has " + hf[0] + " heads and FFN size " + hf[1]
                            + ", layer 0 has " + heads + " and " + ffn);
                heads = hf[0];
                ffn = hf[1];
                layers++;
            }
            if (layers == 0) {
                List<Node> us = users(h);
                throw fail(us.isEmpty() ? producers.get(h) : us.get(0),
                        "the first encoder layer's query/key/value MatMul projections reading the embeddings LayerNorm output");
            }

            // --- pooler
            boolean pooler = pooler(h, hidden);

            Config config = new Config((int) wordTable.dim(0), hidden, layers, heads, ffn, (int) posTable.dim(0),
                    (int) typeTable.dim(0), eps, "gelu", pooler);
            return new Result(Collections.unmodifiableMap(weights), config);
        }

        String lastLayerOutput;

        // ---- embeddings ------------------------------------------------------------------------

        Node wordGather() {
            List<Node> candidates = new ArrayList<>();
            for (Node n : graph.nodes()) {
                if (!n.opType().equals("Gather") || !n.domain().isEmpty()) continue;
                TensorData t = constant(n.input(0));
                if (t == null || t.dims().length != 2) continue;
                String in = tracedGraphInput(n.input(1));
                if ("input_ids".equals(in)) return n;
                if (in != null && !in.equals("token_type_ids") && !in.equals("position_ids")) candidates.add(n);
            }
            if (candidates.size() == 1) return candidates.get(0);
            List<String> ins = new ArrayList<>();
            for (OnnxModel.ValueInfo v : graph.inputs()) if (graphInputs.contains(v.name())) ins.add(v.toString());
            throw new OnnxFormatException(path + ": not a BERT encoder: expected a Gather node over a constant [vocab, hidden] table"
                    + " indexed by the graph input 'input_ids' (graph has " + graph.nodes().size() + " nodes, inputs " + ins + ")");
        }

        /** The graph input that {@code v} is (through Cast/Identity), or null. */
        String tracedGraphInput(String v) {
            for (int k = 0; k < 8; k++) {
                if (graphInputs.contains(v)) return v;
                Node p = producers.get(v);
                if (p == null || !(p.opType().equals("Cast") || p.opType().equals("Identity"))) return null;
                v = p.input(0);
            }
            return null;
        }

        void collectEmbeddingTerms(Node add, String v, List<Node> out) {
            Node p = producers.get(v);
            if (p != null && p.opType().equals("Add")) {
                collectEmbeddingTerms(add, p.input(0), out);
                collectEmbeddingTerms(add, p.input(1), out);
                return;
            }
            if (p != null && p.opType().equals("Gather") && constant(p.input(0)) != null && constant(p.input(0)).dims().length == 2) {
                out.add(p);
                return;
            }
            throw fail(add, "the other operand of the embedding sum to be a Gather over a constant embedding table, got "
                    + (p == null ? "value " + FileText.quote(v) : p.describe()));
        }

        Tensor table(Node gather) {
            if (gather.attr("axis") != null && gather.attr("axis").i() != 0)
                throw fail(gather, "an embedding lookup (Gather axis 0)");
            return f32(constant(gather.input(0)));
        }

        // ---- one encoder layer -------------------------------------------------------------------

        boolean isLayerStart(String h) {
            for (Node u : users(h)) {
                if (!u.domain().isEmpty()) return true;   // e.g. com.microsoft.Attention: layer() refuses it by name
                if ((u.opType().equals("MatMul") || u.opType().equals("Gemm")) && weightOperand(u) != null) return true;
            }
            return false;
        }

        /** Matches layer {@code i} reading {@code h}; sets {@link #lastLayerOutput}; returns {heads, ffn}. */
        int[] layer(int i, String h, int c) {
            String p = "encoder.layer." + i + ".";
            List<Node> projNodes = new ArrayList<>();
            for (Node u : users(h)) {
                if (!u.domain().isEmpty())
                    throw fail(u, "standard ONNX ops in encoder layer " + i);
                if (u.opType().equals("MatMul") || u.opType().equals("Gemm")) projNodes.add(u);
            }
            if (projNodes.size() != 3)
                throw fail(projNodes.isEmpty() ? users(h).get(0) : projNodes.get(0), "three separate MatMul projections (query, key, value)"
                        + " reading the hidden state of layer " + i + ", found " + projNodes.size() + " (fused QKV is not supported)");
            Linear[] proj = new Linear[3];
            Trace[] tr = new Trace[3];
            for (int k = 0; k < 3; k++) {
                proj[k] = linear(projNodes.get(k), c, c, "an attention projection of layer " + i);
                tr[k] = traceToAttention(proj[k].output, "the attention projection " + projNodes.get(k).describe());
            }
            int q = -1, kk = -1, v = -1;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++)
                    if (a != b && tr[a].matmul == tr[b].matmul && tr[a].input == 0 && tr[b].input == 1) { q = a; kk = b; }
            if (q >= 0) v = 3 - q - kk;
            if (q < 0 || tr[v].input != 1 || tr[v].matmul == tr[q].matmul)
                throw fail(projNodes.get(0), "the query and key projections of layer " + i + " to meet as first and second input of one"
                        + " score MatMul and the value projection to be the second input of the probabilities x values MatMul");
            Node score = tr[q].matmul, pv = tr[v].matmul;

            // scores -> scale -> mask -> softmax -> probs x V
            double scale = tr[q].scale * tr[kk].scale;
            String cur = score.output(0);
            boolean softmax = false;
            while (!softmax) {
                Node u = onlyUser(cur, "the attention scores of layer " + i);
                switch (u.opType()) {
                    case "Div" -> { scale /= scalarOperand(u, cur, "a scalar scale divisor"); }
                    case "Mul" -> { scale *= scalarOperand(u, cur, "a scalar scale factor"); }
                    case "Add" -> checkMask(u, other(u, cur));
                    case "Softmax" -> {
                        OnnxModel.Attribute ax = u.attr("axis");
                        long axis = ax == null ? (model.opset() >= 13 ? -1 : 1) : ax.i();
                        if (axis != -1 && axis != 3) throw fail(u, "a softmax over the last (key) axis");
                        softmax = true;
                    }
                    case "Where" -> throw fail(u, "scores + padding mask; a Where on the scores (causal or other masking) is not supported");
                    default -> throw fail(u, "scaling, the padding-mask Add or the Softmax after the attention score MatMul");
                }
                cur = u.output(0);
            }
            Trace probs = traceToAttention(cur, "the attention probabilities of layer " + i);
            if (probs.matmul != pv || probs.input != 0)
                throw fail(probs.matmul, "the Softmax output of layer " + i + " to be the first input of the MatMul that reads the value projection");
            scale *= probs.scale;

            // heads: Reshape constants, checked against the scale
            long[] hs = tr[q].headShape != null ? tr[q].headShape : tr[kk].headShape != null ? tr[kk].headShape : tr[v].headShape;
            int headDimFromScale = -1;
            if (scale > 0) {
                double d = 1.0 / (scale * scale);
                long r = Math.round(d);
                if (r >= 1 && Math.abs(d - r) <= 1e-3 * r) headDimFromScale = (int) r;
            }
            int heads, headDim;
            if (hs != null && hs[2] > 0 && hs[3] > 0) { heads = (int) hs[2]; headDim = (int) hs[3]; }
            else if (hs != null && hs[2] > 0) { heads = (int) hs[2]; headDim = c / heads; }
            else if (hs != null && hs[3] > 0) { headDim = (int) hs[3]; heads = c / headDim; }
            else if (headDimFromScale > 0) { headDim = headDimFromScale; heads = c / headDim; }
            else throw fail(score, "a [batch, seq, heads, head_dim] Reshape or a 1/sqrt(head_dim) scale to find the number of heads in layer " + i);
            if (heads * headDim != c)
                throw fail(score, "heads x head_dim = hidden size " + c + " in layer " + i + ", got " + heads + " x " + headDim);
            if (headDimFromScale > 0 && headDimFromScale != headDim || headDimFromScale < 0)
                throw fail(score, "the attention scores of layer " + i + " scaled by 1/sqrt(" + headDim + "), got a total factor " + scale);

            // context -> output dense -> residual -> LayerNorm
            String ctx = pv.output(0);
            Node dense;
            for (;;) {
                Node u = onlyUser(ctx, "the attention context of layer " + i);
                if (u.opType().equals("Transpose") || u.opType().equals("Reshape") || u.opType().equals("Identity")) { ctx = u.output(0); continue; }
                dense = u;
                break;
            }
            if (!(dense.opType().equals("MatMul") || dense.opType().equals("Gemm")))
                throw fail(dense, "the attention output dense MatMul of layer " + i);
            Linear ao = linear(dense, c, c, "the attention output dense of layer " + i);
            String a = residual(ao.output, h, "the attention residual of layer " + i);
            LayerNorm ln1 = layerNorm(a, c, "the attention output LayerNorm of layer " + i);

            // FFN
            List<Node> inter = new ArrayList<>();
            for (Node u : users(ln1.output)) if (u.opType().equals("MatMul") || u.opType().equals("Gemm")) inter.add(u);
            if (inter.size() != 1)
                throw fail(inter.isEmpty() ? producers.get(ln1.output) : inter.get(1), "one intermediate dense MatMul reading the attention LayerNorm of layer " + i);
            Linear im = linear(inter.get(0), c, -1, "the intermediate dense of layer " + i);
            String g = gelu(im.output, "the intermediate activation of layer " + i);
            Node od = onlyUser(g, "the GELU output of layer " + i);
            if (!(od.opType().equals("MatMul") || od.opType().equals("Gemm"))) throw fail(od, "the output dense MatMul of layer " + i);
            Linear out = linear(od, im.out, c, "the output dense of layer " + i);
            String o = residual(out.output, ln1.output, "the output residual of layer " + i);
            LayerNorm ln2 = layerNorm(o, c, "the output LayerNorm of layer " + i);

            putLinear(p + "attention.self.query", proj[q]);
            putLinear(p + "attention.self.key", proj[kk]);
            putLinear(p + "attention.self.value", proj[v]);
            putLinear(p + "attention.output.dense", ao);
            putLayerNorm(p + "attention.output.LayerNorm", ln1);
            putLinear(p + "intermediate.dense", im);
            putLinear(p + "output.dense", out);
            putLayerNorm(p + "output.LayerNorm", ln2);
            lastLayerOutput = ln2.output;
            return new int[]{heads, im.out};
        }

        /** Follows a projection (or the probabilities) through layout and scalar-scale ops to a two-activation MatMul. */
        Trace traceToAttention(String v, String what) {
            double scale = 1;
            long[] headShape = null;
            String cur = v;
            for (int steps = 0; steps < 32; steps++) {
                Node u = onlyUser(cur, what + " on its way to an attention MatMul");
                switch (u.opType()) {
                    case "Reshape" -> {
                        if (!u.input(0).equals(cur)) throw fail(u, what + " as the data input of the Reshape");
                        long[] s = evalShape(u.input(1));
                        if (s != null && s.length == 4) headShape = s;
                    }
                    case "Transpose", "Identity", "Unsqueeze", "Squeeze" -> {
                        if (!u.input(0).equals(cur)) throw fail(u, what + " as its data input");
                    }
                    case "Mul" -> scale *= scalarOperand(u, cur, "a scalar scale factor");
                    case "Div" -> scale /= scalarOperand(u, cur, "a scalar scale divisor");
                    case "MatMul" -> {
                        if (constant(u.input(0)) != null || constant(u.input(1)) != null)
                            throw fail(u, "an attention MatMul of two activations");
                        return new Trace(u, u.input(0).equals(cur) ? 0 : 1, scale, headShape);
                    }
                    default -> throw fail(u, "Reshape/Transpose/scale ops leading " + what + " to an attention MatMul");
                }
                cur = u.output(0);
            }
            throw new OnnxFormatException(path + ": " + what + ": no attention MatMul within 32 nodes");
        }

        /** The padding mask must be computed from a graph input, with no triangular (causal) constant or Trilu on the way. */
        void checkMask(Node add, String mask) {
            if (constant(mask) != null)
                throw fail(add, "a padding mask computed from the attention_mask input; a constant mask (causal?) is not supported");
            if (!checkedMasks.add(mask)) return;
            ArrayDeque<String> todo = new ArrayDeque<>(List.of(mask));
            Set<String> seen = new HashSet<>();
            boolean fromInput = false;
            while (!todo.isEmpty()) {
                String v = todo.pop();
                if (!seen.add(v)) continue;
                if (graphInputs.contains(v)) { fromInput = true; continue; }
                TensorData t = constant(v);
                if (t != null) {
                    long[] d = t.dims();
                    if (d.length >= 2 && d[d.length - 1] > 1 && d[d.length - 2] > 1)
                        throw fail(add, "a padding mask; the mask is built from the constant " + t.describe() + " (causal mask?)");
                    continue;
                }
                Node p = producers.get(v);
                if (p == null) continue;
                if (p.opType().equals("Trilu") || p.opType().equals("CumSum"))
                    throw fail(p, "a padding mask computation; " + p.opType() + " suggests a causal mask, which is not supported");
                for (String in : p.inputs()) if (!in.isEmpty()) todo.push(in);
            }
            if (!fromInput) throw fail(add, "a padding mask computed from the attention_mask graph input");
        }

        String residual(String v, String skip, String what) {
            Node u = onlyUser(v, what);
            if (!u.opType().equals("Add") || !other(u, v).equals(skip))
                throw fail(u, what + ": an Add of the dense output and the layer input " + FileText.quote(skip));
            return u.output(0);
        }

        String gelu(String x, String what) {
            List<Node> us = users(x);
            Node d = null;
            for (Node u : us) {
                if (u.opType().equals("Div") && u.input(0).equals(x) && near(scalar(u.input(1)), Math.sqrt(2), 1e-5)) d = u;
                else if (u.opType().equals("Mul") && near(scalar(other(u, x)), Math.sqrt(0.5), 1e-5)) d = u;
            }
            String expected = "the exact erf GELU (x / 1.4142135 -> Erf -> + 1 -> * x -> * 0.5) as " + what
                    + "; tanh-approximated GELU and other activations are not supported";
            if (d == null) {
                if (us.size() == 1 && us.get(0).opType().equals("Gelu")) {
                    OnnxModel.Attribute ap = us.get(0).attr("approximate");
                    if (ap == null || "none".equals(ap.string())) return us.get(0).output(0);
                }
                throw fail(us.isEmpty() ? producers.get(x) : us.get(0), expected);
            }
            Node erf = onlyUser(d.output(0), what);
            if (!erf.opType().equals("Erf")) throw fail(erf, expected);
            Node add1 = onlyUser(erf.output(0), what);
            if (!add1.opType().equals("Add") || !near(scalar(other(add1, erf.output(0))), 1, 0)) throw fail(add1, expected);
            Set<Node> used = new HashSet<>(List.of(d));
            String cur = add1.output(0);
            boolean hasX = false, hasHalf = false;
            while (!(hasX && hasHalf)) {
                Node m = onlyUser(cur, what);
                if (!m.opType().equals("Mul")) throw fail(m, expected);
                String o = other(m, cur);
                Node op = producers.get(o);
                if (o.equals(x)) hasX = true;
                else if (near(scalar(o), 0.5, 0)) hasHalf = true;
                else if (op != null && op.opType().equals("Mul") && (op.input(0).equals(x) || op.input(1).equals(x))
                        && near(scalar(other(op, x)), 0.5, 0)) {
                    hasX = hasHalf = true;
                    used.add(op);
                } else throw fail(m, expected);
                if (m.inputs().contains(x)) used.add(m);
                cur = m.output(0);
            }
            for (Node u : us) if (!used.contains(u)) throw fail(u, expected);
            return cur;
        }

        // ---- LayerNorm --------------------------------------------------------------------------

        LayerNorm layerNorm(String x, int c, String what) {
            List<Node> us = users(x);
            String expected = what + " (LayerNormalization, or ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul weight, Add bias)";
            for (Node u : us) {
                if (u.opType().equals("LayerNormalization") && u.input(0).equals(x)) {
                    if (us.size() != 1) throw fail(us.get(0) == u ? us.get(1) : us.get(0), expected + " as the only reader of its input");
                    OnnxModel.Attribute ax = u.attr("axis");
                    if (ax != null && ax.i() != -1 && ax.i() != 2) throw fail(u, expected + " over the last axis");
                    OnnxModel.Attribute ep = u.attr("epsilon");
                    double e = ep == null ? 1e-5 : Double.parseDouble(Float.toString(ep.f()));   // 9.99999996e-13f -> 1e-12
                    TensorData w = constant(u.input(1)), b = constant(u.input(2));
                    if (w == null || b == null) throw fail(u, expected + " with constant scale and bias");
                    return ln(u, f32(w), f32(b), e, u.output(0), c, expected);
                }
            }
            Node rm = null, sub = null;
            for (Node u : us) {
                if (u.opType().equals("ReduceMean") && u.input(0).equals(x) && lastAxis(u)) rm = u;
            }
            if (rm != null)
                for (Node u : us) if (u.opType().equals("Sub") && u.input(0).equals(x) && u.input(1).equals(rm.output(0))) sub = u;
            if (rm == null || sub == null || us.size() != 2)
                throw fail(us.isEmpty() ? producers.get(x) : rm == null ? us.get(0) : rm, expected);
            String s = sub.output(0);
            List<Node> su = users(s);
            Node pow = null, div = null;
            for (Node u : su) {
                if (u.opType().equals("Pow") && u.input(0).equals(s) && near(scalar(u.input(1)), 2, 0)) pow = u;
                else if (u.opType().equals("Mul") && u.input(0).equals(s) && u.input(1).equals(s)) pow = u;
                else if (u.opType().equals("Div") && u.input(0).equals(s)) div = u;
            }
            if (pow == null || div == null || su.size() != 2) throw fail(su.isEmpty() ? sub : su.get(0), expected);
            Node rm2 = onlyUser(pow.output(0), what);
            if (!rm2.opType().equals("ReduceMean") || !lastAxis(rm2)) throw fail(rm2, expected);
            Node addEps = onlyUser(rm2.output(0), what);
            double e = addEps.opType().equals("Add") ? scalar(other(addEps, rm2.output(0))) : Double.NaN;
            if (Double.isNaN(e) || e < 0 || e > 0.1) throw fail(addEps, expected);
            Node sqrt = onlyUser(addEps.output(0), what);
            if (!sqrt.opType().equals("Sqrt")) throw fail(sqrt, expected);
            if (!div.input(1).equals(sqrt.output(0))) throw fail(div, expected);
            Node mul = onlyUser(div.output(0), what);
            TensorData w = mul.opType().equals("Mul") ? constant(other(mul, div.output(0))) : null;
            if (w == null) throw fail(mul, expected);
            Node addB = onlyUser(mul.output(0), what);
            TensorData b = addB.opType().equals("Add") ? constant(other(addB, mul.output(0))) : null;
            if (b == null) throw fail(addB, expected);
            TensorData et = constant(other(addEps, rm2.output(0)));
            if (et.dataType == OnnxModel.FLOAT) e = Double.parseDouble(Float.toString((float) e));   // 9.99999996e-13 -> 1e-12
            return ln(addB, f32(w), f32(b), e, addB.output(0), c, expected);
        }

        LayerNorm ln(Node n, Tensor w, Tensor b, double e, String out, int c, String expected) {
            if (w.rank() != 1 || w.dim(0) != c || b.rank() != 1 || b.dim(0) != c)
                throw fail(n, expected + " with weight and bias of shape [" + c + "], got " + Arrays.toString(w.shape()) + " and " + Arrays.toString(b.shape()));
            if (Double.isNaN(eps)) eps = e;
            else if (Math.abs(e - eps) > 1e-6 * eps)
                throw fail(n, expected + " with the same epsilon as the embeddings LayerNorm (" + eps + "), got " + e);
            return new LayerNorm(w, b, e, out);
        }

        boolean lastAxis(Node reduceMean) {
            OnnxModel.Attribute ax = reduceMean.attr("axes");
            long[] axes = ax != null ? ax.ints() : null;
            if (axes == null && !reduceMean.input(1).isEmpty()) {
                TensorData t = constant(reduceMean.input(1));
                if (t != null) axes = t.toLongs();
            }
            return axes != null && axes.length == 1 && (axes[0] == -1 || axes[0] == 2);
        }

        // ---- pooler -----------------------------------------------------------------------------

        boolean pooler(String h, int c) {
            for (Node u : users(h)) {
                String v;
                if (u.opType().equals("Gather") && u.input(0).equals(h)) {
                    OnnxModel.Attribute ax = u.attr("axis");
                    TensorData idx = constant(u.input(1));
                    if (ax == null || ax.i() != 1 || idx == null || idx.numel() != 1 || idx.toLongs()[0] != 0) continue;
                } else if (!u.opType().equals("Slice")) continue;
                v = u.output(0);
                Node n = null;
                for (int k = 0; k < 4; k++) {
                    List<Node> next = users(v);
                    if (next.size() != 1) break;
                    n = next.get(0);
                    if (n.opType().equals("Squeeze") || n.opType().equals("Reshape") || n.opType().equals("Flatten")) { v = n.output(0); n = null; continue; }
                    break;
                }
                if (n == null || !(n.opType().equals("MatMul") || n.opType().equals("Gemm")) || weightOperand(n) == null) continue;
                Linear d = linear(n, c, c, "the pooler dense");
                Node tanh = onlyUser(d.output, "the pooler dense output");
                if (!tanh.opType().equals("Tanh")) throw fail(tanh, "the pooler activation Tanh after the pooler dense");
                putLinear("pooler.dense", d);
                return true;
            }
            return false;
        }

        // ---- Linear -----------------------------------------------------------------------------

        /** The constant weight of a MatMul (second input) or Gemm, possibly behind a 2-D Transpose; null if none. */
        String weightOperand(Node mm) {
            String w = mm.input(1);
            if (constant(w) != null) return w;
            Node p = producers.get(w);
            if (p != null && p.opType().equals("Transpose") && constant(p.input(0)) != null) return w;
            return null;
        }

        /** A MatMul + bias Add (or a Gemm) with a constant weight; the weight comes back as [out, in] fp32. */
        Linear linear(Node mm, int in, int out, String what) {
            String wv = weightOperand(mm);
            if (wv == null) throw fail(mm, what + " with a constant weight initializer as second input");
            boolean outIn;   // weight stored [out, in]?
            Tensor w;
            TensorData direct = constant(wv);
            if (direct != null) { w = f32(direct); outIn = false; }
            else {
                Node tp = producers.get(wv);
                OnnxModel.Attribute perm = tp.attr("perm");
                if (perm != null && !(perm.ints().length == 2 && perm.ints()[0] == 1 && perm.ints()[1] == 0))
                    throw fail(tp, "a 2-D transpose of the weight of " + what);
                w = f32(constant(tp.input(0)));
                outIn = true;
            }
            Tensor bias = null;
            String output;
            if (mm.opType().equals("Gemm")) {
                if (attrInt(mm, "transA", 0) != 0 || attrFloat(mm, "alpha", 1) != 1 || attrFloat(mm, "beta", 1) != 1)
                    throw fail(mm, what + " as a plain Gemm (transA 0, alpha 1, beta 1)");
                if (attrInt(mm, "transB", 0) != 0) outIn = !outIn;
                if (!mm.input(2).isEmpty()) {
                    TensorData b = constant(mm.input(2));
                    if (b == null) throw fail(mm, what + " with a constant bias");
                    bias = f32(b);
                }
            }
            output = mm.output(0);
            if (w.rank() != 2) throw fail(mm, what + " with a 2-D weight, got " + Arrays.toString(w.shape()));
            int wi = (int) (outIn ? w.dim(1) : w.dim(0)), wo = (int) (outIn ? w.dim(0) : w.dim(1));
            if ((in >= 0 && wi != in) || (out >= 0 && wo != out))
                throw fail(mm, what + " with a weight of " + (in >= 0 ? in : "?") + " inputs and " + (out >= 0 ? out : "?")
                        + " outputs, got " + wi + " x " + wo + " (weight " + Arrays.toString(w.shape()) + ")");
            if (bias == null) {
                Node add = onlyUser(output, what);
                TensorData b = add.opType().equals("Add") ? constant(other(add, output)) : null;
                if (b == null) throw fail(add, "the bias Add (with a constant bias) after " + what);
                bias = f32(b);
                output = add.output(0);
            }
            if (bias.numel() != wo || bias.rank() != 1)
                throw fail(mm, what + " with a bias of shape [" + wo + "], got " + Arrays.toString(bias.shape()));
            Tensor weight = outIn ? copy(w) : transpose(w);
            return new Linear(mm, weight, bias, wi, wo, output);
        }

        static long attrInt(Node n, String name, long dflt) {
            OnnxModel.Attribute a = n.attr(name);
            return a == null ? dflt : a.i();
        }

        static float attrFloat(Node n, String name, float dflt) {
            OnnxModel.Attribute a = n.attr(name);
            return a == null ? dflt : a.f();
        }

        void putLinear(String prefix, Linear l) {
            weights.put(prefix + ".weight", l.weight);
            weights.put(prefix + ".bias", l.bias);
        }

        void putLayerNorm(String prefix, LayerNorm l) {
            weights.put(prefix + ".weight", l.weight);
            weights.put(prefix + ".bias", l.bias);
        }

        // ---- graph helpers ----------------------------------------------------------------------

        final Map<String, TensorData> constantCache = new HashMap<>();

        TensorData constant(String v) {
            if (v == null || v.isEmpty()) return null;
            TensorData t = graph.initializers().get(v);
            if (t != null) return t;
            if (constantCache.containsKey(v)) return constantCache.get(v);
            Node p = producers.get(v);
            if (p != null && p.opType().equals("Constant") && p.domain().isEmpty()) {
                t = p.constantValue();
                if (t == null) throw fail(p, "a Constant with a value, value_float(s) or value_int(s) attribute");
            }
            constantCache.put(v, t);
            return t;
        }

        /** The single value of a one-element constant, or NaN when {@code v} is not one. */
        double scalar(String v) {
            TensorData t = constant(v);
            if (t == null || t.numel() != 1) return Double.NaN;
            return t.scalar();
        }

        double scalarOperand(Node n, String cur, String expected) {
            if (n.opType().equals("Div") && !n.input(0).equals(cur)) throw fail(n, expected + " dividing the scores");
            double s = scalar(other(n, cur));
            if (Double.isNaN(s) || s == 0) throw fail(n, expected);
            return s;
        }

        static boolean near(double a, double b, double rel) {
            return !Double.isNaN(a) && Math.abs(a - b) <= Math.max(rel * Math.abs(b), 1e-7 * Math.abs(b));
        }

        /** A shape tensor's values (-1 where not constant), from a constant or a Concat of constants and Unsqueezed scalars. */
        long[] evalShape(String v) {
            TensorData t = constant(v);
            if (t != null) return t.toLongs();
            Node p = producers.get(v);
            if (p == null) return null;
            if (p.opType().equals("Cast") || p.opType().equals("Identity")) return evalShape(p.input(0));
            if (!p.opType().equals("Concat")) return null;
            List<Long> out = new ArrayList<>();
            for (String in : p.inputs()) {
                TensorData c = constant(in);
                if (c != null) for (long x : c.toLongs()) out.add(x);
                else {
                    Node q = producers.get(in);
                    if (q == null || !q.opType().equals("Unsqueeze")) return null;
                    out.add(-1L);
                }
            }
            long[] r = new long[out.size()];
            for (int k = 0; k < r.length; k++) r[k] = out.get(k);
            return r;
        }

        /** Readers of {@code v}, in graph order, leaving out Shape nodes (they only feed shape computations). */
        List<Node> users(String v) {
            List<Node> out = new ArrayList<>();
            for (Node n : consumers.getOrDefault(v, List.of())) if (!n.opType().equals("Shape")) out.add(n);
            return out;
        }

        Node onlyUser(String v, String what) {
            List<Node> us = users(v);
            if (us.size() == 1) return us.get(0);
            Node p = producers.get(v);
            String from = p == null ? "value " + FileText.quote(v) : p.describe();
            if (us.isEmpty()) throw new OnnxFormatException(path + ": " + from + ": output is not used further; expected " + what + " to continue");
            List<String> names = new ArrayList<>();
            for (Node n : us) names.add(n.describe());
            throw new OnnxFormatException(path + ": " + from + ": output is read by " + us.size() + " nodes " + names
                    + ", expected one in " + what);
        }

        String other(Node binary, String v) {
            if (binary.inputs().size() != 2) throw fail(binary, "two inputs");
            if (binary.input(0).equals(v)) return binary.input(1);
            if (binary.input(1).equals(v)) return binary.input(0);
            throw fail(binary, "an input " + FileText.quote(v));
        }

        Tensor f32(TensorData t) {
            Tensor x = t.tensor();
            return switch (x.dtype) {
                case F32, F16, BF16 -> x.toF32();
                default -> throw new OnnxFormatException(path + ": initializer " + t.describe() + ": expected floating-point weights");
            };
        }

        OnnxFormatException fail(Node n, String expected) {
            if (n == null) return new OnnxFormatException(path + ": expected " + expected);
            String hint = n.domain().isEmpty() ? "" : " (ONNX Runtime fused/contrib operators are not supported; use an unoptimized export)";
            return new OnnxFormatException(path + ": " + n.describe() + ": expected " + expected + hint);
        }

        static Tensor transpose(Tensor w) {
            int r = (int) w.dim(0), c = (int) w.dim(1);
            float[] a = w.toFloatArray(), t = new float[a.length];
            for (int i0 = 0; i0 < r; i0 += 64)
                for (int j0 = 0; j0 < c; j0 += 64)
                    for (int i = i0, ie = Math.min(r, i0 + 64); i < ie; i++)
                        for (int j = j0, je = Math.min(c, j0 + 64); j < je; j++) t[j * r + i] = a[i * c + j];
            return Tensor.of(t, c, r);
        }

        static Tensor copy(Tensor w) {
            return Tensor.of(w.toFloatArray(), w.shape());
        }
    }
}
