package rrj.bench;

import rrj.model.BertConfig;
import rrj.model.Json;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Turns a JMH JSON result file ({@code -rf json -rff FILE}) into the markdown tables of
 * bench/README.md: time per op, GFLOP/s (or GB/s) from the shape tables of {@link Shapes}, and
 * GEMM efficiency as % of the FMA peak ({@link FmaPeak}) measured in the same run.
 *
 * <p>{@code java -cp bench/target/benchmarks.jar rrj.bench.JmhReport results.json}
 */
public final class JmhReport {
    private JmhReport() {}

    record Row(String benchmark, Map<String, Object> params, double score, double error, String unit) {
        String p(String name) { return params == null ? null : String.valueOf(params.get(name)); }
        int i(String name) { return Integer.parseInt(p(name)); }
        /** The score as microseconds per op (AverageTime benchmarks). */
        double us() {
            return switch (unit) {
                case "us/op" -> score;
                case "ms/op" -> score * 1e3;
                case "ns/op" -> score / 1e3;
                case "s/op" -> score * 1e6;
                default -> Double.NaN;
            };
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: JmhReport RESULTS.json");
            System.exit(2);
        }
        List<Row> rows = read(Path.of(args[0]));
        double peak2 = Double.NaN, peak1 = Double.NaN;
        for (Row r : rows) {
            if (r.benchmark().endsWith("FmaPeak.peak2")) peak2 = r.score();
            if (r.benchmark().endsWith("FmaPeak.peak1")) peak1 = r.score();
        }
        System.out.printf(Locale.ROOT, "FMA peak (Vector API, 12 chains): %.1f GFLOP/s with 2 threads, %.1f with 1%n%n", peak2, peak1);

        table(rows, "KernelBench.Gemm.linear", "GEMM y = x·Wᵀ + b",
                "| shape | rows | backend | threads | µs/op | GFLOP/s | % of FMA peak |", peak1, peak2,
                r -> {
                    Shapes.Linear s = Shapes.LINEAR.get(r.p("shape"));
                    return new Object[]{r.p("shape") + " (" + s.in() + "→" + s.out() + ")", r.p("rows"), r.p("backend"), r.p("threads"),
                            Shapes.linearFlops(r.i("rows"), s.in(), s.out())};
                });
        table(rows, "ReferenceBench.Gemm.linear", "GEMM, ReferenceBackend (oracle)",
                "| shape | rows | backend | threads | µs/op | GFLOP/s | % of FMA peak |", peak1, peak2,
                r -> {
                    Shapes.Linear s = Shapes.LINEAR.get(r.p("shape"));
                    return new Object[]{r.p("shape") + " (" + s.in() + "→" + s.out() + ")", r.p("rows"), r.p("backend"), "1",
                            Shapes.linearFlops(r.i("rows"), s.in(), s.out())};
                });
        table(rows, "KernelBench.Gelu.", "FFN up with and without the fused GELU (512 rows)",
                "| shape | method | backend | threads | µs/op | GFLOP/s | % of FMA peak |", peak1, peak2,
                r -> {
                    Shapes.Linear s = Shapes.LINEAR.get(r.p("shape"));
                    String m = r.benchmark().substring(r.benchmark().lastIndexOf('.') + 1);
                    return new Object[]{r.p("shape"), m, "cpu", r.p("threads"), Shapes.linearFlops(r.i("rows"), s.in(), s.out())};
                });
        for (String b : new String[]{"KernelBench.Attention.attention", "ReferenceBench.Attention.attention"})
            table(rows, b, "Attention, 12 heads, B = 1024 / T sequences" + (b.startsWith("Ref") ? ", ReferenceBackend" : ""),
                    "| T | D | backend | threads | µs/op | GFLOP/s | % of FMA peak |", peak1, peak2,
                    r -> {
                        int t = r.i("seqLen"), d = r.i("headDim");
                        return new Object[]{r.p("seqLen"), r.p("headDim"), r.p("backend"), r.params().containsKey("threads") ? r.p("threads") : "1",
                                Shapes.attentionBatch(t) * Shapes.attentionFlops(t, 12 * d)};
                    });
        for (String b : new String[]{"ModelBench.forward", "ReferenceBench.Model.forward"})
            table(rows, b, "Bert.forward (random weights; layers 0 = the whole encoder)" + (b.startsWith("Ref") ? ", ReferenceBackend" : ""),
                    "| model | layers | batch | backend | threads | µs/op | GFLOP/s | % of FMA peak |", peak1, peak2,
                    r -> {
                        BertConfig c = Shapes.config(r.p("model"));
                        if (r.i("layers") > 0) c = Shapes.withLayers(c, r.i("layers"));
                        String[] bt = r.p("batchShape").split("x");
                        double f = Integer.parseInt(bt[0]) * Shapes.forwardFlops(c, Integer.parseInt(bt[1]));
                        return new Object[]{r.p("model"), r.i("layers") == 0 ? c.numLayers() + " (all)" : r.p("layers"), r.p("batchShape"),
                                r.p("backend"), r.params().containsKey("threads") ? r.p("threads") : "1", f};
                    });
        // add + LayerNorm: memory-bound, GB/s
        List<Row> ln = rows.stream().filter(r -> r.benchmark().endsWith("KernelBench.AddLayerNorm.addLayerNorm")).toList();
        if (!ln.isEmpty()) {
            System.out.println("### add + LayerNorm (x + residual → LayerNorm: 3 fp32 matrices moved)\n");
            System.out.println("| rows | C | threads | µs/op | GB/s |");
            System.out.println("|---|---|---|---|---|");
            for (Row r : ln)
                System.out.printf(Locale.ROOT, "| %s | %s | %s | %.1f | %.1f |%n", r.p("rows"), r.p("hidden"), r.p("threads"), r.us(),
                        Shapes.addLayerNormBytes(r.i("rows"), r.i("hidden")) / (r.us() * 1e3));
            System.out.println();
        }
        // anything else (e.g. LoraOverheadBench): time only
        List<Row> other = rows.stream().filter(r -> !r.benchmark().contains("KernelBench") && !r.benchmark().contains("ModelBench")
                && !r.benchmark().contains("ReferenceBench") && !r.benchmark().contains("FmaPeak")).toList();
        if (!other.isEmpty()) {
            System.out.println("### other benchmarks\n");
            System.out.println("| benchmark | params | score | unit |");
            System.out.println("|---|---|---|---|");
            for (Row r : other)
                System.out.printf(Locale.ROOT, "| %s | %s | %.3f ± %.3f | %s |%n", shortName(r.benchmark()), r.params(), r.score(), r.error(), r.unit());
            System.out.println();
        }
    }

    interface Describe { Object[] cells(Row r); } // the leading cells, the last one being the FLOPs per op

    static void table(List<Row> rows, String suffix, String title, String header, double peak1, double peak2, Describe d) {
        List<Row> sel = rows.stream().filter(r -> r.benchmark().contains(suffix)).toList();
        if (sel.isEmpty()) return;
        System.out.println("### " + title + "\n");
        System.out.println(header);
        System.out.println("|" + "---|".repeat((int) header.chars().filter(ch -> ch == '|').count() - 1));
        for (Row r : sel) {
            Object[] c = d.cells(r);
            double flops = (Double) c[c.length - 1];
            double gflops = flops / (r.us() * 1e3);
            String threads = String.valueOf(c[c.length - 2]);
            double peak = "1".equals(threads) ? peak1 : peak2;
            StringBuilder b = new StringBuilder("|");
            for (int i = 0; i < c.length - 1; i++) b.append(' ').append(c[i]).append(" |");
            b.append(String.format(Locale.ROOT, " %.1f | %.1f | %s |", r.us(), gflops,
                    Double.isNaN(peak) || !"2".equals(threads) && !"1".equals(threads) ? "–" : String.format(Locale.ROOT, "%.0f%%", 100 * gflops / peak)));
            System.out.println(b);
        }
        System.out.println();
    }

    static String shortName(String benchmark) {
        int i = benchmark.indexOf("rrj.bench.");
        return i >= 0 ? benchmark.substring(i + "rrj.bench.".length()) : benchmark;
    }

    @SuppressWarnings("unchecked")
    static List<Row> read(Path file) throws Exception {
        Object parsed = Json.parse(Files.readString(file));
        if (!(parsed instanceof List<?> list)) throw new IllegalArgumentException(file + ": not a JMH JSON result array");
        List<Row> rows = new ArrayList<>();
        for (Object o : list) {
            Map<String, Object> m = (Map<String, Object>) o;
            Map<String, Object> pm = (Map<String, Object>) m.get("primaryMetric");
            Map<String, Object> params = (Map<String, Object>) m.get("params");
            rows.add(new Row((String) m.get("benchmark"), params == null ? Map.of() : params, num(pm.get("score")), num(pm.get("scoreError")),
                    (String) pm.get("scoreUnit")));
        }
        return rows;
    }

    static double num(Object o) {
        if (o instanceof Number n) return n.doubleValue();
        try { return Double.parseDouble(String.valueOf(o)); } catch (NumberFormatException e) { return Double.NaN; }
    }
}
