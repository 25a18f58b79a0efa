package rrj.router;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import rrj.model.Safetensors;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Routing on synthetic experts whose right answer is known: expert g "owns" direction e_g;
 * queries near e_g must go to g. Plus pilot building, ties, oracles and the table file.
 */
class RoutingTest {
    @TempDir Path tmp;
    static final int C = 8;
    static final List<String> EXPERTS = List.of("A", "B", "C");

    static float[] near(int axis, SplittableRandom r, double noise) {
        float[] v = new float[C];
        v[axis] = 1f;
        for (int j = 0; j < C; j++) v[j] += (float) (noise * (r.nextDouble() * 2 - 1));
        return v;
    }

    @Test
    void pilotsAreGroupMeansOfTheBestExpertsQueries() {
        Routing.PilotTable t = new Routing.PilotTable(EXPERTS);
        float[][] base = {{1, 0}, {3, 0}, {0, 2}, {0, 4}, {5, 5}};
        double[][] scores = {
                {0.9, 0.1, 0.0},   // A
                {0.5, 0.2, 0.5},   // tie A/C → A (first)
                {0.1, 0.8, 0.2},   // B
                {0.3, 0.3, 0.3},   // three-way tie → A
                {0.0, 0.0, 0.0}};  // all zero → A
        int[] best = Routing.addPilots(t, "train1", base, scores);
        assertArrayEquals(new int[]{0, 0, 1, 0, 0}, best);
        assertEquals(1, t.pilots(0).size());
        assertEquals(1, t.pilots(1).size());
        assertEquals(0, t.pilots(2).size()); // C never best: no pilot
        assertArrayEquals(new float[]{(1 + 3 + 0 + 5) / 4f, (0 + 0 + 4 + 5) / 4f}, t.pilots(0).get(0).vector(), 1e-6f);
        assertEquals(4, t.pilots(0).get(0).queries());
        assertArrayEquals(new float[]{0, 2}, t.pilots(1).get(0).vector());
        assertEquals("train1", t.pilots(1).get(0).dataset());
    }

    /** Three datasets, each mostly served by "its" expert, whose queries lie along its axis. */
    static Routing.PilotTable syntheticTable(SplittableRandom r) {
        Routing.PilotTable t = new Routing.PilotTable(EXPERTS);
        for (int d = 0; d < 3; d++) {
            int n = 50;
            float[][] base = new float[n][];
            double[][] scores = new double[n][3];
            for (int q = 0; q < n; q++) {
                int owner = q < 40 ? d : (d + 1) % 3; // 80% own expert, 20% the next one
                base[q] = near(owner, r, 0.2);
                scores[q][owner] = 0.9;
            }
            Routing.addPilots(t, "ds" + d, base, scores);
        }
        return t;
    }

    @Test
    void routersSendQueriesToTheExpertOwningTheirDirection() {
        SplittableRandom r = new SplittableRandom(1);
        Routing.PilotTable t = syntheticTable(r);
        assertEquals(6, t.count()); // 3 datasets × 2 groups; at most T per expert
        for (int g = 0; g < 3; g++) assertEquals(2, t.pilots(g).size());
        for (int i = 0; i < 100; i++) {
            int g = i % 3;
            float[] q = near(g, r, 0.3);
            Routing.Decision d = Routing.route(t, q);
            assertEquals(g, d.expert(), "router, query near axis " + g);
            assertEquals(g, Routing.routeNearest(t, q).expert(), "router-nearest");
            assertEquals(3, d.scores().length);
        }
    }

    @Test
    void expertsWithoutPilotsAreNeverChosenAndTiesGoFirst() {
        Routing.PilotTable t = new Routing.PilotTable(EXPERTS);
        t.add(1, new Routing.Pilot("d", 1, new float[]{1, 0}));
        t.add(2, new Routing.Pilot("d", 1, new float[]{1, 0}));
        // A has no pilot: NaN score even though any real score would be compared; B and C tie → B
        Routing.Decision d = Routing.route(t, new float[]{-1, 0});
        assertTrue(Double.isNaN(d.scores()[0]));
        assertEquals(1, d.expert());
        assertEquals(1, Routing.routeNearest(t, new float[]{-1, 0}).expert());
        assertEquals(-1, Routing.route(new Routing.PilotTable(EXPERTS), new float[]{1, 0}).expert());
        assertEquals(0, Routing.argmax(new double[]{2, 2, 1}));
        assertEquals(2, Routing.argmax(new double[]{Double.NaN, 1, 3}));
    }

    @Test
    void routerAveragesWhileNearestTakesTheSinglePilot() {
        // A: one pilot very close plus one far away; B: two moderately close pilots
        Routing.PilotTable t = new Routing.PilotTable(List.of("A", "B"));
        t.add(0, new Routing.Pilot("d1", 1, new float[]{1, 0}));
        t.add(0, new Routing.Pilot("d2", 1, new float[]{-1, 0}));
        t.add(1, new Routing.Pilot("d1", 1, new float[]{0.7f, 0}));
        t.add(1, new Routing.Pilot("d2", 1, new float[]{0.6f, 0}));
        float[] q = {1, 0};
        assertEquals(1, Routing.route(t, q).expert());        // mean A = 0, mean B = 0.65
        assertEquals(0, Routing.routeNearest(t, q).expert()); // best single pilot is A's (1.0)
        assertEquals(0.65, Routing.route(t, q).scores()[1], 1e-6);
    }

    @Test
    void oraclesPickByMetric() {
        double[][] v = {{0.2, 0.9, 0.1}, {0.8, 0.1, 0.8}, {0.5, 0.5, 0.0}};
        assertEquals(0, Routing.datasetOracle(v)); // means 0.5, 0.5, 0.3 → tie → A
        assertArrayEquals(new int[]{1, 0, 0}, Routing.instanceOracle(v));
    }

    @Test
    void datasetRouterPicksTheNearestSamplesDatasetExpert() {
        SplittableRandom r = new SplittableRandom(3);
        Map<String, float[][]> train = new LinkedHashMap<>();
        for (int d = 0; d < 3; d++) {
            float[][] q = new float[300][];
            for (int i = 0; i < q.length; i++) q[i] = near(d, r, 0.2);
            train.put("ds" + d, q);
        }
        Map<String, String> map = Map.of("ds0", "A", "ds1", "B", "ds2", "C");
        Routing.DatasetRouter dr = new Routing.DatasetRouter(EXPERTS, map, train, 100, 42);
        assertEquals(300, dr.samples());
        for (int i = 0; i < 30; i++) {
            float[] q = near(i % 3, r, 0.2);
            assertEquals(i % 3, dr.route(q).expert());
            assertEquals("ds" + (i % 3), dr.nearestDataset(q));
        }
        // fixed seed: the same sample twice
        Routing.DatasetRouter again = new Routing.DatasetRouter(EXPERTS, map, train, 100, 42);
        float[] probe = near(1, r, 0.9);
        assertArrayEquals(dr.route(probe).scores(), again.route(probe).scores());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Routing.DatasetRouter(EXPERTS, Map.of("ds0", "A"), train, 100, 1));
        assertTrue(e.getMessage().contains("ds1"), e.getMessage());
    }

    @Test
    void pilotTableSurvivesSaveAndLoad() throws IOException {
        Routing.PilotTable t = syntheticTable(new SplittableRandom(5));
        Path f = tmp.resolve("pilots.safetensors");
        t.save(f);
        Routing.PilotTable back = Routing.PilotTable.load(f);
        assertEquals(EXPERTS, back.experts);
        assertEquals(t.count(), back.count());
        for (int g = 0; g < 3; g++)
            for (int i = 0; i < t.pilots(g).size(); i++) {
                assertArrayEquals(t.pilots(g).get(i).vector(), back.pilots(g).get(i).vector());
                assertEquals(t.pilots(g).get(i).dataset(), back.pilots(g).get(i).dataset());
                assertEquals(t.pilots(g).get(i).queries(), back.pilots(g).get(i).queries());
            }
        // a safetensors file that is not a pilot table
        Path other = tmp.resolve("other.safetensors");
        Safetensors.write(other, Map.of("pilots", rrj.engine.Tensor.of(new float[]{1, 2}, 1, 2)), null);
        Safetensors.FormatException e = assertThrows(Safetensors.FormatException.class, () -> Routing.PilotTable.load(other));
        assertTrue(e.getMessage().contains("other.safetensors") && e.getMessage().contains("rrj.pilot_table"), e.getMessage());
    }
}
