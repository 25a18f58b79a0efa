package rrj.router;

import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.model.Encoder;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The end-to-end check of the retrieval stack against published numbers: all-MiniLM-L6-v2's
 * MTEB nDCG@10 (max 256 tokens, mean pooling, L2-normalised, cosine; ArguAna with self-match
 * exclusion) on SciFact (64.5) and ArguAna (50.2), within ±0.5. Encodes both corpora (cached
 * indexes are reused), searches, scores; exit code 1 when a figure is off.
 *
 * <pre>
 * java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
 *   -cp router/target/classes:model/target/classes:engine/target/classes rrj.router.MtebCheck \
 *   --model ~/.cache/rrj/models/all-minilm-l6-v2 --scifact data/scifact --arguana data/arguana \
 *   [--threads N] [--index-cache DIR] [--backend cpu|ref]
 * </pre>
 * A main class rather than a test: the model comes from the converter module, which router
 * must not depend on. {@code MtebCheckTest} (tag "slow") runs it when the model is converted.
 */
public final class MtebCheck {
    private MtebCheck() {}

    public static final double SCIFACT = 0.645, ARGUANA = 0.502, TOLERANCE = 0.005;

    public static void main(String[] args) throws Exception {
        int code;
        try {
            code = run(args, System.out, System.err);
        } catch (IllegalArgumentException | java.io.IOException | Beir.DataException e) {
            System.err.println("mteb-check: error: " + e.getMessage());
            code = 2;
        }
        System.exit(code);
    }

    /** Runs the check; returns 0 when both figures are within tolerance, 1 otherwise. */
    public static int run(String[] args, PrintStream out, PrintStream err) throws Exception {
        Path model = null, scifact = null, arguana = null;
        Path cache = Path.of(System.getProperty("user.home"), ".cache", "rrj", "indexes");
        int threads = Backends.defaultThreads();
        String backendName = "cpu";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) throw new IllegalArgumentException("option " + a + " needs a value");
            String v = args[++i];
            switch (a) {
                case "--model" -> model = Path.of(v);
                case "--scifact" -> scifact = Path.of(v);
                case "--arguana" -> arguana = Path.of(v);
                case "--index-cache" -> cache = Path.of(v);
                case "--backend" -> backendName = v;
                case "--threads" -> {
                    try {
                        threads = Integer.parseInt(v);
                    } catch (NumberFormatException e) {
                        throw new IllegalArgumentException("--threads: '" + v + "' is not an integer");
                    }
                }
                default -> throw new IllegalArgumentException("unknown option " + a + " (--model --scifact --arguana --threads --index-cache --backend)");
            }
        }
        if (model == null || scifact == null || arguana == null) throw new IllegalArgumentException("--model, --scifact and --arguana are required");

        long t0 = System.nanoTime();
        List<String> lines = new ArrayList<>();
        boolean ok = true;
        try (Backend backend = Backends.create(backendName, threads);
             Encoder enc = Encoder.open(model, backend, null, null, null)) {
            err.println(backend.describe() + "; model " + model + " " + enc.options);
            Evaluation.BaseQueryEncoder qe = new Evaluation.BaseQueryEncoder(enc);
            Object[][] sets = {{scifact, false, SCIFACT}, {arguana, true, ARGUANA}};
            for (Object[] s : sets) {
                long t1 = System.nanoTime();
                Beir.Dataset ds = Beir.load((Path) s[0], "test", "", "", err);
                try (CorpusIndex index = CorpusIndex.obtain(CorpusIndex.cacheDir(cache, ds.name(), enc), enc, ds.corpus(), false, err)) {
                    double encodeS = (System.nanoTime() - t1) / 1e9;
                    Evaluation.TestSet ts = new Evaluation.TestSet(ds.name(), ds.queries(), index, (Boolean) s[1]);
                    Evaluation.Options o = new Evaluation.Options(List.of(Metrics.Metric.NDCG_10), List.of(Evaluation.BASE),
                            Search.DEFAULT_K, true, null, null, null);
                    Map<String, Map<String, Map<String, Double>>> r = Evaluation.run(qe, backend, List.of(ts), o);
                    double got = r.get(Evaluation.BASE).get(ds.name()).get("ndcg@10"), want = (Double) s[2];
                    boolean pass = Math.abs(got - want) <= TOLERANCE + 1e-9;
                    ok &= pass;
                    lines.add(String.format(Locale.ROOT, "%-8s nDCG@10 %.2f (published %.1f, %s)  %d docs, %d queries; load+index %.0f s, queries+search %.0f s",
                            ds.name(), got * 100, want * 100, pass ? "ok" : "OFF BY MORE THAN 0.5", index.size(), ds.queries().size(),
                            encodeS, (System.nanoTime() - t1) / 1e9 - encodeS));
                    out.println(lines.getLast());
                }
            }
        }
        out.printf(Locale.ROOT, "total %.0f s (threads %d)%n", (System.nanoTime() - t0) / 1e9, threads);
        return ok ? 0 : 1;
    }
}
