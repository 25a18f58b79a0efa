package rrj.app;

import rrj.engine.Backend;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.router.Beir;
import rrj.router.CorpusIndex;
import rrj.router.Evaluation;
import rrj.router.Metrics;
import rrj.router.Prompts;
import rrj.router.Router;
import rrj.router.Routing;
import rrj.router.Search;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The retrieval commands: {@code rr index}, {@code rr search}, {@code rr pilots build},
 * {@code rr route} and {@code rr eval}. Each opens a {@link Session} (model, experts, pilot
 * table, datasets with their corpus indexes) and runs the router library on it.
 */
final class Retrieval {
    private Retrieval() {}

    /** Flags every retrieval command takes. */
    static final Set<String> COMMON = Set.of("model", "experts", "data", "backend", "threads", "max-length", "index-cache");

    static Set<String> flags(String... more) {
        Set<String> s = new java.util.HashSet<>(COMMON);
        s.addAll(List.of(more));
        return s;
    }

    /**
     * A dataset with its corpus index (built by the base encoder on first use, then reused). The
     * corpus itself is read only when something needs it (building or checking the index, or
     * showing a hit's text), at most once.
     */
    record Dataset(String name, CorpusIndex index, CorpusIndex.CorpusSource source) {
        Beir.Corpus corpus() throws IOException { return source.read(); }
    }

    /** Model, backend, router and the datasets of one command. */
    static final class Session implements AutoCloseable {
        final Backend backend;
        final Encoder encoder;
        final Router router;
        final Prompts prompts;
        final Path expertsDir;
        final List<Path> dataDirs;
        final Path indexRoot;
        private final List<Dataset> open = new ArrayList<>();

        Session(Args a) throws IOException {
            Integer maxLen = a.has("max-length") ? a.getInt("max-length", 0, 2, 1 << 20) : null;
            Path model = Main.modelDir(a);
            expertsDir = Main.expertsDir(a);
            dataDirs = dataDirs(a);
            indexRoot = a.get("index-cache") != null ? Path.of(a.get("index-cache")) : DefaultModel.cacheDir().resolve("index");
            Backend b = Main.backend(a);
            Encoder e = null;
            try {
                e = Encoder.open(model, b, null, null, maxLen);
                prompts = Prompts.of(model);
                router = Router.open(e, expertsDir);
            } catch (IOException | RuntimeException x) {
                if (e != null) e.close();
                b.close();
                throw x;
            }
            backend = b;
            encoder = e;
        }

        /** The corpus and index of a dataset directory (its name: {@link Beir#datasetName}). */
        Dataset dataset(Path dir, PrintStream log) throws IOException {
            Path file = Beir.find(dir.resolve("corpus.jsonl"));
            String prefix = prompts.passage();
            return dataset(dir, file, prefix, () -> Beir.readCorpus(file, prefix), log);
        }

        /** As above with the corpus already read (with the passage prompt). */
        Dataset dataset(Path dir, Beir.Corpus corpus, PrintStream log) throws IOException {
            return dataset(dir, corpus.file(), corpus.passagePrefix(), () -> corpus, log);
        }

        private Dataset dataset(Path dir, Path corpusFile, String prefix, CorpusIndex.CorpusSource source, PrintStream log)
                throws IOException {
            String name = Beir.datasetName(dir);
            CorpusIndex.CorpusSource once = CorpusIndex.CorpusSource.once(source);
            CorpusIndex index = CorpusIndex.obtain(CorpusIndex.cacheDir(indexRoot, name, encoder), encoder, corpusFile, prefix, once, false, log);
            Dataset d = new Dataset(name, index, once);
            open.add(d);
            return d;
        }

        List<Dataset> datasets(PrintStream log) throws IOException {
            List<Dataset> out = new ArrayList<>();
            for (Path d : dataDirs) out.add(dataset(d, log));
            return out;
        }

        @Override
        public void close() {
            for (Dataset d : open) d.index().close();
            encoder.close();
            backend.close();
        }
    }

    /** --data DIR (repeatable), else the datasets the repository bundles (data/scifact, data/arguana). */
    static List<Path> dataDirs(Args a) {
        List<Path> out = new ArrayList<>();
        for (String d : a.all("data")) out.add(Path.of(d));
        if (out.isEmpty()) {
            Path home = Path.of(System.getProperty("rr.home", "."), "data");
            for (String n : List.of("scifact", "arguana")) out.add(home.resolve(n));
        }
        for (Path p : out)
            if (!Files.isDirectory(p)) throw new IllegalArgumentException("--data " + p + ": not a directory (a BEIR dataset: corpus.jsonl, queries.jsonl, qrels/)");
        return out;
    }

    // ------------------------------------------------------------------ rr index

    static int index(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, COMMON, Set.of());
        if (!a.positional.isEmpty()) throw new Args.UsageException("index takes no positional arguments: " + a.positional);
        try (Session s = new Session(a)) {
            for (Path dir : s.dataDirs) {
                long t0 = System.nanoTime();
                Dataset d = s.dataset(dir, System.err);
                out.printf(Locale.ROOT, "%s: %d documents × %d dims, %s (%.1f s)%n", d.name(), d.index().size(), d.index().dimension(),
                        CorpusIndex.cacheDir(s.indexRoot, d.name(), s.encoder), (System.nanoTime() - t0) / 1e9);
            }
        }
        return 0;
    }

    // ------------------------------------------------------------------ rr route

    static int route(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, COMMON, Set.of("json"));
        if (a.positional.isEmpty()) throw new Args.UsageException("route needs at least one QUERY");
        try (Session s = new Session(a)) {
            List<String> qs = prefixed(s, a.positional);
            Router.Decision[] d = s.router.route(qs);
            for (int i = 0; i < d.length; i++) {
                if (a.has("json")) out.println(Json.write(routeJson(a.positional.get(i), d[i])));
                else out.println(a.positional.get(i) + "\n  expert: " + d[i].expert() + "  (" + scores(d[i]) + ")");
            }
        }
        return 0;
    }

    static Map<String, Object> routeJson(String query, Router.Decision d) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("query", query);
        o.put("expert", d.expert());
        Map<String, Object> sc = new LinkedHashMap<>();
        for (int g = 0; g < d.options().size(); g++) sc.put(d.options().get(g), Double.isNaN(d.scores()[g]) ? null : d.scores()[g]);
        o.put("scores", sc);
        return o;
    }

    static String scores(Router.Decision d) {
        StringBuilder b = new StringBuilder("routing scores: ");
        for (int g = 0; g < d.options().size(); g++)
            b.append(g == 0 ? "" : ", ").append(d.options().get(g)).append(' ')
                    .append(Double.isNaN(d.scores()[g]) ? "-" : String.format(Locale.ROOT, "%.4f", d.scores()[g]));
        return b.toString();
    }

    private static List<String> prefixed(Session s, List<String> queries) {
        List<String> out = new ArrayList<>();
        for (String q : queries) out.add(s.prompts.query() + q);
        return out;
    }

    // ------------------------------------------------------------------ rr search

    static int search(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, flags("k", "expert"), Set.of("json"));
        if (a.positional.isEmpty()) throw new Args.UsageException("search needs at least one QUERY");
        int k = a.getInt("k", 10, 1, 10_000);
        try (Session s = new Session(a)) {
            String expert = a.get("expert");
            if (expert == null) expert = s.router.pilots() != null ? "auto" : Router.BASE;
            if (expert.equals("auto") && s.router.pilots() == null)
                throw new IllegalArgumentException("--expert auto needs a pilot table: " + s.expertsDir.resolve(Router.PILOTS)
                        + " is missing (build it with 'rr pilots build')");
            List<Dataset> ds = s.datasets(System.err);
            List<CorpusIndex.Labels> labels = new ArrayList<>();
            for (Dataset d : ds) labels.add(d.index().labels(d::corpus));
            List<String> qs = prefixed(s, a.positional);
            Router.Decision[] decisions = null;
            float[][] q;
            if (expert.equals("auto")) {
                Router.Routed r = s.router.embedRouted(qs);
                decisions = r.decisions();
                q = r.embeddings();
            } else {
                String[] all = new String[qs.size()];
                Arrays.fill(all, expert);
                q = s.router.encode(qs, all);
            }
            Search search = new Search(s.backend);
            List<Search.Hits[]> per = new ArrayList<>();
            for (Dataset d : ds) per.add(search.topK(d.index(), q, k, false, null));
            for (int i = 0; i < qs.size(); i++) {
                // merge the datasets' top k by score (one embedding space: the base encoder's)
                List<Object[]> hits = new ArrayList<>();
                for (int di = 0; di < ds.size(); di++) {
                    Search.Hits h = per.get(di)[i];
                    for (int j = 0; j < h.size(); j++) hits.add(new Object[]{h.scores()[j], di, h.docs()[j]});
                }
                hits.sort((x, y) -> Float.compare((float) y[0], (float) x[0]));
                if (hits.size() > k) hits = hits.subList(0, k);
                String chosen = decisions == null ? expert : decisions[i].expert();
                if (a.has("json")) {
                    Map<String, Object> o = new LinkedHashMap<>();
                    o.put("query", a.positional.get(i));
                    o.put("expert", chosen);
                    if (decisions != null) o.put("scores", routeJson(a.positional.get(i), decisions[i]).get("scores"));
                    List<Object> hl = new ArrayList<>();
                    for (Object[] h : hits) {
                        Dataset d = ds.get((int) h[1]);
                        int row = (int) h[2];
                        Map<String, Object> m = new LinkedHashMap<>();
                        m.put("dataset", d.name());
                        m.put("id", d.index().docIds[row]);
                        m.put("title", labels.get((int) h[1]).title(row));
                        m.put("score", (double) (float) h[0]);
                        hl.add(m);
                    }
                    o.put("hits", hl);
                    out.println(Json.write(o));
                    continue;
                }
                out.println("query: " + a.positional.get(i));
                out.println("expert: " + chosen + (decisions == null ? "" : "  (" + scores(decisions[i]) + ")"));
                for (int j = 0; j < hits.size(); j++) {
                    Object[] h = hits.get(j);
                    Dataset d = ds.get((int) h[1]);
                    int row = (int) h[2];
                    String title = labels.get((int) h[1]).label(row);
                    out.printf(Locale.ROOT, "%3d. %8.4f  %s/%s  %s%n", j + 1, (float) h[0], d.name(), d.index().docIds[row], clip(title, 90));
                }
                if (i + 1 < qs.size()) out.println();
            }
        }
        return 0;
    }

    private static String clip(String s, int n) {
        s = s.replaceAll("\\s+", " ").strip();
        return s.length() <= n ? s : s.substring(0, n - 1) + "…";
    }

    // ------------------------------------------------------------------ rr pilots build

    static int pilots(String[] argv, PrintStream out) throws IOException {
        if (argv.length < 2 || !argv[1].equals("build")) throw new Args.UsageException("pilots needs 'build'");
        Args a = Args.parse(argv, 2, flags("max-queries", "seed", "out"), Set.of());
        if (!a.positional.isEmpty()) throw new Args.UsageException("pilots build takes no positional arguments: " + a.positional);
        int max = a.getInt("max-queries", 1000, 0, Integer.MAX_VALUE);
        try (Session s = new Session(a)) {
            if (s.router.experts().isEmpty()) throw new IllegalArgumentException(s.expertsDir + ": no experts to build pilots for");
            List<Evaluation.TestSet> train = trainSets(s, max, a.getInt("seed", 42, 0, Integer.MAX_VALUE));
            Evaluation.PilotBuild pb = Evaluation.buildPilots(s.router, s.backend, train, false, System.err);
            Path file = a.get("out") != null ? Path.of(a.get("out")) : s.expertsDir.resolve(Router.PILOTS);
            pb.table().save(file);
            out.println("pilot table: " + pb.table().count() + " pilots for " + s.router.experts() + " → " + file);
            for (int g = 0; g < pb.table().experts.size(); g++)
                for (Routing.Pilot p : pb.table().pilots(g))
                    out.printf("  %-12s from %-12s %5d queries%n", pb.table().experts.get(g), p.dataset(), p.queries());
        }
        return 0;
    }

    /** Each data directory's training queries (sampled to {@code max}) against its corpus index. */
    static List<Evaluation.TestSet> trainSets(Session s, int max, long seed) throws IOException {
        List<Evaluation.TestSet> train = new ArrayList<>();
        for (Path dir : s.dataDirs) {
            Dataset d = s.dataset(dir, System.err);
            Beir.Queries q = Beir.trainingQueries(dir, s.prompts.query(), max, seed, System.err);
            train.add(new Evaluation.TestSet(d.name(), q, d.index(), true));
        }
        return train;
    }

    // ------------------------------------------------------------------ rr eval

    static int eval(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, flags("methods", "json", "plot", "split", "k", "max-queries", "seed"), Set.of("recall", "cosine"));
        if (!a.positional.isEmpty()) throw new Args.UsageException("eval takes no positional arguments: " + a.positional);
        List<String> methods = a.get("methods") == null ? null : List.of(a.get("methods").split(","));
        List<Metrics.Metric> metrics = new ArrayList<>(List.of(Metrics.Metric.NDCG_10));
        if (a.has("recall")) metrics.add(new Metrics.Metric(Metrics.Measure.RECALL, 100));
        int k = a.getInt("k", Search.DEFAULT_K, 100, 100_000);
        String split = a.get("split") == null ? "test" : a.get("split");
        try (Session s = new Session(a)) {
            boolean wantDatasetRouter = methods == null ? !s.router.experts().isEmpty() : methods.contains(Evaluation.DATASET_ROUTER);
            Routing.DatasetRouter dr = wantDatasetRouter ? datasetRouter(s, a.getInt("seed", 42, 0, Integer.MAX_VALUE), methods != null) : null;
            List<Evaluation.TestSet> sets = new ArrayList<>();
            for (Path dir : s.dataDirs) {
                Beir.Dataset ds = Beir.load(dir, split, s.prompts.query(), s.prompts.passage(), System.err);
                Dataset d = s.dataset(dir, ds.corpus(), System.err); // the corpus read once
                Beir.Queries q = ds.queries();
                int max = a.getInt("max-queries", 0, 0, Integer.MAX_VALUE);
                if (max > 0 && q.size() > max)
                    q = new Beir.Queries(Arrays.copyOf(q.ids(), max), Arrays.copyOf(q.texts(), max), q.qrels().subList(0, max));
                sets.add(new Evaluation.TestSet(d.name(), q, d.index(), true));
            }
            Evaluation.Options o = new Evaluation.Options(metrics, methods, k, a.has("cosine"), s.router.pilots(), dr, System.err);
            Map<String, Map<String, Map<String, Double>>> r = Evaluation.run(s.router, s.backend, sets, o);
            for (Metrics.Metric m : metrics) {
                out.println(m.label() + " ×100");
                out.print(Evaluation.table(r, m));
                out.println();
            }
            if (a.get("json") != null) Evaluation.writeJson(r, Path.of(a.get("json")));
            if (a.get("plot") != null) Evaluation.writeSvg(r, Metrics.Metric.NDCG_10, Path.of(a.get("plot")));
        }
        return 0;
    }

    /**
     * DatasetRouter over the training queries of the --data datasets whose name is also an
     * expert's name (the expert trained on that dataset). None such: null, or an error when the
     * method was asked for by name.
     */
    static Routing.DatasetRouter datasetRouter(Session s, long seed, boolean asked) throws IOException {
        Map<String, String> datasetExpert = new LinkedHashMap<>();
        Map<String, float[][]> queries = new LinkedHashMap<>();
        for (Path dir : s.dataDirs) {
            String name = Beir.datasetName(dir);
            if (!s.router.experts().contains(name)) continue;
            Beir.Queries q;
            try {
                q = Beir.trainingQueries(dir, s.prompts.query(), 1000, seed, null);
            } catch (java.nio.file.NoSuchFileException e) {
                continue;
            }
            datasetExpert.put(name, name);
            queries.put(name, s.router.encode(Arrays.asList(q.texts()), null));
        }
        if (queries.isEmpty()) {
            if (asked) throw new IllegalArgumentException("dataset-router needs a --data dataset with training data whose name is an expert's (experts: "
                    + String.join(", ", s.router.experts()) + ")");
            return null;
        }
        return new Routing.DatasetRouter(s.router.experts(), datasetExpert, queries, 100, seed);
    }
}
