package rrj.convert.onnx;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import rrj.engine.Tensor;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URL;
import java.net.URLConnection;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.*;

/**
 * OnnxBertConverter on the three BERT exports shipped in the LangChain4j model jars, checked
 * three independent ways: (a) the key set, shapes and config; every converted tensor whose HF name
 * also exists as an initializer name in the file (biases, LayerNorms, embeddings in these exports)
 * equals it bit for bit, and every Linear weight equals the transpose of the initializer read by
 * the MatMul node that the exporter named after the module (the converter uses neither kind of
 * name); (b) numerically: ONNX Runtime's {@code last_hidden_state} against a plain-Java fp64 BERT
 * written with loops over the converted weights, which only agrees if Q/K/V, heads and layer order
 * are right; (c) broken inputs (random bytes, a truncated model, tiny hand-encoded non-BERT graphs,
 * external data, an unknown data type) fail with a one-line OnnxFormatException naming the file,
 * node or initializer. The protobuf encoder here is independent of OnnxModel's decoder.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class OnnxBertConverterTest {

    record Expect(int layers, int heads, int ffn) {}

    static final Map<String, Expect> MODELS = Map.of(
            "all-minilm-l6-v2.onnx", new Expect(6, 12, 1536),
            "bge-small-en-v1.5.onnx", new Expect(12, 12, 1536),
            "e5-small-v2.onnx", new Expect(12, 12, 1536));

    @TempDir
    static Path dir;   // static: injected before @BeforeAll, shared by all tests

    final Map<String, Path> files = new HashMap<>();
    final Map<String, OnnxBertConverter.Result> results = new HashMap<>();
    double maxDiffSeen = 0;

    @BeforeAll
    void extractAndConvert() throws IOException {
        // The models are deflated inside the jars; mapping needs a file. Extracted once into target/
        // (atomically, so concurrent runs do not see half-written files) and reused while the size matches.
        Path cache = Path.of(System.getProperty("basedir", "."), "target", "onnx-test-models");
        Files.createDirectories(cache);
        for (String name : MODELS.keySet()) {
            URL url = OnnxBertConverterTest.class.getResource("/" + name);
            assertNotNull(url, "model resource /" + name + " is not on the test classpath");
            URLConnection conn = url.openConnection();
            long size = conn.getContentLengthLong();
            Path f = cache.resolve(name);
            if (!Files.exists(f) || Files.size(f) != size) {
                Path tmp = Files.createTempFile(cache, name, ".part");
                try (InputStream in = conn.getInputStream()) {
                    Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
                }
                Files.move(tmp, f, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            } else {
                conn.getInputStream().close();
            }
            files.put(name, f);
            long t0 = System.nanoTime();
            results.put(name, OnnxBertConverter.convert(f));
            System.out.printf("converted %s in %.0f ms%n", name, (System.nanoTime() - t0) / 1e6);
        }
    }

    @AfterAll
    void report() {
        System.out.printf("max |ORT - reference| over all models: %.3g%n", maxDiffSeen);
    }

    // ---------------------------------------------------------------- (a) names, shapes, config

    @ParameterizedTest
    @ValueSource(strings = {"all-minilm-l6-v2.onnx", "bge-small-en-v1.5.onnx", "e5-small-v2.onnx"})
    void keySetShapesAndConfig(String name) {
        Expect e = MODELS.get(name);
        OnnxBertConverter.Result r = results.get(name);
        OnnxBertConverter.Config c = r.config();
        assertEquals(new OnnxBertConverter.Config(30522, 384, e.layers, e.heads, e.ffn, 512, 2, 1e-12, "gelu", false), c);

        Map<String, long[]> want = new LinkedHashMap<>();
        int C = 384, F = e.ffn;
        want.put("embeddings.word_embeddings.weight", new long[]{30522, C});
        want.put("embeddings.position_embeddings.weight", new long[]{512, C});
        want.put("embeddings.token_type_embeddings.weight", new long[]{2, C});
        want.put("embeddings.LayerNorm.weight", new long[]{C});
        want.put("embeddings.LayerNorm.bias", new long[]{C});
        for (int i = 0; i < e.layers; i++) {
            String p = "encoder.layer." + i + ".";
            for (String m : List.of("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")) {
                want.put(p + m + ".weight", new long[]{C, C});
                want.put(p + m + ".bias", new long[]{C});
            }
            want.put(p + "attention.output.LayerNorm.weight", new long[]{C});
            want.put(p + "attention.output.LayerNorm.bias", new long[]{C});
            want.put(p + "intermediate.dense.weight", new long[]{F, C});
            want.put(p + "intermediate.dense.bias", new long[]{F});
            want.put(p + "output.dense.weight", new long[]{C, F});
            want.put(p + "output.dense.bias", new long[]{C});
            want.put(p + "output.LayerNorm.weight", new long[]{C});
            want.put(p + "output.LayerNorm.bias", new long[]{C});
        }
        assertEquals(want.keySet(), r.weights().keySet());
        for (Map.Entry<String, long[]> w : want.entrySet()) {
            Tensor t = r.weights().get(w.getKey());
            assertArrayEquals(w.getValue(), t.shape(), w.getKey());
            assertEquals(rrj.engine.DType.F32, t.dtype, w.getKey());
        }
        Map<String, Object> hf = c.toHfConfig();
        assertEquals(e.layers, hf.get("num_hidden_layers"));
        assertEquals("bert", hf.get("model_type"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"all-minilm-l6-v2.onnx", "bge-small-en-v1.5.onnx", "e5-small-v2.onnx"})
    void tensorsMatchWhatTheExporterNamed(String name) throws IOException {
        OnnxModel m = OnnxModel.open(files.get(name));
        Map<String, Tensor> w = results.get(name).weights();
        int layers = MODELS.get(name).layers;

        // (1) HF-named initializers (the converter never looks at these names)
        int same = 0;
        for (Map.Entry<String, Tensor> e : w.entrySet()) {
            OnnxModel.TensorData init = m.graph.initializers().get(e.getKey());
            if (init == null) continue;
            assertArrayEquals(init.tensor().toFloatArray(), e.getValue().toFloatArray(), e.getKey());
            same++;
        }
        assertEquals(5 + 10 * layers, same, "embeddings, LayerNorms and biases carry HF names in these exports");

        // (2) Linear weights: the transpose of the MatMul initializer of the node torch.onnx named after the module
        Map<String, OnnxModel.Node> byName = new HashMap<>();
        for (OnnxModel.Node n : m.graph.nodes()) byName.put(n.name(), n);
        for (int i = 0; i < layers; i++) {
            for (String mod : List.of("attention/self/query", "attention/self/key", "attention/self/value",
                    "attention/output/dense", "intermediate/dense", "output/dense")) {
                OnnxModel.Node mm = byName.get("/encoder/layer." + i + "/" + mod + "/MatMul");
                assertNotNull(mm, mod + " of layer " + i);
                Tensor onnx = m.graph.initializers().get(mm.input(1)).tensor();   // [in, out]
                Tensor hf = w.get("encoder.layer." + i + "." + mod.replace('/', '.') + ".weight");   // [out, in]
                int in = (int) onnx.dim(0), out = (int) onnx.dim(1);
                assertArrayEquals(new long[]{out, in}, hf.shape());
                float[] a = onnx.toFloatArray(), b = hf.toFloatArray();
                for (int r = 0; r < in; r++)
                    for (int c = 0; c < out; c++)
                        if (a[r * out + c] != b[c * in + r]) fail(mod + " of layer " + i + " differs at [" + c + ", " + r + "]");
            }
        }
    }

    // ---------------------------------------------------------------- (b) numbers: ORT vs. a loop BERT

    @ParameterizedTest
    @ValueSource(strings = {"all-minilm-l6-v2.onnx", "bge-small-en-v1.5.onnx", "e5-small-v2.onnx"})
    void referenceBertOnConvertedWeightsMatchesOnnxRuntime(String name) throws OrtException {
        long[] ids = {101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102};   // [CLS] the quick brown fox ... [SEP]
        long[] types = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
        int T = ids.length;
        OnnxBertConverter.Result r = results.get(name);

        float[][] ort;
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions opts = new OrtSession.SessionOptions();
             OrtSession s = env.createSession(files.get(name).toString(), opts)) {
            assertTrue(s.getOutputNames().contains("last_hidden_state"), "outputs: " + s.getOutputNames());
            Map<String, OnnxTensor> in = new LinkedHashMap<>();
            long[] mask = new long[T];
            Arrays.fill(mask, 1);
            try {
                for (String input : s.getInputNames()) {
                    long[] v = switch (input) {
                        case "input_ids" -> ids;
                        case "attention_mask" -> mask;
                        case "token_type_ids" -> types;
                        default -> throw new AssertionError("unexpected model input " + input);
                    };
                    in.put(input, OnnxTensor.createTensor(env, new long[][]{v}));
                }
                try (OrtSession.Result res = s.run(in)) {
                    OnnxValue out = res.get("last_hidden_state").orElseThrow();
                    ort = ((float[][][]) out.getValue())[0];
                }
            } finally {
                for (OnnxTensor t : in.values()) t.close();
            }
        }

        double[][] ref = referenceBert(r.weights(), r.config(), ids, types);
        double max = 0;
        for (int t = 0; t < T; t++)
            for (int c = 0; c < r.config().hiddenSize(); c++) max = Math.max(max, Math.abs(ref[t][c] - ort[t][c]));
        System.out.printf("%s: max |ORT - reference| = %.3g%n", name, max);
        synchronized (this) { maxDiffSeen = Math.max(maxDiffSeen, max); }
        assertTrue(max <= 1e-4, name + ": max |diff| " + max);
    }

    /** BERT encoder forward pass for one unpadded sequence, in fp64, straight from modeling_bert.py. */
    static double[][] referenceBert(Map<String, Tensor> w, OnnxBertConverter.Config cfg, long[] ids, long[] types) {
        int T = ids.length, C = cfg.hiddenSize(), H = cfg.numAttentionHeads(), D = C / H;
        double eps = cfg.layerNormEps();
        float[] word = f(w, "embeddings.word_embeddings.weight"), pos = f(w, "embeddings.position_embeddings.weight"),
                type = f(w, "embeddings.token_type_embeddings.weight");
        double[][] x = new double[T][C];
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                x[t][c] = (double) word[(int) ids[t] * C + c] + pos[t * C + c] + type[(int) types[t] * C + c];
        x = layerNorm(x, f(w, "embeddings.LayerNorm.weight"), f(w, "embeddings.LayerNorm.bias"), eps);
        for (int l = 0; l < cfg.numHiddenLayers(); l++) {
            String p = "encoder.layer." + l + ".";
            double[][] q = linear(x, w, p + "attention.self.query"), k = linear(x, w, p + "attention.self.key"),
                    v = linear(x, w, p + "attention.self.value");
            double[][] ctx = new double[T][C];
            double scale = 1.0 / Math.sqrt(D);
            for (int h = 0; h < H; h++) {
                for (int i = 0; i < T; i++) {
                    double[] s = new double[T];
                    double mx = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < T; j++) {
                        double dot = 0;
                        for (int d = 0; d < D; d++) dot += q[i][h * D + d] * k[j][h * D + d];
                        s[j] = dot * scale;
                        mx = Math.max(mx, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < T; j++) { s[j] = Math.exp(s[j] - mx); sum += s[j]; }
                    for (int d = 0; d < D; d++) {
                        double acc = 0;
                        for (int j = 0; j < T; j++) acc += s[j] / sum * v[j][h * D + d];
                        ctx[i][h * D + d] = acc;
                    }
                }
            }
            double[][] a = linear(ctx, w, p + "attention.output.dense");
            for (int t = 0; t < T; t++) for (int c = 0; c < C; c++) a[t][c] += x[t][c];
            double[][] x1 = layerNorm(a, f(w, p + "attention.output.LayerNorm.weight"), f(w, p + "attention.output.LayerNorm.bias"), eps);
            double[][] im = linear(x1, w, p + "intermediate.dense");
            for (double[] row : im) for (int c = 0; c < row.length; c++) row[c] = 0.5 * row[c] * (1 + erf(row[c] / Math.sqrt(2)));
            double[][] o = linear(im, w, p + "output.dense");
            for (int t = 0; t < T; t++) for (int c = 0; c < C; c++) o[t][c] += x1[t][c];
            x = layerNorm(o, f(w, p + "output.LayerNorm.weight"), f(w, p + "output.LayerNorm.bias"), eps);
        }
        return x;
    }

    static float[] f(Map<String, Tensor> w, String key) {
        Tensor t = w.get(key);
        assertNotNull(t, key);
        return t.toFloatArray();
    }

    /** y = x W^T + b with W in PyTorch's [out, in] layout. */
    static double[][] linear(double[][] x, Map<String, Tensor> w, String prefix) {
        Tensor wt = w.get(prefix + ".weight");
        float[] W = wt.toFloatArray(), b = f(w, prefix + ".bias");
        int out = (int) wt.dim(0), in = (int) wt.dim(1);
        double[][] y = new double[x.length][out];
        for (int t = 0; t < x.length; t++)
            for (int o = 0; o < out; o++) {
                double acc = b[o];
                for (int i = 0; i < in; i++) acc += W[o * in + i] * x[t][i];
                y[t][o] = acc;
            }
        return y;
    }

    static double[][] layerNorm(double[][] x, float[] g, float[] b, double eps) {
        double[][] y = new double[x.length][];
        for (int t = 0; t < x.length; t++) {
            int C = x[t].length;
            double mean = 0, var = 0;
            for (double v : x[t]) mean += v;
            mean /= C;
            for (double v : x[t]) var += (v - mean) * (v - mean);
            var /= C;
            double inv = 1 / Math.sqrt(var + eps);
            y[t] = new double[C];
            for (int c = 0; c < C; c++) y[t][c] = (x[t][c] - mean) * inv * g[c] + b[c];
        }
        return y;
    }

    /**
     * erf in double: the Maclaurin series below 2.5 (largest term ~16, so ~1e-15 absolute), and
     * above it 1 - erfc from the Laplace continued fraction, evaluated backwards from 200 terms.
     */
    static double erf(double x) {
        if (x < 0) return -erf(-x);
        if (x < 2.5) {
            double term = x, sum = x, x2 = x * x;
            for (int n = 1; n < 100; n++) {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
            }
            return 2 / Math.sqrt(Math.PI) * sum;
        }
        double f = x;
        for (int n = 200; n >= 1; n--) f = x + (n / 2.0) / f;
        return 1 - Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
    }

    @Test
    void erfIsAccurate() {
        assertEquals(0.5204998778130465, erf(0.5), 1e-15);
        assertEquals(0.8427007929497149, erf(1.0), 1e-15);
        assertEquals(0.9953222650189527, erf(2.0), 1e-14);
        assertEquals(0.9995930479825550, erf(2.5), 1e-14);
        assertEquals(1 - 2.209049699858544e-05, erf(3.0), 1e-15);
        assertEquals(-0.1124629160182849, erf(-0.1), 1e-15);
    }

    // ---------------------------------------------------------------- (c) refusals

    @Test
    void randomBytesAreNotAnOnnxModel() throws IOException {
        byte[] b = new byte[64 * 1024];
        new Random(7).nextBytes(b);
        Path f = dir.resolve("random.onnx");
        Files.write(f, b);
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxBertConverter.convert(f));
        assertTrue(e.getMessage().startsWith(f + ": not an ONNX model: "), e.getMessage());
        assertOneLine(e);
    }

    @Test
    void truncatedModelIsRefused() throws IOException {
        Path src = files.get("all-minilm-l6-v2.onnx");
        Path f = dir.resolve("truncated.onnx");
        try (InputStream in = Files.newInputStream(src)) {
            Files.write(f, in.readNBytes((int) (Files.size(src) / 3)));
        }
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxBertConverter.convert(f));
        assertTrue(e.getMessage().startsWith(f + ": not an ONNX model: "), e.getMessage());
        assertTrue(e.getMessage().contains("runs past the end"), e.getMessage());
        assertOneLine(e);
    }

    @Test
    void singleAddGraphIsNotBert() throws IOException {
        Pb graph = new Pb()
                .msg(1, node("add0", "Add", List.of("x", "y"), List.of("z")))
                .str(2, "tiny")
                .msg(11, valueInfo("x", 1, 4)).msg(11, valueInfo("y", 1, 4)).msg(12, valueInfo("z", 1, 4));
        Path f = write("add.onnx", graph);
        OnnxModel m = OnnxModel.open(f);   // decodes fine ...
        assertEquals(17, m.opset());
        assertEquals(1, m.graph.nodes().size());
        assertEquals(List.of("x", "y"), m.graph.nodes().get(0).inputs());
        assertEquals("[x: FLOAT(1)[4], y: FLOAT(1)[4]]", m.graph.inputs().toString());
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxBertConverter.convert(f));   // ... but is no BERT
        assertTrue(e.getMessage().startsWith(f + ": not a BERT encoder: expected a Gather node"), e.getMessage());
        assertOneLine(e);
    }

    @Test
    void embeddingsWithoutLayerNormAreRefusedNamingTheNode() throws IOException {
        Pb graph = new Pb()
                .msg(1, node("g_word", "Gather", List.of("word", "input_ids"), List.of("e0")))
                .msg(1, node("g_pos", "Gather", List.of("pos", "pids"), List.of("e1")))
                .msg(1, node("g_type", "Gather", List.of("type", "token_type_ids"), List.of("e2")))
                .msg(1, node("sum0", "Add", List.of("e0", "e1"), List.of("s0")))
                .msg(1, node("sum1", "Add", List.of("s0", "e2"), List.of("s1")))
                .msg(1, node("act", "Relu", List.of("s1"), List.of("out")))
                .str(2, "not-bert")
                .msg(5, floatTensor("word", new long[]{10, 4}))
                .msg(5, floatTensor("pos", new long[]{8, 4}))
                .msg(5, floatTensor("type", new long[]{2, 4}))
                .msg(5, new Pb().varint(1, 3).varint(2, 7).str(8, "pids").bytes(9, new byte[24]))
                .msg(11, valueInfo("input_ids", 7, 3)).msg(11, valueInfo("token_type_ids", 7, 3))
                .msg(12, valueInfo("out", 1, 4));
        Path f = write("relu.onnx", graph);
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxBertConverter.convert(f));
        assertTrue(e.getMessage().startsWith(f + ": node 'act' (Relu): expected the embeddings LayerNorm"), e.getMessage());
        assertOneLine(e);
    }

    @Test
    void externalDataIsRefusedNamingTheInitializer() throws IOException {
        Pb ext = new Pb().varint(1, 4).varint(2, 1).str(8, "w_ext")
                .msg(13, new Pb().str(1, "location").str(2, "weights.bin"))
                .varint(14, 1);
        Path f = write("ext.onnx", new Pb().msg(1, node("n", "Identity", List.of("w_ext"), List.of("o"))).msg(5, ext));
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxModel.open(f));
        assertTrue(e.getMessage().contains("initializer 'w_ext' keeps its data in an external file ('weights.bin')"), e.getMessage());
        assertTrue(e.getMessage().startsWith(f.toString()), e.getMessage());
    }

    @Test
    void unknownDataTypeIsRefusedNamingTheInitializer() throws IOException {
        Pb odd = new Pb().varint(1, 2).varint(2, 99).str(8, "w_odd").bytes(9, new byte[2]);
        Path f = write("odd.onnx", new Pb().msg(1, node("n", "Identity", List.of("w_odd"), List.of("o"))).msg(5, odd));
        OnnxModel m = OnnxModel.open(f);
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> m.graph.initializers().get("w_odd").tensor());
        assertTrue(e.getMessage().contains("'w_odd'") && e.getMessage().contains("data type unknown(99) is not supported"), e.getMessage());
    }

    @Test
    void typedDataFieldsAndPackedEncodingsDecode() throws IOException {
        // float_data packed, int64_data unpacked, dims unpacked; attribute ints packed and floats unpacked
        Pb fl = new Pb().varint(1, 3).varint(2, 1).str(8, "f").bytes(4, le(1.5f, -2f, 0.25f));
        Pb il = new Pb().varint(1, 2).varint(2, 7).str(8, "i").varint(7, -5).varint(7, 1L << 40);
        Pb attrInts = new Pb().str(1, "perm").varint(20, 7).bytes(8, new byte[]{1, 0});
        Pb attrFloats = new Pb().str(1, "fs").varint(20, 6).fixed32(7, Float.floatToIntBits(0.5f)).fixed32(7, Float.floatToIntBits(3f));
        Pb n = new Pb().str(1, "f").str(2, "o").str(3, "t").str(4, "Transpose").msg(5, attrInts).msg(5, attrFloats);
        Path f = write("typed.onnx", new Pb().msg(1, n).msg(5, fl).msg(5, il));
        OnnxModel m = OnnxModel.open(f);
        assertArrayEquals(new float[]{1.5f, -2f, 0.25f}, m.graph.initializers().get("f").tensor().toFloatArray());
        assertArrayEquals(new long[]{-5, 1L << 40}, m.graph.initializers().get("i").toLongs());
        assertArrayEquals(new long[]{1, 0}, m.graph.nodes().get(0).attr("perm").ints());
        assertArrayEquals(new float[]{0.5f, 3f}, m.graph.nodes().get(0).attr("fs").floats());
    }

    // ---------------------------------------------------------------- a synthetic BERT with a pooler

    enum Variant { PLAIN, FUSED_LAYER_NORM, TANH_GELU, CAUSAL_MASK }

    /**
     * A one-layer BERT (hidden 4, 2 heads, FFN 8) with a pooler, encoded op by op the way torch.onnx
     * exports modeling_bert.py at opset 11 (the real models carry no pooler), with the projections
     * emitted in the order value, key, query and unrelated initializer names; the pooler is a Gemm
     * with transB=1, so its weight is already [out, in]. {@code params} keeps each HF tensor as stored.
     */
    static final class MiniBert {
        static final int V = 10, P = 6, TT = 2, C = 4, H = 2, D = 2, F = 8, T = 5;
        final Pb g = new Pb();
        final Random rnd = new Random(11);
        final Map<String, float[]> params = new LinkedHashMap<>();
        int n = 0;

        MiniBert(Variant variant) {
            boolean fused = variant == Variant.FUSED_LAYER_NORM;
            String m = op("Unsqueeze", List.of("attention_mask"), ints("axes", 1));
            m = op("Unsqueeze", List.of(m), ints("axes", 2));
            m = op("Cast", List.of(m), attr("to", 1));
            m = op("Sub", List.of(scalar(1f), m));
            String mask = op("Mul", List.of(m, scalar(-10000f)));
            if (variant == Variant.CAUSAL_MASK) {
                float[] tri = new float[T * T];
                for (int i = 0; i < T; i++) for (int j = i + 1; j < T; j++) tri[i * T + j] = -10000f;
                mask = op("Add", List.of(mask, init(new long[]{1, 1, T, T}, tri)));
            }
            String w = op("Gather", List.of(param("embeddings.word_embeddings.weight", 0.5, V, C), "input_ids"));
            String t = op("Gather", List.of(param("embeddings.token_type_embeddings.weight", 0.5, TT, C), "token_type_ids"));
            String s = op("Add", List.of(w, t));
            String p = op("Gather", List.of(param("embeddings.position_embeddings.weight", 0.5, P, C), int64(new long[]{1, T}, 0, 1, 2, 3, 4)));
            s = op("Add", List.of(s, p));
            String h = layerNorm(s, "embeddings.LayerNorm", fused, null);

            String pre = "encoder.layer.0.attention.self.";
            String v = op("Transpose", List.of(op("Reshape", List.of(proj(h, pre + "value", C, C), int64(new long[]{4}, 0, 0, H, D)))), ints("perm", 0, 2, 1, 3));
            String k = op("Transpose", List.of(op("Reshape", List.of(proj(h, pre + "key", C, C), int64(new long[]{4}, 0, 0, H, D)))), ints("perm", 0, 2, 3, 1));
            String q = op("Transpose", List.of(op("Reshape", List.of(proj(h, pre + "query", C, C), int64(new long[]{4}, 0, 0, H, D)))), ints("perm", 0, 2, 1, 3));
            String sc = op("Div", List.of(op("MatMul", List.of(q, k)), scalar((float) Math.sqrt(D))));
            String pr = op("Softmax", List.of(op("Add", List.of(sc, mask))), attr("axis", 3));
            String ctx = op("Transpose", List.of(op("MatMul", List.of(pr, v))), ints("perm", 0, 2, 1, 3));
            ctx = op("Reshape", List.of(ctx, int64(new long[]{3}, 0, 0, C)));
            String a = op("Add", List.of(proj(ctx, "encoder.layer.0.attention.output.dense", C, C), h));
            String x1 = layerNorm(a, "encoder.layer.0.attention.output.LayerNorm", fused, null);
            String im = proj(x1, "encoder.layer.0.intermediate.dense", C, F);
            String act;
            if (variant == Variant.TANH_GELU) {
                String c3 = op("Mul", List.of(op("Pow", List.of(im, scalar(3f))), scalar(0.044715f)));
                String th = op("Tanh", List.of(op("Mul", List.of(op("Add", List.of(im, c3)), scalar(0.7978846f)))));
                act = op("Mul", List.of(op("Mul", List.of(im, op("Add", List.of(th, scalar(1f))))), scalar(0.5f)));
            } else {
                String e = op("Erf", List.of(op("Div", List.of(im, scalar(1.4142135f)))));
                act = op("Mul", List.of(op("Mul", List.of(im, op("Add", List.of(e, scalar(1f))))), scalar(0.5f)));
            }
            String o = op("Add", List.of(proj(act, "encoder.layer.0.output.dense", F, C), x1));
            String last = layerNorm(o, "encoder.layer.0.output.LayerNorm", fused, "last_hidden_state");

            String first = op("Gather", List.of(last, int64(new long[0], 0)), attr("axis", 1));
            String pd = op("Gemm", List.of(first, param("pooler.dense.weight", 0.5, C, C), param("pooler.dense.bias", 0.1, C)), attr("transB", 1));
            opTo("Tanh", "pooler_output", List.of(pd));

            g.str(2, "mini-bert");
            for (String in : List.of("input_ids", "attention_mask", "token_type_ids")) g.msg(11, valueInfo(in, 7, "batch", "seq"));
            g.msg(12, valueInfo("last_hidden_state", 1)).msg(12, valueInfo("pooler_output", 1));
        }

        String proj(String x, String name, int in, int out) {
            String mm = op("MatMul", List.of(x, param(name + ".weight", 0.5, in, out)));   // stored [in, out]
            return op("Add", List.of(param(name + ".bias", 0.1, out), mm));
        }

        String layerNorm(String x, String name, boolean fused, String out) {
            String w = param(name + ".weight", -0.1, C), b = param(name + ".bias", 0.1, C);
            if (fused)
                return opTo("LayerNormalization", out != null ? out : "t" + n, List.of(x, w, b), attr("axis", -1),
                        new Pb().str(1, "epsilon").varint(20, 1).fixed32(2, Float.floatToIntBits(1e-12f)));
            String mean = op("ReduceMean", List.of(x), ints("axes", -1));
            String sub = op("Sub", List.of(x, mean));
            String var = op("ReduceMean", List.of(op("Pow", List.of(sub, scalar(2f)))), ints("axes", -1));
            String norm = op("Div", List.of(sub, op("Sqrt", List.of(op("Add", List.of(var, scalar(1e-12f)))))));
            String mul = op("Mul", List.of(norm, w));
            return out != null ? opTo("Add", out, List.of(mul, b)) : op("Add", List.of(mul, b));
        }

        String op(String type, List<String> inputs, Pb... attrs) {
            return opTo(type, "t" + n, inputs, attrs);
        }

        String opTo(String type, String out, List<String> inputs, Pb... attrs) {
            Pb node = node(type + "_" + n++, type, inputs, List.of(out));
            for (Pb a : attrs) node.msg(5, a);
            g.msg(1, node);
            return out;
        }

        /** Random values (scale < 0: 1 + |scale| * N(0,1), for LayerNorm weights), recorded under the HF name. */
        String param(String hfName, double scale, long... dims) {
            int count = (int) Arrays.stream(dims).reduce(1, (x, y) -> x * y);
            float[] v = new float[count];
            for (int i = 0; i < count; i++) v[i] = (float) (scale < 0 ? 1 - scale * rnd.nextGaussian() : scale * rnd.nextGaussian());
            params.put(hfName, v);
            return init(dims, v);
        }

        String init(long[] dims, float[] v) {
            String name = "init_" + n++;
            Pb t = new Pb();
            for (long d : dims) t.varint(1, d);
            g.msg(5, t.varint(2, 1).str(8, name).bytes(9, le(v)));
            return name;
        }

        String scalar(float v) { return init(new long[0], new float[]{v}); }

        String int64(long[] dims, long... v) {
            String name = "init_" + n++;
            ByteBuffer b = ByteBuffer.allocate(8 * v.length).order(ByteOrder.LITTLE_ENDIAN);
            for (long x : v) b.putLong(x);
            Pb t = new Pb();
            for (long d : dims) t.varint(1, d);
            g.msg(5, t.varint(2, 7).str(8, name).bytes(9, b.array()));
            return name;
        }

        static Pb attr(String name, long v) { return new Pb().str(1, name).varint(20, 2).varint(3, v); }

        static Pb ints(String name, long... v) {
            Pb packed = new Pb();
            for (long x : v) packed.rawVarint(x);
            return new Pb().str(1, name).varint(20, 7).bytes(8, packed.out.toByteArray());
        }
    }

    @Test
    void miniBertWithPoolerConvertsAndMatchesOnnxRuntime() throws IOException, OrtException {
        MiniBert mb = new MiniBert(Variant.PLAIN);
        Path f = write("mini-bert.onnx", mb.g, 11);
        OnnxBertConverter.Result r = OnnxBertConverter.convert(f);
        assertEquals(new OnnxBertConverter.Config(MiniBert.V, MiniBert.C, 1, MiniBert.H, MiniBert.F, MiniBert.P, MiniBert.TT,
                1e-12, "gelu", true), r.config());
        assertEquals(mb.params.keySet(), r.weights().keySet());
        for (Map.Entry<String, float[]> e : mb.params.entrySet()) {
            String key = e.getKey();
            Tensor t = r.weights().get(key);
            boolean matmulWeight = key.startsWith("encoder.") && key.endsWith(".weight") && !key.contains("LayerNorm");
            if (matmulWeight) {   // stored [in, out] for MatMul
                int out = (int) t.dim(0), in = (int) t.dim(1);
                float[] want = new float[in * out];
                for (int i = 0; i < in; i++) for (int o = 0; o < out; o++) want[o * in + i] = e.getValue()[i * out + o];
                assertArrayEquals(want, t.toFloatArray(), key);
            } else {
                assertArrayEquals(e.getValue(), t.toFloatArray(), key);
            }
        }

        long[] ids = {1, 7, 3, 9, 2}, types = {0, 0, 1, 1, 1}, mask = {1, 1, 1, 1, 1};
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        float[][] hidden;
        float[] pooled;
        try (OrtSession.SessionOptions opts = new OrtSession.SessionOptions();
             OrtSession s = env.createSession(f.toString(), opts);
             OnnxTensor a = OnnxTensor.createTensor(env, new long[][]{ids});
             OnnxTensor b = OnnxTensor.createTensor(env, new long[][]{mask});
             OnnxTensor c = OnnxTensor.createTensor(env, new long[][]{types});
             OrtSession.Result res = s.run(Map.of("input_ids", a, "attention_mask", b, "token_type_ids", c))) {
            hidden = ((float[][][]) res.get("last_hidden_state").orElseThrow().getValue())[0];
            pooled = ((float[][]) res.get("pooler_output").orElseThrow().getValue())[0];
        }
        double[][] ref = referenceBert(r.weights(), r.config(), ids, types);
        double[][] pool = linear(new double[][]{ref[0]}, r.weights(), "pooler.dense");
        double max = 0;
        for (int t = 0; t < ids.length; t++)
            for (int c = 0; c < MiniBert.C; c++) max = Math.max(max, Math.abs(ref[t][c] - hidden[t][c]));
        for (int c = 0; c < MiniBert.C; c++) max = Math.max(max, Math.abs(Math.tanh(pool[0][c]) - pooled[c]));
        System.out.printf("mini-bert: max |ORT - reference| = %.3g%n", max);
        assertTrue(max <= 1e-5, "max |diff| " + max);
    }

    @Test
    void fusedLayerNormalizationIsRecognised() throws IOException {
        MiniBert mb = new MiniBert(Variant.FUSED_LAYER_NORM);
        OnnxBertConverter.Result r = OnnxBertConverter.convert(write("mini-ln.onnx", mb.g, 17));
        assertEquals(1e-12, r.config().layerNormEps());
        assertArrayEquals(mb.params.get("encoder.layer.0.output.LayerNorm.weight"),
                r.weights().get("encoder.layer.0.output.LayerNorm.weight").toFloatArray());
        assertTrue(r.config().hasPooler());
    }

    @Test
    void tanhGeluIsRefusedNamingTheNode() throws IOException {
        Path f = write("mini-tanh.onnx", new MiniBert(Variant.TANH_GELU).g, 11);
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxBertConverter.convert(f));
        assertTrue(e.getMessage().startsWith(f + ": node 'Pow_"), e.getMessage());
        assertTrue(e.getMessage().contains("(Pow): expected the exact erf GELU"), e.getMessage());
        assertOneLine(e);
    }

    @Test
    void causalMaskIsRefused() throws IOException {
        Path f = write("mini-causal.onnx", new MiniBert(Variant.CAUSAL_MASK).g, 11);
        OnnxFormatException e = assertThrows(OnnxFormatException.class, () -> OnnxBertConverter.convert(f));
        assertTrue(e.getMessage().startsWith(f + ": node 'Add_"), e.getMessage());
        assertTrue(e.getMessage().contains("causal mask?"), e.getMessage());
        assertOneLine(e);
    }

    static void assertOneLine(Exception e) {
        assertFalse(e.getMessage().contains("\n"), e.getMessage());
    }

    // ---------------------------------------------------------------- a tiny protobuf encoder

    /** Writes protobuf wire format (field numbers from onnx/onnx.proto). */
    static final class Pb {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Pb rawVarint(long v) {
            while ((v & ~0x7fL) != 0) { out.write((int) (v & 0x7f) | 0x80); v >>>= 7; }
            out.write((int) v);
            return this;
        }

        Pb varint(int field, long v) { return rawVarint((long) field << 3).rawVarint(v); }

        Pb fixed32(int field, int v) {
            rawVarint((long) field << 3 | 5);
            for (int k = 0; k < 4; k++) out.write(v >>> (8 * k));
            return this;
        }

        Pb bytes(int field, byte[] b) {
            rawVarint((long) field << 3 | 2).rawVarint(b.length);
            out.writeBytes(b);
            return this;
        }

        Pb str(int field, String s) { return bytes(field, s.getBytes(StandardCharsets.UTF_8)); }

        Pb msg(int field, Pb m) { return bytes(field, m.out.toByteArray()); }
    }

    static Pb node(String name, String op, List<String> inputs, List<String> outputs) {
        Pb n = new Pb();
        for (String i : inputs) n.str(1, i);
        for (String o : outputs) n.str(2, o);
        return n.str(3, name).str(4, op);
    }

    static Pb valueInfo(String name, int elemType, long dim) {
        Pb shape = new Pb().msg(1, new Pb().varint(1, dim));
        return new Pb().str(1, name).msg(2, new Pb().msg(1, new Pb().varint(1, elemType).msg(2, shape)));
    }

    /** A tensor value info with symbolic dimensions (none: rank unknown). */
    static Pb valueInfo(String name, int elemType, String... dimParams) {
        Pb tt = new Pb().varint(1, elemType);
        if (dimParams.length > 0) {
            Pb shape = new Pb();
            for (String d : dimParams) shape.msg(1, new Pb().str(2, d));
            tt.msg(2, shape);
        }
        return new Pb().str(1, name).msg(2, new Pb().msg(1, tt));
    }

    static Pb floatTensor(String name, long[] dims) {
        Pb t = new Pb();
        for (long d : dims) t.varint(1, d);
        long n = Arrays.stream(dims).reduce(1, (a, b) -> a * b);
        return t.varint(2, 1).str(8, name).bytes(9, new byte[(int) n * 4]);
    }

    static byte[] le(float... v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) b.putFloat(x);
        return b.array();
    }

    Path write(String fileName, Pb graph) throws IOException {
        return write(fileName, graph, 17);
    }

    Path write(String fileName, Pb graph, int opset) throws IOException {
        Pb model = new Pb().varint(1, 8).str(2, "OnnxBertConverterTest")
                .msg(8, new Pb().str(1, "").varint(2, opset))
                .msg(7, graph);
        Path f = dir.resolve(fileName);
        Files.write(f, model.out.toByteArray());
        return f;
    }
}
