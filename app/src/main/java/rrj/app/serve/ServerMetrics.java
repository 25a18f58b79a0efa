package rrj.app.serve;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.DoubleAdder;
import java.util.concurrent.atomic.LongAdder;

/**
 * The server's counters, written in Prometheus' text exposition format (version 0.0.4) by
 * {@code GET /metrics}:
 * <pre>
 *   rr_http_requests_total{endpoint,status}       counter
 *   rr_http_request_duration_seconds{endpoint}    histogram
 *   rr_batch_inputs                               histogram  inputs per merged batch
 *   rr_batch_requests                             histogram  requests per merged batch
 *   rr_batch_duration_seconds                     histogram  encoder time per merged batch
 *   rr_queue_depth                                gauge      requests waiting for the batcher
 *   rr_expert_inputs_total{expert}                counter    inputs encoded or routed, by expert
 *   rr_tokens_total                               counter    tokens of all inputs
 * </pre>
 * Endpoint labels are the server's fixed paths (anything else is "other"), so label sets stay
 * bounded. No client library: a few counters and fixed-bucket histograms.
 */
final class ServerMetrics {
    static final double[] SECONDS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    static final double[] SIZES = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};

    /** Cumulative-on-write histogram over fixed upper bounds (the last bucket is +Inf). */
    static final class Histogram {
        final double[] bounds;
        final AtomicLongArray counts; // per bucket, not cumulative; [bounds.length] is +Inf
        final DoubleAdder sum = new DoubleAdder();

        Histogram(double[] bounds) {
            this.bounds = bounds;
            this.counts = new AtomicLongArray(bounds.length + 1);
        }

        void observe(double v) {
            int b = 0;
            while (b < bounds.length && v > bounds[b]) b++;
            counts.incrementAndGet(b);
            sum.add(v);
        }
    }

    private final Map<String, LongAdder> requests = new ConcurrentHashMap<>();      // "endpoint\0status"
    private final Map<String, Histogram> latency = new ConcurrentHashMap<>();       // endpoint
    private final Map<String, LongAdder> expertInputs = new ConcurrentHashMap<>();  // expert
    final Histogram batchInputs = new Histogram(SIZES);
    final Histogram batchRequests = new Histogram(SIZES);
    final Histogram batchSeconds = new Histogram(SECONDS);
    final LongAdder tokens = new LongAdder();
    void request(String endpoint, int status, double seconds) {
        requests.computeIfAbsent(endpoint + '\0' + status, k -> new LongAdder()).increment();
        latency.computeIfAbsent(endpoint, k -> new Histogram(SECONDS)).observe(seconds);
    }

    void expert(String name, int inputs) {
        expertInputs.computeIfAbsent(name, k -> new LongAdder()).add(inputs);
    }

    /** Requests served so far for one endpoint and status (tests). */
    long requests(String endpoint, int status) {
        LongAdder a = requests.get(endpoint + '\0' + status);
        return a == null ? 0 : a.sum();
    }

    /** The exposition text; {@code queueDepth} is the batcher's queue now. */
    String render(int queueDepth) {
        StringBuilder b = new StringBuilder(4096);
        header(b, "rr_http_requests_total", "counter", "HTTP requests by endpoint and status.");
        for (Map.Entry<String, LongAdder> e : new TreeMap<>(requests).entrySet()) {
            String[] k = e.getKey().split("\0");
            b.append("rr_http_requests_total{endpoint=\"").append(k[0]).append("\",status=\"").append(k[1]).append("\"} ")
                    .append(e.getValue().sum()).append('\n');
        }
        header(b, "rr_http_request_duration_seconds", "histogram", "Time from request arrival to the response, by endpoint.");
        for (Map.Entry<String, Histogram> e : new TreeMap<>(latency).entrySet())
            histogram(b, "rr_http_request_duration_seconds", "endpoint=\"" + e.getKey() + "\"", e.getValue());
        header(b, "rr_batch_inputs", "histogram", "Inputs per merged batch (one encoder run).");
        histogram(b, "rr_batch_inputs", null, batchInputs);
        header(b, "rr_batch_requests", "histogram", "Requests merged into one batch.");
        histogram(b, "rr_batch_requests", null, batchRequests);
        header(b, "rr_batch_duration_seconds", "histogram", "Encoder (and search) time per merged batch.");
        histogram(b, "rr_batch_duration_seconds", null, batchSeconds);
        header(b, "rr_queue_depth", "gauge", "Requests waiting for the batcher.");
        b.append("rr_queue_depth ").append(queueDepth).append('\n');
        header(b, "rr_expert_inputs_total", "counter", "Inputs encoded or routed, by the expert used (base: no LoRA).");
        for (Map.Entry<String, LongAdder> e : new TreeMap<>(expertInputs).entrySet())
            b.append("rr_expert_inputs_total{expert=\"").append(e.getKey()).append("\"} ").append(e.getValue().sum()).append('\n');
        header(b, "rr_tokens_total", "counter", "Tokens of all inputs, special tokens included.");
        b.append("rr_tokens_total ").append(tokens.sum()).append('\n');
        return b.toString();
    }

    private static void header(StringBuilder b, String name, String type, String help) {
        b.append("# HELP ").append(name).append(' ').append(help).append('\n');
        b.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }

    private static void histogram(StringBuilder b, String name, String labels, Histogram h) {
        String pre = labels == null ? "" : labels + ",";
        long cumulative = 0;
        for (int i = 0; i <= h.bounds.length; i++) {
            cumulative += h.counts.get(i);
            String le = i < h.bounds.length ? Double.toString(h.bounds[i]) : "+Inf";
            b.append(name).append("_bucket{").append(pre).append("le=\"").append(le).append("\"} ").append(cumulative).append('\n');
        }
        String l = labels == null ? "" : "{" + labels + "}";
        b.append(name).append("_sum").append(l).append(' ').append(h.sum.sum()).append('\n');
        b.append(name).append("_count").append(l).append(' ').append(cumulative).append('\n');
    }
}
