package rrj.router;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.model.Encoder;
import rrj.model.Json;

import javax.xml.parsers.DocumentBuilderFactory;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The driver end to end on a world whose answers are known: queries are the documents' own
 * texts (so the base encoder, with cosine, ranks the relevant document first: nDCG@10 = 1),
 * and two fake experts that embed "their" half of the queries as the base does and negate the
 * other half (relevant document last: nDCG@10 = 0). Hence A = B = 0.5, dataset-oracle = A
 * (tie → first), instance-oracle = 1.
 */
class EvaluationTest {
    @TempDir static Path tmp;
    static Backend backend;
    static Encoder enc;
    static Beir.Dataset ds;
    static CorpusIndex index;

    /** Expert A serves texts starting with "alpha", B the others; the wrong expert negates. Records its calls. */
    static final class HalfExperts implements Evaluation.QueryEncoder {
        final List<String[]> calls = new ArrayList<>();

        @Override public List<String> experts() { return List.of("A", "B"); }

        @Override
        public float[][] encode(List<String> queries, String[] expert) {
            calls.add(expert.clone());
            float[][] e = enc.embed(queries);
            for (int i = 0; i < e.length; i++) {
                if (expert[i] == null) continue;
                boolean alpha = queries.get(i).startsWith("alpha");
                if (alpha != expert[i].equals("A")) for (int j = 0; j < e[i].length; j++) e[i][j] = -e[i][j];
            }
            return e;
        }
    }

    @BeforeAll
    static void setUp() throws IOException {
        backend = Backends.create("ref", 1);
        enc = Encoder.open(TinyModel.create(tmp.resolve("model"), 11), backend, null, null, null);
        Path d = tmp.resolve("toy");
        Files.createDirectories(d.resolve("qrels"));
        StringBuilder corpus = new StringBuilder(), queries = new StringBuilder(), qrels = new StringBuilder("query-id\tcorpus-id\tscore\n");
        String[] words = {"river", "mountain", "protein", "galaxy", "violin", "harbor", "crystal", "forest", "engine", "planet"};
        for (int i = 0; i < 20; i++) {
            String text = (i < 10 ? "alpha " : "beta ") + words[i % 10] + " " + words[(i * 3 + 1) % 10] + " " + i;
            corpus.append("{\"_id\": \"d").append(i).append("\", \"text\": \"").append(text).append("\"}\n");
            queries.append("{\"_id\": \"q").append(i).append("\", \"text\": \"").append(text).append("\"}\n");
            qrels.append("q").append(i).append("\td").append(i).append("\t1\n");
        }
        Files.writeString(d.resolve("corpus.jsonl"), corpus);
        Files.writeString(d.resolve("queries.jsonl"), queries);
        Files.writeString(d.resolve("qrels/test.tsv"), qrels);
        ds = Beir.load(d, "test");
        index = CorpusIndex.obtain(tmp.resolve("idx"), enc, ds.corpus(), false, null);
    }

    @AfterAll
    static void tearDown() {
        index.close();
        enc.close();
        backend.close();
    }

    @Test
    void everyMethodOnAKnownWorld() throws Exception {
        HalfExperts qe = new HalfExperts();
        Evaluation.TestSet ts = new Evaluation.TestSet("toy", ds.queries(), index, false);
        Evaluation.PilotBuild pb = Evaluation.buildPilots(qe, backend, List.of(ts), true, null);
        // pilot building: g* = A for alpha queries, B for beta → one pilot each, each the mean of 10 queries
        assertEquals(10, pb.table().pilots(0).getFirst().queries());
        assertEquals(10, pb.table().pilots(1).getFirst().queries());
        Routing.DatasetRouter dr = new Routing.DatasetRouter(qe.experts(), Map.of("toy", "A"), pb.baseEmbeddings(), 100, 1);

        qe.calls.clear();
        List<Metrics.Metric> metrics = List.of(Metrics.Metric.NDCG_10, Metrics.Metric.parse("Recall@100"),
                Metrics.Metric.parse("MRR@10"), Metrics.Metric.parse("MAP@10"));
        Evaluation.Options o = new Evaluation.Options(metrics, null, 100, true, pb.table(), dr, null);
        Map<String, Map<String, Map<String, Double>>> r = Evaluation.run(qe, backend, List.of(ts), o);

        assertEquals(List.of("base", "A", "B", "router", "router-nearest", "dataset-router", "dataset-oracle", "instance-oracle"),
                new ArrayList<>(r.keySet()));
        for (Map<String, Map<String, Double>> byDs : r.values())
            for (double v : byDs.get("toy").values()) assertTrue(v >= 0 && v <= 1, "value " + v);
        assertEquals(1.0, nd(r, "base"), 1e-9);
        assertEquals(0.5, nd(r, "A"), 1e-9);
        assertEquals(0.5, nd(r, "B"), 1e-9);
        assertEquals(0.5, nd(r, "dataset-oracle"), 1e-9);
        assertEquals(1.0, nd(r, "instance-oracle"), 1e-9);
        assertEquals(0.5, nd(r, "dataset-router"), 1e-9); // everything to A
        assertEquals(1.0, r.get("base").get("toy").get("recall@100"), 1e-9);
        assertEquals(0.5, r.get("A").get("toy").get("mrr@10"), 1e-9);
        // one encode call per method: base, A, B, then three routed (mixed) batches
        assertEquals(6, qe.calls.size());
        for (String[] call : qe.calls) assertEquals(20, call.length);

        // writers: JSON round trip, a table ×100 with one decimal, well-formed SVG
        Path json = tmp.resolve("out/results.json");
        Evaluation.writeJson(r, json);
        Map<String, Object> back = Json.parseObject(Files.readString(json));
        assertEquals(0.5, ((Number) ((Map<?, ?>) ((Map<?, ?>) back.get("A")).get("toy")).get("ndcg@10")).doubleValue(), 1e-12);
        String table = Evaluation.table(r, Metrics.Metric.NDCG_10);
        assertTrue(table.lines().findFirst().orElseThrow().matches("nDCG@10\\s+toy\\s+Avg"), table);
        assertTrue(table.contains("instance-oracle  100.0  100.0"), table);
        assertTrue(table.contains("A                 50.0   50.0"), table);
        String svg = Evaluation.svg(r, Metrics.Metric.NDCG_10);
        var doc = DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(new ByteArrayInputStream(svg.getBytes(StandardCharsets.UTF_8)));
        assertEquals("svg", doc.getDocumentElement().getNodeName());
        assertEquals(8 + 8 + 1, doc.getElementsByTagName("rect").getLength()); // background + 8 bars + 8 legend keys
        assertTrue(svg.contains(">50.0<") && svg.contains(">instance-oracle<"), svg);
    }

    static double nd(Map<String, Map<String, Map<String, Double>>> r, String method) {
        return r.get(method).get("toy").get("ndcg@10");
    }

    @Test
    void unavailableMethodsAndBaseOnlyMisuseAreErrors() {
        Evaluation.TestSet ts = new Evaluation.TestSet("toy", ds.queries(), index, false);
        Evaluation.QueryEncoder base = new Evaluation.BaseQueryEncoder(enc);
        Evaluation.Options routerOnly = new Evaluation.Options(List.of(Metrics.Metric.NDCG_10), List.of("router"), 100, true, null, null, null);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Evaluation.run(base, backend, List.of(ts), routerOnly));
        assertTrue(e.getMessage().contains("method 'router' needs a pilot table"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> base.encode(List.of("x"), new String[]{"A"}));
        assertTrue(e.getMessage().contains("no experts"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new Evaluation.Options(List.of(Metrics.Metric.parse("Recall@200")), null, 100, true, null, null, null));
        assertTrue(e.getMessage().contains("Recall@200 needs k ≥ 200"), e.getMessage());
        // base only: exactly one method, one figure
        Map<String, Map<String, Map<String, Double>>> r = Evaluation.run(base, backend, List.of(ts),
                new Evaluation.Options(List.of(Metrics.Metric.NDCG_10), null, 100, true, null, null, null));
        assertEquals(List.of("base"), new ArrayList<>(r.keySet()));
        assertEquals(1.0, nd(r, "base"), 1e-9);
    }
}
