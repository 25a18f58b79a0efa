package rrj.app.serve;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import rrj.app.Main;
import rrj.engine.Check;
import rrj.engine.ReferenceBackend;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.router.Router;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The server over loopback, against independent paths to the same numbers: {@code rr embed}
 * ({@link Main#execute}) and an {@link Encoder}/{@link Router} opened separately on the same
 * files, all on the reference backend (tolerance 1e-6). Also: every kind of bad request is a
 * JSON error naming the problem and the server goes on serving; a full queue is a 429; close()
 * finishes what it accepted; SIGTERM exits 0; the API key guards everything but /health.
 *
 * <p>Concurrency tests hold the batcher in its test hook and wait on conditions (queue depth,
 * latches), never on sleeps, so they do not depend on timing.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ServerTest {
    static final double ATOL = 1e-6, RTOL = 0;
    static Fixture fx;
    static EmbeddingServer server; // experts, pilots, one corpus, --max-inputs 8
    static HttpClient http;
    static Encoder oracleEncoder;  // the oracle: same files, opened apart from the server
    static Router oracle;


    record Res(int status, String body) {
        Map<String, Object> json() { return Json.parseObject(body); }
    }

    @BeforeAll
    static void setUp() throws IOException {
        fx = new Fixture(Files.createTempDirectory("rr-serve"));
        server = start("--data", fx.data.toString(), "--max-inputs", "8");
        http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        oracleEncoder = Encoder.open(fx.model, new ReferenceBackend(), null, null, null);
        oracle = Router.open(oracleEncoder, fx.experts);
    }

    @AfterAll
    static void tearDown() {
        if (server != null) server.close();
        if (oracleEncoder != null) oracleEncoder.close();
    }

    static EmbeddingServer start(String... extra) throws IOException {
        List<String> argv = new ArrayList<>(List.of("serve", "--model", fx.model.toString(), "--experts", fx.experts.toString(),
                "--port", "0", "--backend", "ref"));
        argv.addAll(List.of(extra));
        return ServeCommand.start(argv.toArray(new String[0]), System.err,
                new ServeCommand.Defaults(() -> { throw new AssertionError("tests name their model"); }, fx.cache));
    }

    static Res post(EmbeddingServer s, String path, String body, String... headers) throws IOException, InterruptedException {
        return send(s, "POST", path, body.getBytes(StandardCharsets.UTF_8), headers);
    }

    static Res get(EmbeddingServer s, String path, String... headers) throws IOException, InterruptedException {
        return send(s, "GET", path, null, headers);
    }

    static Res send(EmbeddingServer s, String method, String path, byte[] body, String... headers) throws IOException, InterruptedException {
        HttpResponse<String> r = http.send(request(s, method, path, body, headers), HttpResponse.BodyHandlers.ofString());
        return new Res(r.statusCode(), r.body());
    }

    static HttpRequest request(EmbeddingServer s, String method, String path, byte[] body, String... headers) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(s.url() + path))
                .method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofByteArray(body));
        for (int i = 0; i < headers.length; i += 2) b.header(headers[i], headers[i + 1]);
        return b.build();
    }

    static CompletableFuture<HttpResponse<String>> postAsync(EmbeddingServer s, String path, String body) {
        return http.sendAsync(request(s, "POST", path, body.getBytes(StandardCharsets.UTF_8)), HttpResponse.BodyHandlers.ofString());
    }

    static String json(Object o) { return Json.write(o); }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> data(Res r) {
        assertEquals(200, r.status(), r.body());
        return (List<Map<String, Object>>) r.json().get("data");
    }

    static float[] vector(Object embedding) {
        if (embedding instanceof String b64) {
            ByteBuffer b = ByteBuffer.wrap(Base64.getDecoder().decode(b64)).order(ByteOrder.LITTLE_ENDIAN);
            float[] v = new float[b.remaining() / 4];
            b.asFloatBuffer().get(v);
            return v;
        }
        List<?> l = (List<?>) embedding;
        float[] v = new float[l.size()];
        for (int i = 0; i < v.length; i++) v[i] = ((Number) l.get(i)).floatValue();
        return v;
    }

    /** What {@code rr embed} prints for these texts (through an expert when one is named). */
    static float[][] rrEmbed(String expert, String... texts) {
        List<String> argv = new ArrayList<>(List.of("embed", "--model", fx.model.toString(), "--backend", "ref"));
        if (expert != null) argv.addAll(List.of("--expert", expert, "--experts", fx.experts.toString()));
        argv.add("--");
        argv.addAll(List.of(texts));
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        int code = Main.execute(argv.toArray(new String[0]), new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        assertEquals(0, code, err.toString(StandardCharsets.UTF_8));
        List<String> lines = out.toString(StandardCharsets.UTF_8).lines().toList();
        assertEquals(texts.length, lines.size());
        float[][] v = new float[texts.length][];
        for (int i = 0; i < v.length; i++) v[i] = vector(Json.parseObject(lines.get(i)).get("embedding"));
        return v;
    }

    static void waitUntil(String what, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard, not a timing assumption
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) throw new AssertionError("gave up waiting for " + what);
            Thread.sleep(2);
        }
    }

    static void await(CountDownLatch l) {
        try {
            if (!l.await(60, TimeUnit.SECONDS)) throw new AssertionError("latch never released");
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    static final String LONG_TEXT = "retrieval ".repeat(100); // > 64 tokens: truncated by default

    // ------------------------------------------------------------------ same numbers as the embed path

    @Test
    void embeddingsEqualTheEmbedCommand() throws Exception {
        String[] texts = {Fixture.ALPHA_TEXT, "hello world", LONG_TEXT};
        float[][] base = rrEmbed(null, texts), alpha = rrEmbed("alpha", texts);
        for (String model : new String[]{"tiny", "base"}) {
            List<Map<String, Object>> d = data(post(server, "/v1/embeddings", json(Map.of("input", List.of(texts), "model", model))));
            assertEquals(texts.length, d.size());
            for (int i = 0; i < texts.length; i++) {
                assertEquals((long) i, d.get(i).get("index"));
                assertEquals("embedding", d.get(i).get("object"));
                assertEquals("base", d.get(i).get("expert"));
                Check.close("model " + model + " input " + i, vector(d.get(i).get("embedding")), base[i], ATOL, RTOL);
            }
        }
        Res r = post(server, "/v1/embeddings", json(Map.of("input", List.of(texts), "model", "alpha")));
        List<Map<String, Object>> d = data(r);
        for (int i = 0; i < texts.length; i++) {
            assertEquals("alpha", d.get(i).get("expert"));
            Check.close("alpha input " + i, vector(d.get(i).get("embedding")), alpha[i], ATOL, RTOL);
        }
        assertEquals("alpha", r.json().get("model"));
        long tokens = 0;
        for (String t : texts) tokens += oracleEncoder.tokenize(t).length;
        assertEquals(Map.of("prompt_tokens", tokens, "total_tokens", tokens), r.json().get("usage"));
        // a single string; no model: the base encoder
        Check.close("single string", vector(data(post(server, "/v1/embeddings", "{\"input\": \"hello world\"}")).get(0).get("embedding")),
                base[1], ATOL, RTOL);
    }

    @Test
    void tokenIdInputsEqualTextInputs() throws Exception {
        int[] a = oracleEncoder.tokenize(Fixture.ALPHA_TEXT), b = oracleEncoder.tokenize("hello world");
        float[][] want = rrEmbed("beta", Fixture.ALPHA_TEXT, "hello world");
        List<Map<String, Object>> d = data(post(server, "/v1/embeddings",
                "{\"model\": \"beta\", \"input\": [" + json(ids(a)) + ", " + json(ids(b)) + "]}"));
        Check.close("token ids 0", vector(d.get(0).get("embedding")), want[0], ATOL, RTOL);
        Check.close("token ids 1", vector(d.get(1).get("embedding")), want[1], ATOL, RTOL);
        // one token-id list is one input
        d = data(post(server, "/v1/embeddings", "{\"model\": \"beta\", \"input\": " + json(ids(b)) + "}"));
        assertEquals(1, d.size());
        Check.close("one token-id list", vector(d.get(0).get("embedding")), want[1], ATOL, RTOL);
        // an over-long id list is cut as the tokenizer cuts: the first max-1 ids and the last ([SEP])
        int[] longIds = oracleEncoder.tokenizer.encode(LONG_TEXT);
        assertTrue(longIds.length > 64);
        d = data(post(server, "/v1/embeddings", "{\"input\": " + json(ids(longIds)) + "}"));
        Check.close("truncated ids", vector(d.get(0).get("embedding")), rrEmbed(null, LONG_TEXT)[0], ATOL, RTOL);
    }

    static List<Object> ids(int[] a) {
        List<Object> l = new ArrayList<>();
        for (int x : a) l.add((long) x);
        return l;
    }

    @Test
    void routedRequestsChooseWhatTheRouterChooses() throws Exception {
        List<String> texts = List.of(Fixture.ALPHA_TEXT, Fixture.BETA_TEXT, "hello world", "electrons and dogs", "x");
        Router.Routed want = oracle.embedRouted(texts);
        assertEquals("alpha", want.decisions()[0].expert());
        assertEquals("beta", want.decisions()[1].expert()); // so the batch below mixes experts
        List<Map<String, Object>> d = data(post(server, "/v1/embeddings", json(Map.of("input", texts, "model", "auto"))));
        for (int i = 0; i < texts.size(); i++) {
            assertEquals(want.decisions()[i].expert(), d.get(i).get("expert"), "input " + i);
            Check.close("routed input " + i, vector(d.get(i).get("embedding")), want.embeddings()[i], ATOL, RTOL);
        }
        List<Map<String, Object>> r = data(post(server, "/route", json(Map.of("input", texts))));
        for (int i = 0; i < texts.size(); i++) {
            assertEquals(want.decisions()[i].expert(), r.get(i).get("expert"), "route " + i);
            @SuppressWarnings("unchecked") Map<String, Object> scores = (Map<String, Object>) r.get(i).get("scores");
            assertEquals(List.of("alpha", "beta"), List.copyOf(scores.keySet()));
            for (int g = 0; g < 2; g++)
                assertEquals(want.decisions()[i].scores()[g], ((Number) scores.get(oracle.experts().get(g))).doubleValue(), 1e-6);
        }
        // /route takes a single string too
        assertEquals("beta", data(post(server, "/route", json(Map.of("input", Fixture.BETA_TEXT)))).get(0).get("expert"));
    }

    @Test
    void searchRanksTheCorpusByTheRoutedQuery() throws Exception {
        String q = Fixture.BETA_TEXT;
        Router.Routed routed = oracle.embedRouted(List.of(q));
        List<String> ids = new ArrayList<>(Fixture.DOCS.keySet());
        List<String> docTexts = ids.stream().map(Fixture::docText).toList();
        float[][] docs = oracleEncoder.embed(docTexts); // the index is built by the base encoder
        Map<String, Double> score = new java.util.HashMap<>();
        for (int i = 0; i < ids.size(); i++) {
            double s = 0;
            for (int c = 0; c < docs[i].length; c++) s += (double) routed.embeddings()[0][c] * docs[i][c];
            score.put(ids.get(i), s);
        }
        List<String> ranked = new ArrayList<>(ids);
        ranked.sort((a, b) -> Double.compare(score.get(b), score.get(a)));

        Res r = post(server, "/search", json(Map.of("query", q, "k", 3)));
        assertEquals(200, r.status(), r.body());
        assertEquals("beta", r.json().get("expert"));
        List<Map<String, Object>> hits = data(r);
        assertEquals(3, hits.size());
        for (int i = 0; i < 3; i++) {
            String id = (String) hits.get(i).get("id");
            assertEquals(ranked.get(i), id, "rank " + i);
            assertEquals(Fixture.DOCS.get(id)[0], hits.get(i).get("title"));
            assertEquals("corpus", hits.get(i).get("dataset"));
            assertEquals(score.get(id), ((Number) hits.get(i).get("score")).doubleValue(), 1e-5);
        }
        // naming the dataset gives the same; an unknown one is refused with the known names
        assertEquals(hits, data(post(server, "/search", json(Map.of("query", q, "k", 3, "dataset", "corpus")))));
        assertEquals(6, data(post(server, "/search", json(Map.of("query", q, "k", 50)))).size());
        Res bad = post(server, "/search", json(Map.of("query", q, "dataset", "nfcorpus")));
        assertError(bad, 404, "dataset", "unknown dataset 'nfcorpus'", "corpus");
    }

    @Test
    void dimensionsTruncateAndRenormalise() throws Exception {
        float[] full = rrEmbed(null, "hello world")[0];
        float[] got = vector(data(post(server, "/v1/embeddings", "{\"input\": \"hello world\", \"dimensions\": 8}")).get(0).get("embedding"));
        assertEquals(8, got.length);
        float[] want = Api.shorten(full, 8, true);
        double n = 0;
        for (int i = 0; i < 8; i++) n += (double) full[i] * full[i];
        for (int i = 0; i < 8; i++) assertEquals(full[i] / Math.sqrt(n), got[i], 1e-6);
        Check.close("dimensions 8", got, want, ATOL, RTOL);
    }

    /** The body the OpenAI Python client (openai 1.x, embeddings.create) sends, verbatim, with its headers; only the model name is ours. */
    @Test
    void openAiPythonClientRequestWorks() throws Exception {
        String body = "{\"input\": [\"The food was delicious and the waiter...\"], \"model\": \"tiny\", \"encoding_format\": \"base64\"}";
        Res r = post(server, "/v1/embeddings", body, "Content-Type", "application/json", "Accept", "application/json",
                "User-Agent", "OpenAI/Python 1.54.4", "X-Stainless-Lang", "python", "X-Stainless-Package-Version", "1.54.4",
                "Authorization", "Bearer sk-no-key-needed");
        Map<String, Object> o = r.json();
        assertEquals("list", o.get("object"));
        assertEquals("tiny", o.get("model"));
        List<Map<String, Object>> d = data(r);
        assertEquals(1, d.size());
        assertTrue(d.get(0).get("embedding") instanceof String, "base64 string expected: " + r.body());
        Check.close("base64", vector(d.get(0).get("embedding")), rrEmbed(null, "The food was delicious and the waiter...")[0], ATOL, RTOL);
        assertTrue(((Map<?, ?>) o.get("usage")).get("prompt_tokens") instanceof Long);
    }

    // ------------------------------------------------------------------ refusals

    static void assertError(Res r, int status, String param, String... messageHas) {
        assertEquals(status, r.status(), r.body());
        Map<String, Object> o = r.json();
        assertEquals(List.of("error"), List.copyOf(o.keySet()), r.body());
        @SuppressWarnings("unchecked") Map<String, Object> e = (Map<String, Object>) o.get("error");
        assertEquals(List.of("message", "type", "param", "code"), List.copyOf(e.keySet()));
        String m = (String) e.get("message");
        for (String s : messageHas) assertTrue(m.contains(s), "message lacks '" + s + "': " + m);
        assertFalse(m.contains("Exception") || m.contains("\tat ") || m.contains(".java:"), "internals leaked: " + m);
        assertEquals(param, e.get("param"), r.body());
        assertTrue(e.get("type") instanceof String);
    }

    @Test
    void badRequestsAreJsonErrorsNamingTheProblem() throws Exception {
        String[][] cases = { // path, body, status, param ("" = null), message parts...
                {"/v1/embeddings", "{\"input\": [\"a\",", "400", "", "malformed JSON", "line 1, column 16"},
                {"/v1/embeddings", "", "400", "", "body is empty"},
                {"/v1/embeddings", "[1, 2]", "400", "", "must be a JSON object", "a list"},
                {"/v1/embeddings", "{\"model\": \"tiny\"}", "400", "input", "missing 'input'"},
                {"/v1/embeddings", "{\"input\": 5}", "400", "input", "'input' must be a string", "a number (5)"},
                {"/v1/embeddings", "{\"input\": []}", "400", "input", "'input' is an empty list"},
                {"/v1/embeddings", "{\"input\": \"\"}", "400", "input", "'input' is an empty string"},
                {"/v1/embeddings", "{\"input\": [\"a\", 3]}", "400", "input", "'input[1]' must be a string"},
                {"/v1/embeddings", "{\"input\": [\"a\", \"\"]}", "400", "input", "'input[1]' is an empty string"},
                {"/v1/embeddings", "{\"input\": [true]}", "400", "input", "'input[0]' must be a string or a list of token ids", "a boolean"},
                {"/v1/embeddings", "{\"input\": [[101, 1.5, 102]]}", "400", "input", "'input[0][1]' must be a token id", "1.5"},
                {"/v1/embeddings", "{\"input\": [[101, 99999999, 102]]}", "400", "input", "'input[0][1]' = 99999999 is not a token id", "30521"},
                {"/v1/embeddings", "{\"input\": [101, -1, 102]}", "400", "input", "'input[1]' = -1 is not a token id"},
                {"/v1/embeddings", "{\"input\": [[101, 102], []]}", "400", "input", "'input[1]' is an empty list of token ids"},
                {"/v1/embeddings", "{\"input\": [[101, 102], \"a\"]}", "400", "input", "'input[1]' must be a list of token ids"},
                {"/v1/embeddings", json(Map.of("input", java.util.Collections.nCopies(9, "a"))), "400", "input", "too many inputs: 9", "at most 8"},
                {"/v1/embeddings", "{\"input\": \"a\", \"model\": \"text-embedding-3-small\"}", "404", "model",
                        "unknown model 'text-embedding-3-small'", "tiny, base, alpha, beta, auto"},
                {"/v1/embeddings", "{\"input\": \"a\", \"model\": 3}", "400", "model", "'model' must be a string"},
                {"/v1/embeddings", "{\"input\": \"a\", \"encoding_format\": \"int8\"}", "400", "encoding_format", "\"float\" or \"base64\"", "int8"},
                {"/v1/embeddings", "{\"input\": \"a\", \"dimensions\": 33}", "400", "dimensions", "from 1 to 32", "33"},
                {"/v1/embeddings", "{\"input\": \"a\", \"dimensions\": \"8\"}", "400", "dimensions", "from 1 to 32", "\"8\""},
                {"/route", "{\"input\": {\"text\": \"a\"}}", "400", "input", "'input' must be a string", "an object"},
                {"/search", "{}", "400", "query", "missing 'query'"},
                {"/search", "{\"query\": 5}", "400", "query", "'query' must be a string"},
                {"/search", "{\"query\": \"a\", \"k\": 0}", "400", "k", "'k' must be an integer from 1 to 1000"},
                {"/nowhere", "{}", "404", "", "unknown path '/nowhere'", "/v1/embeddings"},
        };
        for (String[] c : cases) {
            Res r = post(server, c[0], c[1]);
            assertError(r, Integer.parseInt(c[2]), c[3].isEmpty() ? null : c[3], java.util.Arrays.copyOfRange(c, 4, c.length));
        }
        assertError(send(server, "POST", "/v1/embeddings", new byte[]{'{', '"', 'i', (byte) 0xC3, (byte) 0x28, '"', ':', '1', '}'}),
                400, null, "not valid UTF-8");
        assertError(get(server, "/v1/embeddings"), 405, null, "GET /v1/embeddings is not supported", "POST");
        // and it goes on serving
        assertEquals(200, get(server, "/health").status());
        assertEquals(1, data(post(server, "/v1/embeddings", "{\"input\": \"still here\"}")).size());
    }

    @Test
    void oversizeBodyIs413AndTheServerGoesOn() throws Exception {
        try (EmbeddingServer s = start("--max-body-bytes", "2048")) {
            String big = json(Map.of("input", "word ".repeat(1000))); // ~5 KB
            assertError(post(s, "/v1/embeddings", big), 413, null, "at most 2048 bytes");
            assertEquals(1, data(post(s, "/v1/embeddings", "{\"input\": \"small\"}")).size());
        }
    }

    @Test
    void noTruncateRefusesOverLongInputsByIndex() throws Exception {
        try (EmbeddingServer s = start("--no-truncate")) {
            assertError(post(s, "/v1/embeddings", json(Map.of("input", List.of("short", LONG_TEXT)))), 400, "input",
                    "'input[1]' is longer than the model's maximum of 64 tokens", "--no-truncate");
            int[] longIds = oracleEncoder.tokenizer.encode(LONG_TEXT);
            assertError(post(s, "/v1/embeddings", "{\"input\": [" + json(ids(new int[]{101, 102})) + ", " + json(ids(longIds)) + "]}"),
                    400, "input", "'input[1]' is longer than");
            // exactly the maximum is fine
            int[] max = oracleEncoder.tokenize(LONG_TEXT);
            assertEquals(64, max.length);
            assertEquals(1, data(post(s, "/v1/embeddings", "{\"input\": " + json(ids(max)) + "}")).size());
        }
    }

    @Test
    void autoWithoutPilotsSaysToBuildThem() throws Exception {
        Path noPilots = fx.root.resolve("experts-no-pilots");
        Files.createDirectories(noPilots);
        for (String e : List.of("alpha", "beta"))
            try (var files = Files.list(fx.experts.resolve(e))) {
                Files.createDirectories(noPilots.resolve(e));
                for (Path p : files.toList()) Files.copy(p, noPilots.resolve(e).resolve(p.getFileName()));
            }
        try (EmbeddingServer s = start("--experts", noPilots.toString())) {
            assertError(post(s, "/v1/embeddings", "{\"input\": \"a\", \"model\": \"auto\"}"), 409, "model", "pilot table", "rr pilots build");
            assertError(post(s, "/route", "{\"input\": \"a\"}"), 409, "model", "pilot table");
            assertEquals("alpha", data(post(s, "/v1/embeddings", "{\"input\": \"a\", \"model\": \"alpha\"}")).get(0).get("expert"));
            assertError(post(s, "/search", "{\"query\": \"a\"}"), 409, null, "no corpus", "--data");
        }
    }

    @Test
    void apiKeyGuardsEverythingButHealth() throws Exception {
        try (EmbeddingServer s = start("--api-key", "s3cret")) {
            assertEquals(200, get(s, "/health").status());
            assertError(get(s, "/info"), 401, null, "missing API key", "Authorization: Bearer");
            assertError(get(s, "/metrics", "Authorization", "Bearer wrong"), 401, null, "invalid API key");
            assertError(post(s, "/v1/embeddings", "{\"input\": \"a\"}", "Authorization", "Basic czNjcmV0"), 401, null, "missing API key");
            assertEquals(200, get(s, "/info", "Authorization", "Bearer s3cret").status());
            assertEquals(1, data(post(s, "/v1/embeddings", "{\"input\": \"a\"}", "Authorization", "Bearer s3cret")).size());
        }
    }

    // ------------------------------------------------------------------ batching, queue, shutdown

    @Test
    void fullQueueIs429AndQueuedRequestsMergeIntoOneBatch() throws Exception {
        try (EmbeddingServer s = start("--max-queue", "2")) {
            CountDownLatch entered = new CountDownLatch(1), release = new CountDownLatch(1);
            s.batcher.beforeBatch = () -> { entered.countDown(); await(release); };
            var a = postAsync(s, "/v1/embeddings", json(Map.of("input", List.of(Fixture.ALPHA_TEXT, "x"), "model", "alpha")));
            await(entered); // the batcher holds a; nothing is queued
            var b = postAsync(s, "/v1/embeddings", json(Map.of("input", "hello world", "model", "beta")));
            var c = postAsync(s, "/v1/embeddings", json(Map.of("input", List.of(Fixture.BETA_TEXT, Fixture.ALPHA_TEXT), "model", "auto")));
            waitUntil("two queued requests", () -> s.batcher.queueDepth() == 2);
            assertError(post(s, "/v1/embeddings", "{\"input\": \"one too many\"}"), 429, null, "busy", "queue");
            assertTrue(s.metrics.render(s.batcher.queueDepth()).contains("rr_queue_depth 2\n"));
            release.countDown();

            List<Map<String, Object>> da = data(new Res(a.get().statusCode(), a.get().body()));
            List<Map<String, Object>> db = data(new Res(b.get().statusCode(), b.get().body()));
            List<Map<String, Object>> dc = data(new Res(c.get().statusCode(), c.get().body()));
            float[][] wa = rrEmbed("alpha", Fixture.ALPHA_TEXT, "x"), wb = rrEmbed("beta", "hello world");
            Check.close("a0", vector(da.get(0).get("embedding")), wa[0], ATOL, RTOL);
            Check.close("a1", vector(da.get(1).get("embedding")), wa[1], ATOL, RTOL);
            Check.close("b", vector(db.get(0).get("embedding")), wb[0], ATOL, RTOL);
            assertEquals(List.of("beta", "alpha"), List.of(dc.get(0).get("expert"), dc.get(1).get("expert")));
            Router.Routed wc = oracle.embedRouted(List.of(Fixture.BETA_TEXT, Fixture.ALPHA_TEXT));
            Check.close("c0", vector(dc.get(0).get("embedding")), wc.embeddings()[0], ATOL, RTOL);
            Check.close("c1", vector(dc.get(1).get("embedding")), wc.embeddings()[1], ATOL, RTOL);
            // a, b and c ran as one batch of three requests and five inputs, three experts mixed
            String m = s.metrics.render(0);
            assertTrue(m.contains("rr_batch_requests_count 1\n") && m.contains("rr_batch_requests_sum 3.0\n"), m);
            assertTrue(m.contains("rr_batch_inputs_sum 5.0\n"), m);
            assertTrue(m.contains("rr_http_requests_total{endpoint=\"/v1/embeddings\",status=\"429\"} 1\n"), m);
            assertTrue(m.contains("rr_expert_inputs_total{expert=\"alpha\"} 3\n") && m.contains("rr_expert_inputs_total{expert=\"beta\"} 2\n"), m);
        }
    }

    @Test
    void closeFinishesAcceptedRequestsThenRefuses() throws Exception {
        EmbeddingServer s = start();
        CountDownLatch entered = new CountDownLatch(1), release = new CountDownLatch(1);
        s.batcher.beforeBatch = () -> { entered.countDown(); await(release); };
        var a = postAsync(s, "/v1/embeddings", json(Map.of("input", "first", "model", "alpha")));
        await(entered);
        var b = postAsync(s, "/route", json(Map.of("input", Fixture.BETA_TEXT)));
        waitUntil("b queued", () -> s.batcher.queueDepth() == 1);
        Thread closer = Thread.ofPlatform().start(s::close);
        waitUntil("close() started", s::closing);
        assertTrue(closer.isAlive(), "close() must wait for the accepted requests");
        release.countDown();
        closer.join();
        assertEquals(200, a.get().statusCode(), a.get().body());
        Check.close("finished during close", vector(data(new Res(200, a.get().body())).get(0).get("embedding")), rrEmbed("alpha", "first")[0], ATOL, RTOL);
        assertEquals("beta", data(new Res(b.get().statusCode(), b.get().body())).get(0).get("expert"));
        assertThrows(IOException.class, () -> get(s, "/health"), "a closed server accepts no connection");
        s.close(); // idempotent
    }

    @Test
    void sigtermFinishesAndExitsZero() throws Exception {
        String java = ProcessHandle.current().info().command().orElseThrow();
        Process p = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), "rrj.app.Main", "serve",
                "--model", fx.model.toString(), "--experts", fx.experts.toString(), "--port", "0", "--backend", "ref")
                .redirectError(fx.root.resolve("sigterm.err").toFile()).start();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line = out.readLine();
            assertTrue(line != null && line.startsWith("rr serve: listening on http://"), line + "\n" + Files.readString(fx.root.resolve("sigterm.err")));
            String url = line.substring("rr serve: listening on ".length()).split(" ")[0];
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(url + "/v1/embeddings"))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"input\": \"hello\", \"model\": \"auto\"}")).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), r.body());
            // SIGTERM by kill(1): Process.destroy() would also close our end of its stdout
            assertEquals(0, new ProcessBuilder("kill", "-TERM", Long.toString(p.pid())).inheritIO().start().waitFor());
            assertEquals("rr serve: stopped", out.readLine());
            assertTrue(p.waitFor(60, TimeUnit.SECONDS), "no exit after SIGTERM");
            String err = Files.readString(fx.root.resolve("sigterm.err"));
            assertEquals(0, p.exitValue(), err);
            assertTrue(err.contains("SIGTERM: finishing accepted requests"), err);
        } finally {
            p.destroyForcibly();
        }
    }

    // ------------------------------------------------------------------ info, metrics, flags

    @Test
    void infoAndMetricsDescribeTheServer() throws Exception {
        Map<String, Object> info = get(server, "/info").json();
        assertEquals("tiny", info.get("model"));
        assertEquals(32L, info.get("dimension"));
        assertEquals(64L, info.get("max_length"));
        assertEquals(List.of("alpha", "beta"), info.get("experts"));
        assertEquals(Map.of("present", true, "count", 2L), info.get("pilots"));
        assertEquals(List.of(Map.of("name", "corpus", "documents", 6L)), info.get("datasets"));
        assertEquals(8L, ((Map<?, ?>) info.get("limits")).get("max_inputs"));
        assertEquals(false, info.get("auth"));

        assertEquals(1, data(post(server, "/v1/embeddings", "{\"input\": \"counted\", \"model\": \"beta\"}")).size());
        HttpResponse<String> m = http.send(request(server, "GET", "/metrics", null), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, m.statusCode());
        assertTrue(m.headers().firstValue("Content-Type").orElse("").startsWith("text/plain; version=0.0.4"));
        String t = m.body();
        for (String s : new String[]{"# TYPE rr_http_requests_total counter", "rr_http_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"} ",
                "# TYPE rr_http_request_duration_seconds histogram", "rr_http_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",le=\"+Inf\"} ",
                "rr_batch_inputs_bucket{le=\"1.0\"} ", "# TYPE rr_queue_depth gauge", "rr_queue_depth 0", "rr_expert_inputs_total{expert=\"beta\"} "})
            assertTrue(t.contains(s), "metrics lack '" + s + "':\n" + t);
        assertTrue(server.metrics.requests("/v1/embeddings", 200) >= 1);
    }

    @Test
    void badFlagsAreUsageErrors() {
        rrj.app.Args.UsageException u = assertThrows(rrj.app.Args.UsageException.class, () -> start("--port", "http"));
        assertEquals("--port must be an integer, got 'http'", u.getMessage());
        assertEquals("unknown option --max-batch", assertThrows(rrj.app.Args.UsageException.class, () -> start("--max-batch", "4")).getMessage());
        assertEquals("--max-queue needs a value", assertThrows(rrj.app.Args.UsageException.class, () -> start("--max-queue")).getMessage());
        assertEquals("serve takes no positional arguments, got 'extra'", assertThrows(rrj.app.Args.UsageException.class, () -> start("extra")).getMessage());
        assertEquals("--no-truncate takes no value", assertThrows(rrj.app.Args.UsageException.class, () -> start("--no-truncate=yes")).getMessage());
        assertEquals("--max-queue must be between 1 and 1048576, got 0", assertThrows(rrj.app.Args.UsageException.class, () -> start("--max-queue", "0")).getMessage());
    }

    /** However the batcher happens to merge them, concurrent requests of mixed models each get their own vectors. */
    @Test
    void concurrentMixedRequestsEachGetTheirOwnVectors() throws Exception {
        String[] models = {"base", "alpha", "beta", "auto"};
        String[] texts = {Fixture.ALPHA_TEXT, Fixture.BETA_TEXT, "hello world", "x", LONG_TEXT, "electrons and dogs"};
        Map<String, float[][]> want = new java.util.HashMap<>();
        want.put("base", rrEmbed(null, texts));
        want.put("alpha", rrEmbed("alpha", texts));
        want.put("beta", rrEmbed("beta", texts));
        want.put("auto", oracle.embedRouted(List.of(texts)).embeddings());
        List<CompletableFuture<HttpResponse<String>>> sent = new ArrayList<>();
        for (int i = 0; i < 24; i++)
            sent.add(postAsync(server, "/v1/embeddings", json(Map.of("input", List.of(texts[i % texts.length], texts[(i + 1) % texts.length]),
                    "model", models[i % models.length]))));
        for (int i = 0; i < sent.size(); i++) {
            List<Map<String, Object>> d = data(new Res(sent.get(i).get().statusCode(), sent.get(i).get().body()));
            float[][] w = want.get(models[i % models.length]);
            Check.close("request " + i + " input 0", vector(d.get(0).get("embedding")), w[i % texts.length], ATOL, RTOL);
            Check.close("request " + i + " input 1", vector(d.get(1).get("embedding")), w[(i + 1) % texts.length], ATOL, RTOL);
        }
    }

    @Test
    void batchSizeOneStillGivesTheSameVectors() throws Exception {
        try (EmbeddingServer s = start("--max-batch-tokens", "1")) {
            String[] texts = {Fixture.ALPHA_TEXT, "hello world", Fixture.BETA_TEXT};
            List<Map<String, Object>> d = data(post(s, "/v1/embeddings", json(Map.of("input", List.of(texts), "model", "auto"))));
            Router.Routed want = oracle.embedRouted(List.of(texts));
            for (int i = 0; i < texts.length; i++)
                Check.close("batch of 1, input " + i, vector(d.get(i).get("embedding")), want.embeddings()[i], ATOL, RTOL);
        }
    }
}
