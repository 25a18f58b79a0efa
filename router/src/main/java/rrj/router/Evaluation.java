package rrj.router;

import rrj.engine.Backend;
import rrj.model.Encoder;
import rrj.model.Json;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The evaluation driver: datasets × methods → BEIR metrics, as the paper's tables compare them
 * (DESIGN §2 "Baselines", §3). Methods: {@code base}, each expert alone (by name),
 * {@code router}, {@code router-nearest}, {@code dataset-router}, {@code dataset-oracle},
 * {@code instance-oracle}. Oracles pick by nDCG@10 and report the picked runs' metrics.
 *
 * <p>Queries are embedded through a {@link QueryEncoder}, one mixed-expert batch per call, so
 * that any implementation (base only, LoRA experts, a remote server) can be evaluated the same
 * way; documents come from a {@link CorpusIndex} built by the base encoder.
 *
 * <p>Results are {@code method → dataset → metric label → value in [0, 1]}, in insertion order;
 * writers for JSON, an SVG bar chart and the paper's ×100 text table are here too.
 * Not here: the multi-task baseline (it is just another expert), training.
 */
public final class Evaluation {
    private Evaluation() {}

    /** Embeds queries, each with its own expert; a null entry means the base encoder. */
    public interface QueryEncoder {
        /** Expert names in configured order (empty for a base-only encoder). */
        List<String> experts();

        /** Further experts that are not routing options but can be evaluated alone (a multi-task baseline). */
        default List<String> others() { return List.of(); }

        /** One embedding per query; {@code expertPerQuery[i]} names query i's expert or is null (base). */
        float[][] encode(List<String> queries, String[] expertPerQuery);
    }

    /** The base encoder alone: no experts; asking for one is an error. */
    public static final class BaseQueryEncoder implements QueryEncoder {
        private final Encoder encoder;

        public BaseQueryEncoder(Encoder encoder) { this.encoder = encoder; }

        @Override public List<String> experts() { return List.of(); }

        @Override
        public float[][] encode(List<String> queries, String[] expertPerQuery) {
            if (expertPerQuery != null) {
                if (expertPerQuery.length != queries.size())
                    throw new IllegalArgumentException(expertPerQuery.length + " expert entries for " + queries.size() + " queries");
                for (int i = 0; i < expertPerQuery.length; i++)
                    if (expertPerQuery[i] != null)
                        throw new IllegalArgumentException("query " + i + " asks for expert '" + expertPerQuery[i] + "' but this encoder has no experts");
            }
            return encoder.embed(queries);
        }
    }

    /** A split to evaluate on: queries with qrels and the index of its corpus. {@code excludeSelf}: drop doc id == query id. */
    public record TestSet(String name, Beir.Queries queries, CorpusIndex index, boolean excludeSelf) {}

    public static final String BASE = "base", ROUTER = "router", ROUTER_NEAREST = "router-nearest",
            DATASET_ROUTER = "dataset-router", DATASET_ORACLE = "dataset-oracle", INSTANCE_ORACLE = "instance-oracle";

    /**
     * @param metrics       figures to report (nDCG@10 is always computed for the oracles)
     * @param methods       methods to run, or null for every one the inputs allow
     * @param k             results kept per query (≥ the largest cutoff; BEIR keeps ≥ 100)
     * @param cosine        cosine instead of dot product
     * @param pilots        routing table for router / router-nearest (null: not run)
     * @param datasetRouter for dataset-router (null: not run)
     * @param log           progress and routing histograms (null: quiet)
     */
    public record Options(List<Metrics.Metric> metrics, List<String> methods, int k, boolean cosine,
                          Routing.PilotTable pilots, Routing.DatasetRouter datasetRouter, PrintStream log) {
        public Options {
            if (metrics.isEmpty()) throw new IllegalArgumentException("no metrics asked for");
            for (Metrics.Metric m : metrics)
                if (m.k() > k) throw new IllegalArgumentException(m.label() + " needs k ≥ " + m.k() + " results per query, k is " + k);
        }

        /** nDCG@10 of every available method, k = 100, dot product. */
        public static Options defaults() {
            return new Options(List.of(Metrics.Metric.NDCG_10), null, Search.DEFAULT_K, false, null, null, null);
        }
    }

    /** Runs every asked method on every test set. */
    public static Map<String, Map<String, Map<String, Double>>> run(QueryEncoder enc, Backend backend, List<TestSet> sets, Options o) {
        List<String> experts = enc.experts();
        List<String> methods = methods(experts, enc.others(), o);
        if (o.pilots() != null && !o.pilots().experts.equals(experts))
            throw new IllegalArgumentException("pilot table experts " + o.pilots().experts + " differ from the encoder's " + experts);
        if (o.datasetRouter() != null && !o.datasetRouter().experts.equals(experts))
            throw new IllegalArgumentException("dataset router experts " + o.datasetRouter().experts + " differ from the encoder's " + experts);
        List<Metrics.Metric> computed = new ArrayList<>(o.metrics());
        if (!computed.contains(Metrics.Metric.NDCG_10)) computed.add(Metrics.Metric.NDCG_10);
        int ndcgAt = computed.indexOf(Metrics.Metric.NDCG_10);

        Map<String, Map<String, Map<String, Double>>> out = new LinkedHashMap<>();
        for (String m : methods) out.put(m, new LinkedHashMap<>());
        Search search = new Search(backend);
        for (TestSet ts : sets) {
            Beir.Queries qs = ts.queries();
            List<String> texts = Arrays.asList(qs.texts());
            String[] none = new String[qs.size()];
            long t0 = System.nanoTime();
            float[][] base = enc.encode(texts, none);
            // per-query values [metric][query] of each run, kept for the oracles
            double[][] baseVals = evaluate(search, ts, base, computed, o);
            put(out, BASE, ts.name(), computed, baseVals, o.metrics());
            double[][][] expertVals = new double[experts.size()][][];
            boolean needExperts = methods.contains(DATASET_ORACLE) || methods.contains(INSTANCE_ORACLE);
            for (int g = 0; g < experts.size(); g++) {
                if (!needExperts && !methods.contains(experts.get(g))) continue;
                String[] all = new String[qs.size()];
                Arrays.fill(all, experts.get(g));
                expertVals[g] = evaluate(search, ts, enc.encode(texts, all), computed, o);
                put(out, experts.get(g), ts.name(), computed, expertVals[g], o.metrics());
            }
            for (String other : enc.others()) {
                if (!methods.contains(other)) continue;
                String[] all = new String[qs.size()];
                Arrays.fill(all, other);
                put(out, other, ts.name(), computed, evaluate(search, ts, enc.encode(texts, all), computed, o), o.metrics());
            }
            for (String m : List.of(ROUTER, ROUTER_NEAREST, DATASET_ROUTER)) {
                if (!methods.contains(m)) continue;
                String[] choice = new String[qs.size()];
                int[] histogram = new int[experts.size()];
                for (int q = 0; q < qs.size(); q++) {
                    Routing.Decision d = switch (m) {
                        case ROUTER -> Routing.route(o.pilots(), base[q]);
                        case ROUTER_NEAREST -> Routing.routeNearest(o.pilots(), base[q]);
                        default -> o.datasetRouter().route(base[q]);
                    };
                    if (d.expert() < 0) throw new IllegalStateException(m + ": no expert has a pilot; build the pilot table first");
                    choice[q] = experts.get(d.expert());
                    histogram[d.expert()]++;
                }
                log(o, m + " on " + ts.name() + ": " + histogram(experts, histogram));
                put(out, m, ts.name(), computed, evaluate(search, ts, enc.encode(texts, choice), computed, o), o.metrics());
            }
            if (methods.contains(DATASET_ORACLE) || methods.contains(INSTANCE_ORACLE)) {
                double[][] byQuery = new double[qs.size()][experts.size()]; // nDCG@10 [query][expert]
                for (int g = 0; g < experts.size(); g++)
                    for (int q = 0; q < qs.size(); q++) byQuery[q][g] = expertVals[g][ndcgAt][q];
                if (methods.contains(DATASET_ORACLE)) {
                    int g = Routing.datasetOracle(byQuery);
                    log(o, DATASET_ORACLE + " on " + ts.name() + ": " + experts.get(g));
                    put(out, DATASET_ORACLE, ts.name(), computed, expertVals[g], o.metrics());
                }
                if (methods.contains(INSTANCE_ORACLE)) {
                    int[] best = Routing.instanceOracle(byQuery);
                    double[][] vals = new double[computed.size()][qs.size()];
                    int[] histogram = new int[experts.size()];
                    for (int q = 0; q < qs.size(); q++) {
                        histogram[best[q]]++;
                        for (int mi = 0; mi < computed.size(); mi++) vals[mi][q] = expertVals[best[q]][mi][q];
                    }
                    log(o, INSTANCE_ORACLE + " on " + ts.name() + ": " + histogram(experts, histogram));
                    put(out, INSTANCE_ORACLE, ts.name(), computed, vals, o.metrics());
                }
            }
            log(o, String.format(Locale.ROOT, "%s: %d queries, %d documents, %.1f s", ts.name(), qs.size(), ts.index().size(),
                    (System.nanoTime() - t0) / 1e9));
        }
        return out;
    }

    /** What pilot building produced: the table and the base embeddings of every training query (for the dataset router). */
    public record PilotBuild(Routing.PilotTable table, Map<String, float[][]> baseEmbeddings) {}

    /**
     * Builds the pilot table (DESIGN §2): for each training split, every query's nDCG@10 under
     * every expert against that split's base-encoded corpus, g*(q) by argmax (ties: first), and
     * the mean base embedding per (dataset, g*) group.
     */
    public static PilotBuild buildPilots(QueryEncoder enc, Backend backend, List<TestSet> train, boolean cosine, PrintStream log) {
        List<String> experts = enc.experts();
        if (experts.isEmpty()) throw new IllegalArgumentException("pilot building needs an encoder with experts");
        Routing.PilotTable table = new Routing.PilotTable(experts);
        Map<String, float[][]> bases = new LinkedHashMap<>();
        Search search = new Search(backend);
        List<Metrics.Metric> ndcg = List.of(Metrics.Metric.NDCG_10);
        Options o = new Options(ndcg, null, Search.DEFAULT_K, cosine, null, null, log);
        for (TestSet ts : train) {
            Beir.Queries qs = ts.queries();
            List<String> texts = Arrays.asList(qs.texts());
            float[][] base = enc.encode(texts, new String[qs.size()]);
            double[][] scores = new double[qs.size()][experts.size()];
            for (int g = 0; g < experts.size(); g++) {
                String[] all = new String[qs.size()];
                Arrays.fill(all, experts.get(g));
                double[] v = evaluate(search, ts, enc.encode(texts, all), ndcg, o)[0];
                for (int q = 0; q < qs.size(); q++) scores[q][g] = v[q];
            }
            int[] best = Routing.addPilots(table, ts.name(), base, scores);
            int[] histogram = new int[experts.size()];
            for (int b : best) histogram[b]++;
            log(o, "pilots from " + ts.name() + " (" + qs.size() + " queries): " + histogram(experts, histogram));
            bases.put(ts.name(), base);
        }
        return new PilotBuild(table, bases);
    }

    /** Searches and scores one run: values[metric][query]. */
    static double[][] evaluate(Search search, TestSet ts, float[][] queries, List<Metrics.Metric> metrics, Options o) {
        Beir.Queries qs = ts.queries();
        Search.Hits[] hits = search.topK(ts.index(), queries, o.k(), o.cosine(), ts.excludeSelf() ? qs.ids() : null);
        double[][] v = new double[metrics.size()][qs.size()];
        for (int q = 0; q < qs.size(); q++)
            for (int m = 0; m < metrics.size(); m++)
                v[m][q] = Metrics.score(metrics.get(m), hits[q].ids(), hits[q].scores(), qs.qrels().get(q));
        return v;
    }

    private static void put(Map<String, Map<String, Map<String, Double>>> out, String method, String dataset,
                            List<Metrics.Metric> computed, double[][] vals, List<Metrics.Metric> reported) {
        Map<String, Map<String, Double>> byDataset = out.get(method);
        if (byDataset == null) return; // computed for an oracle, not asked for itself
        Map<String, Double> m = new LinkedHashMap<>();
        for (Metrics.Metric r : reported) {
            double[] v = vals[computed.indexOf(r)];
            double s = 0;
            for (double x : v) s += x;
            m.put(r.key(), s / v.length);
        }
        byDataset.put(dataset, m);
    }

    /** The methods to run, in the paper's table order; asking for an unavailable one is an error. */
    static List<String> methods(List<String> experts, List<String> others, Options o) {
        List<String> named = new ArrayList<>(experts);
        named.addAll(others);
        for (String e : named) // "base" may be an expert option: the base encoder, the same run as the method
            if (List.of(ROUTER, ROUTER_NEAREST, DATASET_ROUTER, DATASET_ORACLE, INSTANCE_ORACLE).contains(e))
                throw new IllegalArgumentException("expert name '" + e + "' is reserved for a method; rename the expert");
        List<String> available = new ArrayList<>();
        available.add(BASE);
        for (String e : named) if (!e.equals(BASE)) available.add(e);
        if (o.pilots() != null) { available.add(ROUTER); available.add(ROUTER_NEAREST); }
        if (o.datasetRouter() != null) available.add(DATASET_ROUTER);
        if (!experts.isEmpty()) { available.add(DATASET_ORACLE); available.add(INSTANCE_ORACLE); }
        if (o.methods() == null) return available;
        for (String m : o.methods()) {
            if (available.contains(m)) continue;
            String why = switch (m) {
                case ROUTER, ROUTER_NEAREST -> "needs a pilot table";
                case DATASET_ROUTER -> "needs a dataset router (training queries and a dataset→expert mapping)";
                case DATASET_ORACLE, INSTANCE_ORACLE -> "needs experts";
                default -> "is neither a method nor an expert";
            };
            throw new IllegalArgumentException("method '" + m + "' " + why + " (available: " + String.join(", ", available) + ")");
        }
        return new ArrayList<>(new LinkedHashSet<>(o.methods()));
    }

    private static String histogram(List<String> experts, int[] counts) {
        StringBuilder b = new StringBuilder();
        for (int g = 0; g < counts.length; g++) b.append(g == 0 ? "" : ", ").append(experts.get(g)).append(' ').append(counts[g]);
        return b.toString();
    }

    private static void log(Options o, String line) {
        if (o.log() != null) o.log().println(line);
    }

    // ------------------------------------------------------------------ output

    /** The results as pretty JSON, written atomically. */
    public static void writeJson(Map<String, Map<String, Map<String, Double>>> results, Path file) throws IOException {
        writeAtomically(file, Json.writePretty(results));
    }

    /** The paper's table: rows = methods, columns = datasets + Avg, values ×100 with one decimal. */
    public static String table(Map<String, Map<String, Map<String, Double>>> results, Metrics.Metric metric) {
        List<String> datasets = datasets(results);
        int w0 = metric.label().length();
        for (String m : results.keySet()) w0 = Math.max(w0, m.length());
        int[] w = new int[datasets.size() + 1];
        for (int i = 0; i < datasets.size(); i++) w[i] = Math.max(5, datasets.get(i).length());
        w[datasets.size()] = 5;
        StringBuilder b = new StringBuilder();
        b.append(pad(metric.label(), w0, false));
        for (int i = 0; i < datasets.size(); i++) b.append("  ").append(pad(datasets.get(i), w[i], true));
        b.append("  ").append(pad("Avg", w[datasets.size()], true)).append('\n');
        for (Map.Entry<String, Map<String, Map<String, Double>>> e : results.entrySet()) {
            b.append(pad(e.getKey(), w0, false));
            double sum = 0;
            int n = 0;
            for (int i = 0; i < datasets.size(); i++) {
                Double v = value(e.getValue(), datasets.get(i), metric);
                if (v != null) { sum += v; n++; }
                b.append("  ").append(pad(v == null ? "-" : fmt(v), w[i], true));
            }
            b.append("  ").append(pad(n == datasets.size() && n > 0 ? fmt(sum / n) : "-", w[datasets.size()], true)).append('\n');
        }
        return b.toString();
    }

    /**
     * A grouped bar chart as hand-written SVG: one group per dataset (plus Avg when there are
     * several), one bar per method, the value ×100 above each bar, a legend on the right.
     */
    public static String svg(Map<String, Map<String, Map<String, Double>>> results, Metrics.Metric metric) {
        List<String> datasets = new ArrayList<>(datasets(results));
        List<String> methods = new ArrayList<>(results.keySet());
        boolean avg = datasets.size() > 1;
        int groups = datasets.size() + (avg ? 1 : 0);
        int bar = 16, gap = 24, left = 50, top = 40, plotH = 260, bottom = 40, legendW = 170;
        int groupW = methods.size() * bar + gap;
        int plotW = Math.max(groups * groupW, 120);
        int width = left + plotW + 20 + legendW, height = top + plotH + bottom;
        String[] palette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
        double max = 0;
        for (String m : methods)
            for (String d : datasets) {
                Double v = value(results.get(m), d, metric);
                if (v != null) max = Math.max(max, v * 100);
            }
        double yMax = Math.max(10, Math.ceil(max / 10) * 10);
        StringBuilder s = new StringBuilder();
        s.append(String.format(Locale.ROOT, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                + "font-family=\"sans-serif\" font-size=\"11\">%n", width, height, width, height));
        s.append(String.format(Locale.ROOT, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>%n", width, height));
        s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"20\" font-size=\"14\">%s ×100</text>%n", left, xml(metric.label())));
        for (int t = 0; t <= yMax; t += 10) { // grid and y labels
            double y = top + plotH - t / yMax * plotH;
            s.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>%n", left, y, left + plotW, y));
            s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d</text>%n", left - 6, y + 4, t));
        }
        for (int gi = 0; gi < groups; gi++) {
            String d = gi < datasets.size() ? datasets.get(gi) : "Avg";
            int x0 = left + gi * groupW + gap / 2;
            for (int mi = 0; mi < methods.size(); mi++) {
                Double v = gi < datasets.size() ? value(results.get(methods.get(mi)), d, metric) : average(results.get(methods.get(mi)), datasets, metric);
                if (v == null) continue;
                double h = v * 100 / yMax * plotH, x = x0 + mi * bar, y = top + plotH - h;
                s.append(String.format(Locale.ROOT, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"><title>%s %s: %s</title></rect>%n",
                        x, y, bar - 2, h, palette[mi % palette.length], xml(methods.get(mi)), xml(d), fmt(v)));
                s.append(String.format(Locale.ROOT, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" font-size=\"9\">%s</text>%n",
                        x + bar / 2.0 + 2, y - 3, fmt(v)));
            }
            s.append(String.format(Locale.ROOT, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>%n",
                    x0 + methods.size() * bar / 2.0, top + plotH + 18, xml(d)));
        }
        s.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>%n", left, top + plotH, left + plotW, top + plotH));
        int lx = left + plotW + 20;
        for (int mi = 0; mi < methods.size(); mi++) {
            int ly = top + mi * 18;
            s.append(String.format(Locale.ROOT, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>%n", lx, ly, palette[mi % palette.length]));
            s.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\">%s</text>%n", lx + 18, ly + 10, xml(methods.get(mi))));
        }
        s.append("</svg>\n");
        return s.toString();
    }

    public static void writeSvg(Map<String, Map<String, Map<String, Double>>> results, Metrics.Metric metric, Path file) throws IOException {
        writeAtomically(file, svg(results, metric));
    }

    private static List<String> datasets(Map<String, Map<String, Map<String, Double>>> results) {
        LinkedHashSet<String> d = new LinkedHashSet<>();
        for (Map<String, Map<String, Double>> m : results.values()) d.addAll(m.keySet());
        return new ArrayList<>(d);
    }

    private static Double value(Map<String, Map<String, Double>> byDataset, String dataset, Metrics.Metric metric) {
        Map<String, Double> m = byDataset == null ? null : byDataset.get(dataset);
        return m == null ? null : m.get(metric.key());
    }

    private static Double average(Map<String, Map<String, Double>> byDataset, List<String> datasets, Metrics.Metric metric) {
        double s = 0;
        for (String d : datasets) {
            Double v = value(byDataset, d, metric);
            if (v == null) return null;
            s += v;
        }
        return s / datasets.size();
    }

    private static String fmt(double v) { return String.format(Locale.ROOT, "%.1f", v * 100); }

    private static String pad(String s, int w, boolean right) {
        if (s.length() >= w) return s;
        String sp = " ".repeat(w - s.length());
        return right ? sp + s : s + sp;
    }

    private static String xml(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }

    private static void writeAtomically(Path file, String text) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = Files.createTempFile(parent, file.getFileName().toString(), ".tmp");
        try {
            Files.writeString(tmp, text, StandardCharsets.UTF_8);
            rrj.model.Safetensors.readableByAll(tmp);
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
