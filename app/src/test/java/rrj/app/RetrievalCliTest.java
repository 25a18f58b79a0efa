package rrj.app;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.Json;
import rrj.model.LoraAdapter;
import rrj.model.RandomBert;
import rrj.model.Safetensors;
import rrj.router.Routing;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static rrj.app.CliTest.assertOneLineError;
import static rrj.app.CliTest.rr;

/**
 * rr index / pilots build / route / search / eval on a tiny random model, two tiny BEIR
 * datasets and two random experts. Routing and search results are recomputed here from
 * {@code rr embed} vectors and the pilot table file, not taken from the router's own code.
 */
class RetrievalCliTest {
    static Path tmp, model, experts, alpha, beta, cache;
    static final BertConfig C = new BertConfig(30522, 32, 2, 4, 64, 64, 2, 1e-12);
    static final String[] WORDS = {"protein", "cell", "gene", "vaccine", "argument", "policy", "tax", "school", "energy",
            "climate", "virus", "brain", "court", "law", "market", "price", "river", "ocean", "star", "planet"};

    @BeforeAll
    static void setUp() throws IOException {
        tmp = Files.createTempDirectory("rr-retrieval");
        model = tmp.resolve("tiny");
        Files.createDirectories(model);
        Safetensors.write(model.resolve("model.safetensors"), RandomBert.weights(C, 5), null);
        Files.writeString(model.resolve("config.json"), Json.writePretty(C.toMap()));
        Files.copy(Path.of("../data/test-fixtures/vocab.txt"), model.resolve("vocab.txt"));
        experts = tmp.resolve("experts");
        adapter("alpha", 11);
        adapter("beta", 12);
        alpha = dataset("alpha", 0, 21);
        beta = dataset("beta", 10, 22);
        cache = tmp.resolve("index");
    }

    static void adapter(String name, long seed) throws IOException {
        SplittableRandom rnd = new SplittableRandom(seed);
        Map<String, Tensor> t = new LinkedHashMap<>();
        for (int l = 0; l < C.numLayers(); l++)
            for (String m : List.of("attention.self.query", "attention.self.value")) {
                String key = "base_model.model.encoder.layer." + l + "." + m;
                t.put(key + ".lora_A.weight", RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.2, 4, C.hiddenSize()));
                t.put(key + ".lora_B.weight", RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.5, C.hiddenSize(), 4));
            }
        Path dir = experts.resolve(name);
        Files.createDirectories(dir);
        Safetensors.write(dir.resolve("adapter_model.safetensors"), t, Map.of("format", "pt"));
        Files.writeString(dir.resolve("adapter_config.json"), Json.writePretty(LoraAdapter.peftConfig(4, 8, false, List.of("query", "value"), "tiny")));
    }

    /** 30 documents, 12 train and 6 test queries, each query judged relevant to one or two documents. */
    static Path dataset(String name, int wordOffset, long seed) throws IOException {
        SplittableRandom r = new SplittableRandom(seed);
        Path dir = tmp.resolve(name);
        Files.createDirectories(dir.resolve("qrels"));
        StringBuilder corpus = new StringBuilder(), queries = new StringBuilder();
        List<String> docs = new ArrayList<>();
        for (int d = 0; d < 30; d++) {
            String text = words(r, wordOffset, 6 + r.nextInt(20));
            docs.add(text);
            corpus.append(Json.write(Map.of("_id", name + "-d" + d, "title", "title " + d, "text", text))).append('\n');
        }
        StringBuilder train = new StringBuilder("query-id\tcorpus-id\tscore\n"), test = new StringBuilder("query-id\tcorpus-id\tscore\n");
        for (int q = 0; q < 18; q++) {
            int d = r.nextInt(30);
            String text = docs.get(d).substring(0, Math.min(docs.get(d).length(), 20 + r.nextInt(10)));
            queries.append(Json.write(Map.of("_id", name + "-q" + q, "text", text))).append('\n');
            StringBuilder to = q < 12 ? train : test;
            to.append(name).append("-q").append(q).append('\t').append(name).append("-d").append(d).append("\t1\n");
            if (r.nextBoolean()) to.append(name).append("-q").append(q).append('\t').append(name).append("-d").append((d + 1) % 30).append("\t2\n");
        }
        Files.writeString(dir.resolve("corpus.jsonl"), corpus);
        Files.writeString(dir.resolve("queries.jsonl"), queries);
        Files.writeString(dir.resolve("qrels/train.tsv"), train);
        Files.writeString(dir.resolve("qrels/test.tsv"), test);
        return dir;
    }

    static String words(SplittableRandom r, int offset, int n) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < n; i++) b.append(i == 0 ? "" : " ").append(WORDS[(offset + r.nextInt(10)) % WORDS.length]);
        return b.toString();
    }

    static String[] common(String... more) {
        List<String> a = new ArrayList<>(List.of("--model", model.toString(), "--experts", experts.toString(), "--data", alpha.toString(),
                "--data", beta.toString(), "--index-cache", cache.toString(), "--backend", "cpu", "--threads", "2"));
        a.addAll(0, List.of(more[0]));
        if (more[0].equals("pilots")) a.add(1, more[1]);
        for (int i = more[0].equals("pilots") ? 2 : 1; i < more.length; i++) a.add(more[i]);
        return a.toArray(new String[0]);
    }

    static float[] embed(String text, String expert) {
        CliTest.Result r = expert == null ? rr("embed", "--model", model.toString(), "--backend", "ref", text)
                : rr("embed", "--model", model.toString(), "--backend", "ref", "--experts", experts.toString(), "--expert", expert, text);
        assertEquals(0, r.code(), r.err());
        List<?> v = (List<?>) Json.parseObject(r.out().strip()).get("embedding");
        float[] out = new float[v.size()];
        for (int i = 0; i < out.length; i++) out[i] = ((Number) v.get(i)).floatValue();
        return out;
    }

    static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += (double) a[i] * b[i];
        return s;
    }

    @Test
    void pilotsRouteSearchAndEvalFitTogether() throws IOException {
        CliTest.Result idx = rr(common("index"));
        assertEquals(0, idx.code(), idx.err());
        assertTrue(idx.out().contains("alpha: 30 documents × 32 dims"), idx.out());

        // search before pilots exist: auto is the default only with a pilot table; asking for it is a clear error
        assertOneLineError(rr(common("search", "--expert", "auto", "protein cell")), "pilot table", "rr pilots build");

        CliTest.Result pb = rr(common("pilots", "build"));
        assertEquals(0, pb.code(), pb.err());
        Routing.PilotTable table = Routing.PilotTable.load(experts.resolve("pilots.safetensors"));
        assertEquals(List.of("alpha", "beta"), table.experts);
        assertTrue(table.count() >= 2 && table.count() <= 4, "T datasets give at most T pilots per expert: " + table.count());
        int fromAlpha = 0;
        for (int g = 0; g < 2; g++) for (Routing.Pilot p : table.pilots(g)) if (p.dataset().equals("alpha")) fromAlpha += p.queries();
        assertEquals(12, fromAlpha, "every alpha training query is in exactly one pilot");

        // rr route: recompute the paper's average-similarity scores from rr embed and the table file
        String q = "protein gene vaccine cell";
        CliTest.Result route = rr(common("route", "--json", q));
        assertEquals(0, route.code(), route.err());
        Map<String, Object> rj = Json.parseObject(route.out().strip());
        float[] base = embed(q, null);
        double[] want = new double[2];
        for (int g = 0; g < 2; g++) {
            for (Routing.Pilot p : table.pilots(g)) want[g] += dot(base, p.vector());
            want[g] = table.pilots(g).isEmpty() ? Double.NaN : want[g] / table.pilots(g).size();
        }
        Map<?, ?> scores = (Map<?, ?>) rj.get("scores");
        for (int g = 0; g < 2; g++) {
            if (Double.isNaN(want[g])) { assertEquals(null, scores.get(table.experts.get(g))); continue; }
            assertEquals(want[g], ((Number) scores.get(table.experts.get(g))).doubleValue(), 1e-4 * (1 + Math.abs(want[g])));
        }
        String chosen = Double.isNaN(want[1]) || want[0] >= want[1] ? "alpha" : "beta";
        assertEquals(chosen, rj.get("expert"));

        // rr search: the top hits are the documents with the best dot product with the routed query embedding
        CliTest.Result search = rr(common("search", "--json", "--k", "5", q));
        assertEquals(0, search.code(), search.err());
        Map<String, Object> sj = Json.parseObject(search.out().strip());
        assertEquals(chosen, sj.get("expert"));
        float[] qe = embed(q, chosen);
        List<double[]> all = new ArrayList<>(); // [score, dataset, doc]
        for (int ds = 0; ds < 2; ds++) {
            Path dir = ds == 0 ? alpha : beta;
            List<String> lines = Files.readAllLines(dir.resolve("corpus.jsonl"));
            for (int d = 0; d < lines.size(); d++) {
                Map<String, Object> doc = Json.parseObject(lines.get(d));
                all.add(new double[]{dot(qe, embed(doc.get("title") + " " + doc.get("text"), null)), ds, d});
            }
        }
        all.sort((x, y) -> Double.compare(y[0], x[0]));
        List<?> hits = (List<?>) sj.get("hits");
        assertEquals(5, hits.size());
        for (int i = 0; i < 5; i++) {
            Map<?, ?> h = (Map<?, ?>) hits.get(i);
            double[] w = all.get(i);
            String name = w[1] == 0 ? "alpha" : "beta";
            assertEquals(w[0], ((Number) h.get("score")).doubleValue(), 1e-3, "hit " + i);
            if (i < 4 && all.get(i)[0] - all.get(i + 1)[0] > 1e-3 && (i == 0 || all.get(i - 1)[0] - all.get(i)[0] > 1e-3)) {
                assertEquals(name + "-d" + (int) w[2], h.get("id"), "hit " + i);
                assertEquals("title " + (int) w[2], h.get("title"));
            }
        }
        CliTest.Result text = rr(common("search", "--k", "3", q));
        assertEquals(0, text.code(), text.err());
        assertTrue(text.out().contains("expert: " + chosen + "  (routing scores: alpha "), text.out());

        // rr eval: JSON method → dataset → metric → value, the text table and the SVG
        Path json = tmp.resolve("eval.json"), svg = tmp.resolve("eval.svg");
        CliTest.Result ev = rr(common("eval", "--recall", "--json", json.toString(), "--plot", svg.toString()));
        assertEquals(0, ev.code(), ev.err());
        Map<String, Object> r = Json.parseObject(Files.readString(json));
        assertEquals(List.of("base", "alpha", "beta", "router", "router-nearest", "dataset-router", "dataset-oracle", "instance-oracle"),
                new ArrayList<>(r.keySet()));
        for (Object byDataset : r.values())
            for (String ds : List.of("alpha", "beta")) {
                Map<?, ?> m = (Map<?, ?>) ((Map<?, ?>) byDataset).get(ds);
                for (String k : List.of("ndcg@10", "recall@100")) {
                    double v = ((Number) m.get(k)).doubleValue();
                    assertTrue(v >= 0 && v <= 1, k + " = " + v);
                }
            }
        for (String ds : List.of("alpha", "beta")) {
            double io = ndcg(r, "instance-oracle", ds);
            for (String m : List.of("base", "alpha", "beta", "router", "dataset-oracle"))
                assertTrue(io >= ndcg(r, m, ds) - 1e-12, "instance-oracle is an upper bound: " + m + " on " + ds);
            assertEquals(Math.max(ndcg(r, "alpha", ds), ndcg(r, "beta", ds)), ndcg(r, "dataset-oracle", ds), 1e-12);
        }
        assertTrue(ev.out().contains("nDCG@10 ×100") && ev.out().contains("instance-oracle"), ev.out());
        assertTrue(Files.readString(svg).startsWith("<svg") || Files.readString(svg).startsWith("<?xml"));

        assertOneLineError(rr(common("eval", "--methods", "base,bogus")), "bogus", "available");
    }

    static double ndcg(Map<String, Object> r, String method, String ds) {
        return ((Number) ((Map<?, ?>) ((Map<?, ?>) r.get(method)).get(ds)).get("ndcg@10")).doubleValue();
    }

    @Test
    void routingListPicksTheOptionsAndOtherExpertsStayEvaluable() throws IOException {
        Path dir = tmp.resolve("experts-routing");
        Files.createDirectories(dir);
        for (String n : List.of("alpha", "beta"))
            try (var files = Files.list(experts.resolve(n))) {
                Files.createDirectories(dir.resolve(n));
                for (Path f : files.toList()) Files.copy(f, dir.resolve(n).resolve(f.getFileName()));
            }
        Files.writeString(dir.resolve("experts.json"), "{\"routing\": [\"base\", \"alpha\"]}");
        String[] flags = {"--model", model.toString(), "--experts", dir.toString(), "--data", alpha.toString(), "--data", beta.toString(),
                "--index-cache", cache.toString()};
        CliTest.Result pb = rr(concat(new String[]{"pilots", "build"}, flags));
        assertEquals(0, pb.code(), pb.err());
        assertEquals(List.of("base", "alpha"), Routing.PilotTable.load(dir.resolve("pilots.safetensors")).experts);
        CliTest.Result route = rr(concat(new String[]{"route", "--json"}, flags, new String[]{"gene cell"}));
        assertEquals(0, route.code(), route.err());
        assertEquals(List.of("base", "alpha"), new ArrayList<>(((Map<?, ?>) Json.parseObject(route.out().strip()).get("scores")).keySet()));
        Path json = tmp.resolve("routing-eval.json");
        CliTest.Result ev = rr(concat(new String[]{"eval", "--methods", "base,beta,router,instance-oracle", "--json", json.toString()}, flags));
        assertEquals(0, ev.code(), ev.err());
        assertEquals(List.of("base", "beta", "router", "instance-oracle"), new ArrayList<>(Json.parseObject(Files.readString(json)).keySet()));

        Files.writeString(dir.resolve("experts.json"), "{\"routing\": [\"alpha\", \"gamma\"]}");
        assertOneLineError(rr(concat(new String[]{"route"}, flags, new String[]{"x"})), "experts.json", "gamma");
    }

    static String[] concat(String[]... parts) {
        List<String> out = new ArrayList<>();
        for (String[] p : parts) out.addAll(List.of(p));
        return out.toArray(new String[0]);
    }

    @Test
    void badDataDirectoryAndMissingQueryAreClearErrors() {
        assertOneLineError(rr("search", "--model", model.toString(), "--experts", experts.toString(), "--data", tmp.resolve("nope").toString(), "x"),
                "nope", "not a directory");
        CliTest.Result r = rr("search", "--model", model.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("search needs at least one QUERY"), r.err());
    }
}
