package rrj.bench;

import rrj.app.Main;
import rrj.model.Json;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Load test of {@code rr serve}'s {@code POST /v1/embeddings}: {@code --clients} concurrent
 * clients, each sending {@code --requests} requests one after the other (a closed loop: a
 * client sends its next request when the previous answer arrived), with the JDK's plain
 * {@link HttpClient}. Reports throughput, latency percentiles (p50, p90, p99, max), errors
 * (answers other than a 200 with one embedding per input, by status) and lost responses
 * (requests that got no HTTP answer at all: connection errors, timeouts), plus the server's
 * own batch statistics read from {@code /metrics} before and after the timed part.
 *
 * <p>Without {@code --url} it starts the server in this JVM first, exactly as {@code rr serve}
 * with the flags after {@code --} (and {@code --port 0}), so one command measures one server
 * configuration: e.g. the default dynamic batching against {@code -- --max-batch-tokens 1},
 * which makes every encoder run a single sequence.
 *
 * <p>Texts: {@link #TEXTS}, short English sentences (about 10 to 30 tokens), taken in turn.
 */
public final class LoadTest {
    private LoadTest() {}

    static final String USAGE = """
            usage: java rrj.bench.LoadTest [--url URL] [--clients N] [--requests N] [--inputs N] [--model NAME]
                                           [--api-key KEY] [--warmup N] [--timeout-s N] [-- SERVE FLAGS...]
              --url       a running server (default: start one in this JVM with 'rr serve --port 0 SERVE FLAGS')
              --clients   concurrent clients (default 64)
              --requests  requests per client, sent one after the other (default 20)
              --inputs    texts per request (default 1)
              --model     the request's "model" (default: none, the base encoder)
              --warmup    untimed requests first, 8 at a time (default 64)
              --timeout-s per-request timeout; an answer later than this counts as lost (default 120)
            """;

    /** Request texts, used in turn. */
    static final String[] TEXTS = {
            "what is the capital of france",
            "how do vaccines train the immune system to recognise a virus",
            "The food was delicious and the waiter was friendly.",
            "best practices for indexing a large document collection",
            "0-dimensional biomaterials lack inductive properties",
            "why does the moon always show the same face to the earth",
            "a cheap and reliable way to back up family photos",
            "symptoms of vitamin d deficiency in adults",
            "dense retrieval encodes queries and documents as vectors and ranks them by dot product",
            "is it safe to run a marathon without training",
            "history of the printing press in europe",
            "how many layers does a small bert model have",
            "compare solar panels and wind turbines for a farm",
            "a gene mutation that increases the risk of breast cancer",
            "recipes with lentils and spinach",
            "the effect of sleep deprivation on memory consolidation in students",
    };

    public static void main(String[] argv) throws Exception {
        String url = null, model = null, apiKey = null;
        int clients = 64, requests = 20, inputs = 1, warmup = 64, timeoutS = 120;
        List<String> serve = new ArrayList<>();
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("--")) { serve.addAll(Arrays.asList(argv).subList(i + 1, argv.length)); break; }
            if (a.equals("-h") || a.equals("--help")) { System.out.print(USAGE); return; }
            if (i + 1 >= argv.length) usage("option " + a + " needs a value");
            String v = argv[++i];
            switch (a) {
                case "--url" -> url = v;
                case "--clients" -> clients = positive(a, v);
                case "--requests" -> requests = positive(a, v);
                case "--inputs" -> inputs = positive(a, v);
                case "--model" -> model = v;
                case "--api-key" -> apiKey = v;
                case "--warmup" -> warmup = Integer.parseInt(v);
                case "--timeout-s" -> timeoutS = positive(a, v);
                default -> usage("unknown option " + a);
            }
        }
        String what = url != null ? url : "in-process 'rr serve --port 0" + (serve.isEmpty() ? "" : " " + String.join(" ", serve)) + "'";
        if (url == null) url = startServer(serve);

        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(30)).build();
        Target t = new Target(http, url, model, apiKey, inputs, Duration.ofSeconds(timeoutS));
        System.out.printf(Locale.ROOT, "server: %s%nload: %d clients x %d requests, %d input(s) per request, model %s%n",
                what, clients, requests, inputs, model == null ? "(none: base)" : model);

        // warm-up: JIT, buffers, connections
        Result w = run(t, Math.min(8, Math.max(1, warmup)), warmup <= 0 ? 0 : (warmup + 7) / 8);
        if (warmup > 0) System.out.printf(Locale.ROOT, "warm-up: %d requests, %d ok%n", w.latenciesNs.length + w.lost, w.ok);

        Map<String, Double> before = metrics(t);
        Result r = run(t, clients, requests);
        Map<String, Double> after = metrics(t);

        long n = (long) clients * requests;
        long[] lat = r.latenciesNs.clone();
        Arrays.sort(lat);
        System.out.printf(Locale.ROOT, "requests: %d sent, %d ok, %d errors%s, %d lost%n", n, r.ok, r.errors, r.byStatus.isEmpty() ? "" : " " + r.byStatus, r.lost);
        System.out.printf(Locale.ROOT, "wall: %.2f s; throughput: %.1f requests/s, %.1f inputs/s%n",
                r.wallNs * 1e-9, r.ok / (r.wallNs * 1e-9), (double) r.ok * inputs / (r.wallNs * 1e-9));
        System.out.printf(Locale.ROOT, "latency ms: p50 %.1f, p90 %.1f, p99 %.1f, max %.1f%n",
                pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99), lat.length == 0 ? Double.NaN : lat[lat.length - 1] * 1e-6);
        if (before != null && after != null) {
            double batches = after.getOrDefault("rr_batch_inputs_count", 0.0) - before.getOrDefault("rr_batch_inputs_count", 0.0);
            double batchInputs = after.getOrDefault("rr_batch_inputs_sum", 0.0) - before.getOrDefault("rr_batch_inputs_sum", 0.0);
            double batchRequests = after.getOrDefault("rr_batch_requests_sum", 0.0) - before.getOrDefault("rr_batch_requests_sum", 0.0);
            System.out.printf(Locale.ROOT, "server: %.0f batches, mean %.1f inputs and %.1f requests per batch%n",
                    batches, batchInputs / batches, batchRequests / batches);
        }
        System.out.flush();
        System.exit(r.lost > 0 || r.errors > 0 ? 1 : 0); // ends an in-process server through its shutdown hook
    }

    record Target(HttpClient http, String url, String model, String apiKey, int inputs, Duration timeout) {
        /** Request number {@code id}: the next {@code inputs} texts in turn. */
        HttpRequest request(int id) {
            List<Object> in = new ArrayList<>();
            for (int i = 0; i < inputs; i++) in.add(TEXTS[(id * inputs + i) % TEXTS.length]);
            Map<String, Object> body = new LinkedHashMap<>();
            body.put("input", in);
            if (model != null) body.put("model", model);
            HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url + "/v1/embeddings")).timeout(timeout)
                    .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(Json.write(body)));
            if (apiKey != null) b.header("Authorization", "Bearer " + apiKey);
            return b.build();
        }
    }

    /** Per request its latency (answered ones), and the outcome counts. */
    record Result(long[] latenciesNs, long ok, long errors, long lost, Map<Integer, Long> byStatus, long wallNs) {}

    static Result run(Target t, int clients, int requests) throws InterruptedException {
        long[] lat = new long[clients * requests];
        AtomicLong ok = new AtomicLong(), errors = new AtomicLong(), lost = new AtomicLong(), answered = new AtomicLong();
        Map<Integer, Long> byStatus = new TreeMap<>();
        CountDownLatch go = new CountDownLatch(1), done = new CountDownLatch(clients);
        for (int c = 0; c < clients; c++) {
            int client = c;
            Thread.ofVirtual().start(() -> {
                try {
                    go.await();
                    for (int k = 0; k < requests; k++) {
                        int id = client * requests + k;
                        HttpRequest req = t.request(id);
                        long t0 = System.nanoTime();
                        HttpResponse<String> res;
                        try {
                            res = t.http().send(req, HttpResponse.BodyHandlers.ofString());
                        } catch (IOException e) {
                            lost.incrementAndGet();
                            continue;
                        }
                        lat[(int) answered.getAndIncrement()] = System.nanoTime() - t0;
                        if (res.statusCode() == 200 && embeddings(res.body()) == t.inputs()) ok.incrementAndGet();
                        else {
                            errors.incrementAndGet();
                            synchronized (byStatus) { byStatus.merge(res.statusCode(), 1L, Long::sum); }
                        }
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                } finally {
                    done.countDown();
                }
            });
        }
        long t0 = System.nanoTime();
        go.countDown();
        done.await();
        long wall = System.nanoTime() - t0;
        return new Result(Arrays.copyOf(lat, (int) answered.get()), ok.get(), errors.get(), lost.get(), byStatus, wall);
    }

    /** Number of embeddings in a response body, -1 when it is not an embeddings list. */
    static int embeddings(String body) {
        try {
            return Json.parseObject(body).get("data") instanceof List<?> l ? l.size() : -1;
        } catch (RuntimeException e) {
            return -1;
        }
    }

    /** Nearest-rank percentile in milliseconds. */
    static double pct(long[] sorted, double q) {
        if (sorted.length == 0) return Double.NaN;
        int i = (int) Math.ceil(q * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))] * 1e-6;
    }

    /** The server's metrics as name{labels} → value, or null when they cannot be read. */
    static Map<String, Double> metrics(Target t) {
        try {
            HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(t.url() + "/metrics")).timeout(t.timeout());
            if (t.apiKey() != null) b.header("Authorization", "Bearer " + t.apiKey());
            HttpResponse<String> r = t.http().send(b.build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) return null;
            Map<String, Double> m = new TreeMap<>();
            for (String line : r.body().split("\n")) {
                if (line.startsWith("#") || line.isBlank()) continue;
                int sp = line.lastIndexOf(' ');
                m.put(line.substring(0, sp), Double.parseDouble(line.substring(sp + 1)));
            }
            return m;
        } catch (IOException | InterruptedException | RuntimeException e) {
            return null;
        }
    }

    /**
     * Starts {@code rr serve --port 0 FLAGS} in this JVM (a daemon thread running
     * {@link Main#execute}) and returns its URL once it prints "listening on".
     */
    static String startServer(List<String> flags) throws Exception {
        List<String> argv = new ArrayList<>(List.of("serve", "--port", "0"));
        argv.addAll(flags);
        CompletableFuture<String> url = new CompletableFuture<>();
        OutputStream lines = new OutputStream() {
            final ByteArrayOutputStream line = new ByteArrayOutputStream();

            @Override
            public void write(int b) {
                if (b != '\n') { line.write(b); return; }
                String s = line.toString(StandardCharsets.UTF_8);
                line.reset();
                System.err.println(s);
                String mark = "listening on ";
                int at = s.indexOf(mark);
                if (at >= 0) url.complete(s.substring(at + mark.length()).split(" ")[0]);
            }
        };
        PrintStream out = new PrintStream(lines, true, StandardCharsets.UTF_8);
        Thread server = new Thread(() -> {
            int code = Main.execute(argv.toArray(new String[0]), out, System.err);
            url.completeExceptionally(new IllegalStateException("rr serve ended with exit code " + code + " before listening"));
        }, "rr-serve");
        server.setDaemon(true);
        server.start();
        return url.get(30, TimeUnit.MINUTES); // the first start may convert the default model and build indexes
    }

    static int positive(String name, String v) {
        try {
            int x = Integer.parseInt(v);
            if (x >= 1) return x;
        } catch (NumberFormatException e) {
            // fall through
        }
        usage(name + " must be a positive integer, got '" + v + "'");
        return 0;
    }

    static void usage(String message) {
        System.err.println("LoadTest: " + message);
        System.err.print(USAGE);
        System.exit(2);
    }
}
