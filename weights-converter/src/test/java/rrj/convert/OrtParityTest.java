package rrj.convert;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;
import rrj.model.Encoder;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.GZIPInputStream;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The acceptance test of the encoder: real models from their Maven jars, converted by our
 * converter, run by our engine, against ONNX Runtime running the original ONNX file on the
 * same token ids. Last hidden state max |Δ| ≤ 1e-4 on every real (non-padding) token, and
 * cosine ≥ 0.99999 for every pooled embedding, on 72 varied texts in mixed-length batches.
 */
class OrtParityTest {

    static List<String> texts() throws IOException {
        List<String> t = new ArrayList<>(List.of(
                "hello", "Hello, world!", "a", "", "   ", "The quick brown fox jumps over the lazy dog.",
                "Café Über naïve résumé — ½ ™", "中文字符和日本語のテキスト", "emoji 👍🏽 🧑‍🚀 test",
                "tab\tseparated\ttext\r\nand lines", "supercalifragilisticexpialidocious antidisestablishmentarianism",
                "What is the role of p53 in apoptosis?", "x".repeat(150), "word ".repeat(200),
                "ALL CAPS SENTENCE WITH NUMBERS 12345 AND 3.14159", "[CLS] [SEP] [MASK] literal specials",
                "Москва — столица России.", "Ελληνικά κείμενα", "https://example.com/path?q=1&r=2"));
        Path corpus = Path.of("../data/scifact/corpus.jsonl.gz");
        assertTrue(Files.exists(corpus), "test data missing: " + corpus.toAbsolutePath());
        try (BufferedReader r = new BufferedReader(new InputStreamReader(new GZIPInputStream(Files.newInputStream(corpus)), StandardCharsets.UTF_8))) {
            for (int i = 0; i < 53; i++) {
                Map<String, Object> doc = rrj.model.Json.parseObject(r.readLine());
                String text = (String) doc.get("text");
                // varied lengths: whole abstracts (truncated at max length), halves, first sentences
                t.add(switch (i % 3) {
                    case 0 -> doc.get("title") + " " + text;
                    case 1 -> text.substring(0, Math.min(text.length(), 40 + i * 7));
                    default -> (String) doc.get("title");
                });
            }
        }
        return t;
    }

    @Test
    void miniLmMatchesOrt() throws Exception {
        check(TestModels.get("all-minilm-l6-v2", Backend.Pooling.MEAN, true), 256);
    }

    @Test
    void bgeSmallMatchesOrt() throws Exception {
        check(TestModels.get("bge-small-en-v1.5", Backend.Pooling.CLS, true), 512);
    }

    void check(TestModels.Model m, int maxLength) throws Exception {
        List<String> texts = texts();
        try (Backend cpu = Backends.create("cpu", 2);
             Encoder enc = Encoder.open(m.dir(), cpu, null, null, maxLength)) {
            int[][] ids = new int[texts.size()][];
            for (int i = 0; i < ids.length; i++) ids[i] = enc.tokenize(texts.get(i));
            int c = enc.dimension();
            // ORT: padded batches of 8 with an attention mask, exactly as the model was exported
            float[][][] ortHidden = new float[ids.length][][];
            try (OrtEnvironment env = OrtEnvironment.getEnvironment();
                 OrtSession.SessionOptions so = new OrtSession.SessionOptions()) {
                so.setIntraOpNumThreads(2);
                try (OrtSession s = env.createSession(m.onnx().toString(), so)) {
                    for (int from = 0; from < ids.length; from += 8) {
                        int to = Math.min(ids.length, from + 8), maxLen = 0;
                        for (int i = from; i < to; i++) maxLen = Math.max(maxLen, ids[i].length);
                        long[][] in = new long[to - from][maxLen], mask = new long[to - from][maxLen], types = new long[to - from][maxLen];
                        for (int i = from; i < to; i++)
                            for (int j = 0; j < ids[i].length; j++) { in[i - from][j] = ids[i][j]; mask[i - from][j] = 1; }
                        Map<String, OnnxTensor> feed = new HashMap<>();
                        feed.put("input_ids", OnnxTensor.createTensor(env, in));
                        feed.put("attention_mask", OnnxTensor.createTensor(env, mask));
                        if (s.getInputNames().contains("token_type_ids")) feed.put("token_type_ids", OnnxTensor.createTensor(env, types));
                        try (OrtSession.Result res = s.run(feed)) {
                            float[][][] h = (float[][][]) res.get("last_hidden_state").orElseThrow().getValue();
                            for (int i = from; i < to; i++) ortHidden[i] = h[i - from];
                        }
                        for (OnnxTensor t : feed.values()) t.close();
                    }
                }
            }
            // ours: packed mixed-length batches (budget forces several batches of varied composition)
            enc.maxBatchTokens = 700;
            double maxDiff = 0, minCos = 1;
            float[][] ours = new float[ids.length][c];
            int from = 0;
            Batch batch = new Batch(16);
            while (from < ids.length) {
                int to = from, tokens = 0;
                while (to < ids.length && (to == from || tokens + ids[to].length <= 700)) tokens += ids[to++].length;
                int[] lens = new int[to - from], packed = new int[tokens];
                for (int i = from, p = 0; i < to; i++) { lens[i - from] = ids[i].length; System.arraycopy(ids[i], 0, packed, p, ids[i].length); p += ids[i].length; }
                batch.set(lens, to - from);
                Tensor h = enc.bert.forward(packed, batch, null);
                for (int i = from; i < to; i++) {
                    float[] got = new float[ids[i].length * c], ref = new float[ids[i].length * c];
                    cpu.read(h, (long) batch.start[i - from] * c, got, 0, got.length);
                    for (int j = 0; j < ids[i].length; j++) System.arraycopy(ortHidden[i][j], 0, ref, j * c, c);
                    Check.close(m.name() + " last hidden state of text " + i, got, ref, 1e-4, 0);
                    maxDiff = Math.max(maxDiff, Check.maxAbsDiff(got, ref));
                }
                Tensor pooled = enc.bert.pool(batch, enc.options.pooling(), enc.options.normalize());
                for (int i = from; i < to; i++) cpu.read(pooled, (long) (i - from) * c, ours[i], 0, c);
                from = to;
            }
            // the public path (tokenize, pack by budget, pool) gives the same vectors
            float[][] viaEmbed = enc.embed(texts.subList(0, 24));
            for (int i = 0; i < viaEmbed.length; i++) Check.close(m.name() + " Encoder.embed text " + i, viaEmbed[i], ours[i], 1e-6, 1e-6);
            // pooled embeddings against pooling done here on ORT's output
            for (int i = 0; i < ids.length; i++) {
                float[] ref = new float[c];
                if (m.pooling() == Backend.Pooling.CLS) System.arraycopy(ortHidden[i][0], 0, ref, 0, c);
                else {
                    for (int j = 0; j < ids[i].length; j++) for (int k = 0; k < c; k++) ref[k] += ortHidden[i][j][k];
                    for (int k = 0; k < c; k++) ref[k] /= ids[i].length;
                }
                double n = 0;
                for (float v : ref) n += v * v;
                for (int k = 0; k < c; k++) ref[k] /= (float) Math.max(Math.sqrt(n), 1e-12);
                Check.cosineAtLeast(m.name() + " pooled text " + i, ours[i], ref, 0.99999);
                minCos = Math.min(minCos, Check.cosine(ours[i], ref));
            }
            System.out.printf("%s: %d texts, max |Δ hidden| %.3g, min cosine %.8f%n", m.name(), ids.length, maxDiff, minCos);
        }
        // the oracle too, on a few texts (it is slow on purpose)
        try (Encoder ref = Encoder.open(m.dir(), new ReferenceBackend(), null, null, maxLength);
             Backend cpu = Backends.create("cpu", 2);
             Encoder fast = Encoder.open(m.dir(), cpu, null, null, maxLength)) {
            List<String> few = texts.subList(0, 8);
            float[][] a = ref.embed(few), b = fast.embed(few);
            for (int i = 0; i < few.size(); i++) Check.cosineAtLeast(m.name() + " ref vs cpu text " + i, b[i], a[i], 0.99999);
        }
    }
}
