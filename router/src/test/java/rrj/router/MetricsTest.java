package rrj.router;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Metrics against values computed by hand from trec_eval 9.0.5's definitions
 * (m_ndcg_cut.c, m_recall.c, m_map_cut.c, form_res_rels.c) and BEIR's mrr.
 */
class MetricsTest {
    static final double EPS = 1e-12;
    static double lg(int x) { return Math.log(x) / Math.log(2); }

    static Metrics.Metric m(String s) { return Metrics.Metric.parse(s); }

    @Test
    void gradedNdcgUsesLinearGainAndIdealFromAllJudged() {
        // ranking: d1 (grade 2), d2 (0), d3 (1); also judged: d9 grade 2 never retrieved, d8 grade 0
        String[] ids = {"d1", "d2", "d3"};
        float[] sc = {3f, 2f, 1f};
        Map<String, Integer> q = Map.of("d1", 2, "d3", 1, "d9", 2, "d8", 0);
        double dcg = 2 / lg(2) + 1 / lg(4);
        double idcg3 = 2 / lg(2) + 2 / lg(3) + 1 / lg(4);
        assertEquals(dcg / idcg3, Metrics.score(m("ndcg@3"), ids, sc, q), EPS);
        // @1: dcg = 2, idcg = 2 → 1
        assertEquals(1.0, Metrics.score(m("ndcg@1"), ids, sc, q), EPS);
        // @2: only d1 counts; ideal is the two grade-2 docs
        assertEquals(2 / (2 + 2 / lg(3)), Metrics.score(m("ndcg@2"), ids, sc, q), EPS);
        // recall@3: 2 of 3 relevant (grade ≥ 1); MAP@3: (1/1 + 2/3) / 3
        assertEquals(2.0 / 3, Metrics.score(m("recall@3"), ids, sc, q), EPS);
        assertEquals((1 + 2.0 / 3) / 3, Metrics.score(m("map@3"), ids, sc, q), EPS);
        assertEquals(1.0, Metrics.score(m("mrr@10"), ids, sc, q), EPS);
    }

    @Test
    void tiesAreBrokenByDocIdDescending() {
        // equal scores: trec_eval ranks "b" before "a" (strcmp(ptr2, ptr1))
        String[] ids = {"a", "b", "c"};
        float[] sc = {1f, 1f, 0.5f};
        assertArrayEquals(new int[]{1, 0, 2}, Metrics.trecOrder(ids, sc));
        Map<String, Integer> onlyA = Map.of("a", 1);
        assertEquals(1 / lg(3), Metrics.score(m("ndcg@10"), ids, sc, onlyA), EPS); // a is at rank 2
        assertEquals(0.5, Metrics.score(m("mrr@10"), ids, sc, onlyA), EPS);
        assertEquals(0.0, Metrics.score(m("recall@1"), ids, sc, onlyA), EPS);
        // the order given is ignored: same result when the input lists "a" first or last
        assertEquals(Metrics.score(m("ndcg@10"), ids, sc, onlyA),
                Metrics.score(m("ndcg@10"), new String[]{"c", "b", "a"}, new float[]{0.5f, 1f, 1f}, onlyA), EPS);
        // ids compare as strings ("10" < "9"), not numbers; -0.0 ties with 0.0
        assertArrayEquals(new int[]{1, 0}, Metrics.trecOrder(new String[]{"10", "9"}, new float[]{0f, -0f}));
    }

    @Test
    void queriesWithoutRelevantRetrievedScoreZero() {
        String[] ids = {"x", "y"};
        float[] sc = {2f, 1f};
        Map<String, Integer> q = Map.of("z", 1, "y", 0);
        for (String s : List.of("ndcg@10", "recall@100", "mrr@10", "map@10")) assertEquals(0.0, Metrics.score(m(s), ids, sc, q), EPS, s);
        // nothing relevant judged at all: still evaluated, 0 (no division by zero)
        Map<String, Integer> none = Map.of("x", 0);
        for (String s : List.of("ndcg@10", "recall@100", "mrr@10", "map@10")) assertEquals(0.0, Metrics.score(m(s), ids, sc, none), EPS, s);
        // mean over evaluated queries counts such queries as 0
        double mean = Metrics.mean(m("ndcg@10"), new String[][]{{"z"}, ids}, new float[][]{{1f}, sc}, List.of(Map.of("z", 1), q));
        assertEquals(0.5, mean, EPS);
    }

    @Test
    void kLargerThanTheListAndMapDividesByAllRelevant() {
        String[] ids = {"r1", "n1"};
        float[] sc = {1f, 0.5f};
        Map<String, Integer> q = Map.of("r1", 1, "r2", 1, "r3", 1, "r4", 1);
        double idcg = 1 + 1 / lg(3) + 1 / lg(4) + 1 / lg(5);
        assertEquals(1 / idcg, Metrics.score(m("ndcg@100"), ids, sc, q), EPS);
        assertEquals(0.25, Metrics.score(m("recall@100"), ids, sc, q), EPS);
        assertEquals(0.25, Metrics.score(m("map@100"), ids, sc, q), EPS); // 1/1 over R = 4, not min(k, R)
        // map@1 with R = 4: trec_eval still divides by 4
        assertEquals(0.25, Metrics.score(m("map@1"), ids, sc, q), EPS);
        // an empty result list
        assertEquals(0.0, Metrics.score(m("ndcg@10"), new String[0], new float[0], q), EPS);
    }

    @Test
    void mrrIsCutAtK() {
        String[] ids = {"a", "b", "c"};
        float[] sc = {3f, 2f, 1f};
        Map<String, Integer> q = Map.of("c", 1);
        assertEquals(1.0 / 3, Metrics.score(m("mrr@3"), ids, sc, q), EPS);
        assertEquals(0.0, Metrics.score(m("mrr@2"), ids, sc, q), EPS);
    }

    @Test
    void labelsParseAndRoundTrip() {
        assertEquals("nDCG@10", m("NDCG@10").label());
        assertEquals("Recall@100", m("recall@100").label());
        assertEquals(Metrics.Metric.NDCG_10, m("nDCG@10"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m("P@10"));
        assertTrue(e.getMessage().contains("P@10"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> m("ndcg@0"));
        assertThrows(IllegalArgumentException.class, () -> m("ndcg"));
    }

    @Test
    void idsCompareAsUtf8Bytes() {
        // U+FF21 (UTF-16 0xFF21) vs U+1F600 (surrogates 0xD83D…): UTF-16 order says FF21 > D83D, strcmp on UTF-8 says less
        String bmp = "\uFF21", astral = new String(Character.toChars(0x1F600));
        assertTrue(Metrics.compareIds(bmp, astral) < 0);
        assertTrue(bmp.compareTo(astral) > 0);
        assertTrue(Metrics.compareIds("ab", "abc") < 0);
        assertEquals(0, Metrics.compareIds("x", "x"));
    }
}
