package rrj.app.serve;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import rrj.model.Json;
import rrj.router.Router;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * The embedding server over the JDK's {@code com.sun.net.httpserver} (no framework):
 * <pre>
 *   POST /v1/embeddings   OpenAI's embeddings API; each item also names the expert it used
 *   POST /route           per input: the chosen expert and every expert's score
 *   POST /search          a routed query against the loaded corpus index(es)
 *   GET  /health          liveness (never needs the API key)
 *   GET  /info            model, dimension, experts, pilots, datasets, limits
 *   GET  /metrics         Prometheus text format ({@link ServerMetrics})
 * </pre>
 * Handlers run on virtual threads: they read and check the request, tokenize, and hand the
 * work to the {@link Batcher}, the only thread that touches the encoder. Every refusal is a
 * JSON error in OpenAI's shape ({@link ApiError}); an unexpected failure is a 500 whose
 * message points to the server log, where its stack trace goes.
 *
 * <p>{@link #close}: stop accepting connections, let the requests already accepted finish
 * (up to {@link #GRACE_SECONDS}), finish the batcher's queue, then release what the server
 * owns (encoder, backend, indexes).
 *
 * <p>Not here: TLS (put a proxy in front), HTTP/2, streaming responses, rate limiting per key.
 */
public final class EmbeddingServer implements AutoCloseable {
    /** How long {@link #close} waits for accepted requests. */
    static final int GRACE_SECONDS = 60;
    /** An over-limit body is read and dropped up to this much, so the client gets its 413 instead of a reset. */
    static final long DISCARD_LIMIT = 16 << 20;
    static final Set<String> ENDPOINTS = Set.of("/v1/embeddings", "/route", "/search", "/health", "/info", "/metrics");

    final Api.Model model;
    final List<Batcher.Corpus> corpora;
    final ServerMetrics metrics;
    final Batcher batcher;
    private final byte[] apiKey; // null: no auth
    private final String backend;
    private final List<AutoCloseable> owned;
    private final PrintStream log;
    private final HttpServer http;
    private final ExecutorService handlers = Executors.newVirtualThreadPerTaskExecutor();
    private final CountDownLatch closed = new CountDownLatch(1);
    private volatile boolean closing;

    private EmbeddingServer(Api.Model model, List<Batcher.Corpus> corpora, String apiKey, String backend, List<AutoCloseable> owned,
                            PrintStream log, InetSocketAddress address) throws IOException {
        this.model = model;
        this.corpora = List.copyOf(corpora);
        this.apiKey = apiKey == null ? null : apiKey.getBytes(StandardCharsets.UTF_8);
        this.backend = backend;
        this.owned = List.copyOf(owned);
        this.log = log;
        this.metrics = new ServerMetrics();
        this.batcher = new Batcher(model.router(), model.limits().maxBatchTokens(), model.limits().maxQueue(), metrics);
        this.http = HttpServer.create(address, 1024);
        http.createContext("/", this::handle);
        http.setExecutor(handlers);
    }

    /**
     * Starts serving {@code model} (and searching {@code corpora}) on {@code address} (port 0:
     * any free port). {@code owned} is closed, in order, after the server stops.
     */
    static EmbeddingServer start(Api.Model model, List<Batcher.Corpus> corpora, String apiKey, String backend, List<AutoCloseable> owned,
                                 PrintStream log, InetSocketAddress address) throws IOException {
        EmbeddingServer s = new EmbeddingServer(model, corpora, apiKey, backend, owned, log, address);
        s.batcher.start();
        s.http.start();
        return s;
    }

    /** The port it listens on. */
    public int port() { return http.getAddress().getPort(); }

    /** The base URL, {@code http://host:port}. */
    public String url() {
        InetSocketAddress a = http.getAddress();
        String h = a.getAddress().getHostAddress();
        return "http://" + (h.contains(":") ? "[" + h + "]" : h) + ":" + a.getPort();
    }

    boolean closing() { return closing; }

    /** Blocks until {@link #close} has finished. */
    public void awaitClosed() throws InterruptedException { closed.await(); }

    /** Stops accepting, finishes accepted requests and queued work, releases the model. Idempotent. */
    @Override
    public synchronized void close() {
        if (closed.getCount() == 0) return;
        closing = true;
        http.stop(GRACE_SECONDS); // returns once every accepted exchange has finished (or the grace ran out)
        batcher.close();           // finishes anything still queued
        handlers.shutdown();
        try {
            handlers.awaitTermination(GRACE_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (AutoCloseable c : owned) {
            try {
                c.close();
            } catch (Exception e) {
                log.println("rr serve: closing " + c + ": " + e.getMessage());
            }
        }
        closed.countDown();
    }

    // ------------------------------------------------------------------ HTTP plumbing

    private record Reply(int status, String contentType, String body) {
        static Reply json(Object o) { return new Reply(200, "application/json", Json.write(o)); }
    }

    private void handle(HttpExchange ex) {
        long t0 = System.nanoTime();
        String path = ex.getRequestURI().getPath();
        String endpoint = ENDPOINTS.contains(path) ? path : "other";
        int status = 500;
        try {
            Reply r;
            try {
                r = dispatch(ex, endpoint);
            } catch (ApiError e) {
                if (e.status == 413) ex.getResponseHeaders().set("Connection", "close");
                if (e.status == 429) ex.getResponseHeaders().set("Retry-After", "1");
                r = new Reply(e.status, "application/json", e.body());
            } catch (Throwable e) {
                log.println("rr serve: internal error on " + ex.getRequestMethod() + " " + path + ":");
                e.printStackTrace(log);
                r = new Reply(500, "application/json", new ApiError(500, "server_error",
                        "internal server error (" + e.getClass().getSimpleName() + "); the server log has the details", null, null).body());
            }
            status = r.status();
            byte[] body = r.body().getBytes(StandardCharsets.UTF_8);
            ex.getResponseHeaders().set("Content-Type", r.contentType());
            ex.sendResponseHeaders(r.status(), body.length);
            try (OutputStream out = ex.getResponseBody()) {
                out.write(body);
            }
        } catch (IOException e) {
            status = 499; // the client went away before the answer was written
        } finally {
            metrics.request(endpoint, status, (System.nanoTime() - t0) * 1e-9);
            ex.close();
        }
    }

    private Reply dispatch(HttpExchange ex, String endpoint) throws IOException {
        if (endpoint.equals("/health")) {
            method(ex, "GET");
            if (closing) return new Reply(503, "application/json", Json.write(Map.of("status", "shutting down")));
            return Reply.json(Map.of("status", "ok"));
        }
        if (closing) throw new ApiError(503, "server_error", "the server is shutting down", null, "shutting_down");
        if (apiKey != null) authorize(ex);
        return switch (endpoint) {
            case "/info" -> { method(ex, "GET"); yield Reply.json(info()); }
            case "/metrics" -> { method(ex, "GET"); yield new Reply(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(batcher.queueDepth())); }
            case "/v1/embeddings" -> { method(ex, "POST"); yield Reply.json(embeddings(body(ex))); }
            case "/route" -> { method(ex, "POST"); yield Reply.json(route(body(ex))); }
            case "/search" -> { method(ex, "POST"); yield Reply.json(search(body(ex))); }
            default -> throw new ApiError(404, "invalid_request_error", "unknown path '" + ex.getRequestURI().getPath()
                    + "': this server has POST /v1/embeddings, POST /route, POST /search, GET /health, GET /info, GET /metrics", null, "not_found");
        };
    }

    private static void method(HttpExchange ex, String allowed) {
        if (ex.getRequestMethod().equals(allowed)) return;
        ex.getResponseHeaders().set("Allow", allowed);
        throw new ApiError(405, "invalid_request_error", ex.getRequestMethod() + " " + ex.getRequestURI().getPath()
                + " is not supported: use " + allowed, null, "method_not_allowed");
    }

    /** {@code Authorization: Bearer KEY}, compared in constant time. */
    private void authorize(HttpExchange ex) {
        String h = ex.getRequestHeaders().getFirst("Authorization");
        byte[] given = h != null && h.regionMatches(true, 0, "Bearer ", 0, 7) ? h.substring(7).strip().getBytes(StandardCharsets.UTF_8) : null;
        if (given == null || !MessageDigest.isEqual(given, apiKey))
            throw new ApiError(401, "invalid_request_error", given == null
                    ? "missing API key: send the header 'Authorization: Bearer KEY'"
                    : "invalid API key in the Authorization header", null, "invalid_api_key");
    }

    /** The request body as a JSON object: 413 over the size limit, 400 when not UTF-8 or not JSON or not an object. */
    private Map<String, Object> body(HttpExchange ex) throws IOException {
        long max = model.limits().maxBodyBytes();
        InputStream in = ex.getRequestBody();
        String declared = ex.getRequestHeaders().getFirst("Content-Length");
        if (declared != null) {
            long n;
            try {
                n = Long.parseLong(declared.strip());
            } catch (NumberFormatException e) {
                throw ApiError.invalid("bad Content-Length header '" + declared + "'", null);
            }
            if (n > max) {
                in.skipNBytes(Math.min(n, DISCARD_LIMIT));
                throw tooLarge(n + " bytes", max);
            }
        }
        byte[] b = in.readNBytes((int) Math.min(Integer.MAX_VALUE - 8, max + 1));
        if (b.length > max) {
            long dropped = 0;
            while (dropped < DISCARD_LIMIT && in.skip(1 << 16) > 0) dropped += 1 << 16;
            throw tooLarge("more than " + max + " bytes", max);
        }
        if (b.length == 0) throw ApiError.invalid("the request body is empty: send a JSON object", null);
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw ApiError.invalid("the request body is not valid UTF-8", null);
        }
        Object v;
        try {
            v = Json.parse(text);
        } catch (Json.JsonException e) {
            throw ApiError.invalid("malformed JSON in the request body: " + e.getMessage(), null);
        }
        if (!(v instanceof Map<?, ?>)) throw ApiError.invalid("the request body must be a JSON object, got " + Api.typeName(v), null);
        @SuppressWarnings("unchecked") Map<String, Object> m = (Map<String, Object>) v;
        return m;
    }

    private static ApiError tooLarge(String what, long max) {
        return new ApiError(413, "invalid_request_error", "the request body is " + what + "; this server takes at most " + max
                + " bytes (--max-body-bytes)", null, "payload_too_large");
    }

    /** Submits a job and waits for the batcher to finish it. */
    private Batcher.Job run(Batcher.Job job) {
        try {
            return batcher.submit(job).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ApiError(503, "server_error", "interrupted while waiting for the encoder", null, null);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof RuntimeException r ? r : new RuntimeException(e.getCause());
        }
    }

    // ------------------------------------------------------------------ endpoints

    private Map<String, Object> embeddings(Map<String, Object> req) {
        String option = Api.option(req.get("model"), model);
        int dims = Api.dimensions(req.get("dimensions"), model);
        boolean b64 = Api.base64(req.get("encoding_format"));
        int[][] ids = Api.inputs(req.get("input"), "input", model);
        Batcher.Job job = run(Batcher.Job.of(ids, option, true, null, 0));
        List<Object> data = new ArrayList<>(ids.length);
        for (int i = 0; i < ids.length; i++) {
            float[] v = Api.shorten(job.embeddings[i], dims, req.get("dimensions") != null);
            Map<String, Object> item = new LinkedHashMap<>();
            item.put("object", "embedding");
            item.put("index", (long) i);
            item.put("embedding", b64 ? Api.base64(v) : v);
            item.put("expert", Batcher.chosen(job, i));
            data.add(item);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("object", "list");
        out.put("data", data);
        out.put("model", req.get("model") == null ? model.name() : req.get("model"));
        out.put("usage", Api.usage(ids));
        return out;
    }

    private Map<String, Object> route(Map<String, Object> req) {
        Api.option(Batcher.AUTO, model); // the 409 when there is no pilot table
        int[][] ids = Api.inputs(req.get("input"), "input", model);
        Batcher.Job job = run(Batcher.Job.of(ids, Batcher.AUTO, false, null, 0));
        List<Object> data = new ArrayList<>(ids.length);
        for (int i = 0; i < ids.length; i++) {
            Map<String, Object> item = new LinkedHashMap<>();
            item.put("object", "route");
            item.put("index", (long) i);
            item.put("expert", job.decisions[i].expert());
            item.put("scores", Api.scores(job.decisions[i]));
            data.add(item);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("object", "list");
        out.put("data", data);
        out.put("experts", new ArrayList<Object>(model.router().experts()));
        out.put("usage", Api.usage(ids));
        return out;
    }

    /** Search: the query embedded through {@code model} (default: routed when there is a pilot table, else the base encoder). */
    private Map<String, Object> search(Map<String, Object> req) {
        if (corpora.isEmpty())
            throw new ApiError(409, "invalid_request_error", "this server has no corpus to search: start it with --data DIR (a BEIR dataset directory)",
                    null, "no_corpus");
        Object q = req.get("query");
        if (q != null && !(q instanceof String)) throw ApiError.invalid("'query' must be a string, got " + Api.typeName(q), "query");
        int k = Api.integer(req.get("k"), "k", 10, 1, 1000);
        List<Batcher.Corpus> in = corpora;
        Object ds = req.get("dataset");
        if (ds != null) {
            in = null;
            for (Batcher.Corpus c : corpora) if (c.name().equals(ds)) in = List.of(c);
            if (in == null) {
                List<String> names = new ArrayList<>();
                for (Batcher.Corpus c : corpora) names.add(c.name());
                throw new ApiError(404, "invalid_request_error", "unknown dataset " + (ds instanceof String s ? "'" + s + "'" : Api.typeName(ds))
                        + " (this server has: " + String.join(", ", names) + ")", "dataset", "dataset_not_found");
            }
        }
        Object m = req.get("model");
        String option = m != null ? Api.option(m, model) : model.router().pilots() != null ? Batcher.AUTO : Router.BASE;
        int[][] ids = Api.inputs(q, "query", model);
        Batcher.Job job = run(Batcher.Job.of(ids, option, true, in, k));
        List<Object> hits = new ArrayList<>();
        for (Batcher.Hit h : job.hits) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("id", h.id());
            o.put("title", h.title());
            o.put("score", h.score());
            o.put("dataset", h.dataset());
            hits.add(o);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("object", "list");
        out.put("query", q);
        out.put("expert", Batcher.chosen(job, 0));
        if (job.decisions != null && job.decisions[0] != null) out.put("scores", Api.scores(job.decisions[0]));
        out.put("data", hits);
        out.put("usage", Api.usage(ids));
        return out;
    }

    private Map<String, Object> info() {
        Map<String, Object> o = new LinkedHashMap<>();
        var enc = model.encoder();
        o.put("model", model.name());
        o.put("model_dir", enc.dir.toAbsolutePath().toString());
        o.put("dimension", (long) model.dimension());
        o.put("max_length", (long) model.maxLength());
        o.put("pooling", enc.options.pooling().name().toLowerCase(java.util.Locale.ROOT));
        o.put("normalize", enc.options.normalize());
        o.put("backend", backend);
        o.put("experts", new ArrayList<Object>(model.router().experts()));
        Map<String, Object> p = new LinkedHashMap<>();
        p.put("present", model.router().pilots() != null);
        p.put("count", (long) (model.router().pilots() == null ? 0 : model.router().pilots().count()));
        o.put("pilots", p);
        o.put("models", new ArrayList<Object>(model.names()));
        List<Object> ds = new ArrayList<>();
        for (Batcher.Corpus c : corpora) {
            Map<String, Object> d = new LinkedHashMap<>();
            d.put("name", c.name());
            d.put("documents", (long) c.index().size());
            ds.add(d);
        }
        o.put("datasets", ds);
        Map<String, Object> l = new LinkedHashMap<>();
        Api.Limits lim = model.limits();
        l.put("max_batch_tokens", (long) lim.maxBatchTokens());
        l.put("max_queue", (long) lim.maxQueue());
        l.put("max_inputs", (long) lim.maxInputs());
        l.put("max_body_bytes", lim.maxBodyBytes());
        l.put("max_tokens_per_input", (long) model.maxLength());
        l.put("truncate", lim.truncate());
        o.put("limits", l);
        o.put("auth", apiKey != null);
        return o;
    }
}
