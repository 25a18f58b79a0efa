package rrj.router;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Exact search against a brute-force oracle (all scores in double, full sort in trec order),
 * on both backends, across block boundaries; ties, self-matches, k beyond the corpus.
 */
class SearchTest {

    static float[][] random(SplittableRandom r, int n, int c) {
        float[][] v = new float[n][c];
        for (float[] row : v) for (int j = 0; j < c; j++) row[j] = (float) (r.nextDouble() * 2 - 1);
        return v;
    }

    static Tensor matrix(float[][] rows) {
        int c = rows[0].length;
        float[] flat = new float[rows.length * c];
        for (int i = 0; i < rows.length; i++) System.arraycopy(rows[i], 0, flat, i * c, c);
        return Tensor.of(flat, rows.length, c);
    }

    /**
     * Oracle: the top k by exact (double) dot product, trec order, self-match skipped; plain
     * selection. The backend's fp32 scores are not bit-identical, but random data leaves no
     * near-ties in the top 20.
     */
    static int[] bruteForce(float[][] docs, String[] ids, float[] q, String selfId, int k) {
        double[] s = new double[docs.length];
        for (int i = 0; i < docs.length; i++) for (int j = 0; j < q.length; j++) s[i] += (double) q[j] * docs[i][j];
        boolean[] taken = new boolean[docs.length];
        int[] out = new int[k];
        for (int r = 0; r < k; r++) {
            int best = -1;
            for (int i = 0; i < docs.length; i++) {
                if (taken[i] || ids[i].equals(selfId)) continue;
                if (best < 0 || s[i] > s[best] || (s[i] == s[best] && Metrics.compareIds(ids[i], ids[best]) > 0)) best = i;
            }
            taken[best] = true;
            out[r] = best;
        }
        return out;
    }

    @Test
    void topKMatchesBruteForceAcrossBlocksOnBothBackends() {
        SplittableRandom r = new SplittableRandom(7);
        int n = 1000, c = 24, nq = 45, k = 20; // blocks of 256 docs × 16 queries: tails in both
        float[][] docs = random(r, n, c), queries = random(r, nq, c);
        String[] ids = new String[n];
        for (int i = 0; i < n; i++) ids[i] = "doc" + i;
        String[] qids = new String[nq];
        for (int q = 0; q < nq; q++) qids[q] = q % 3 == 0 ? "doc" + (q * 13 % n) : "query" + q; // some queries share an id with a doc
        int[][] want = new int[nq][];
        for (int q = 0; q < nq; q++) want[q] = bruteForce(docs, ids, queries[q], qids[q], k);
        for (String b : new String[]{"ref", "cpu"}) {
            try (Backend backend = Backends.create(b, 2)) {
                Search.Hits[] hits = new Search(backend, 256, 16).topK(matrix(docs), ids, null, queries, k, false, qids);
                for (int q = 0; q < nq; q++) {
                    assertEquals(k, hits[q].size());
                    for (int i = 0; i < k; i++) {
                        assertEquals(want[q][i], hits[q].docs()[i], b + " query " + q + " rank " + i);
                        assertEquals(ids[want[q][i]], hits[q].ids()[i]);
                        assertTrue(!hits[q].ids()[i].equals(qids[q]), "self-match kept");
                    }
                    for (int i = 1; i < k; i++) assertTrue(hits[q].scores()[i - 1] >= hits[q].scores()[i]);
                }
            }
        }
    }

    @Test
    void tiesAtTheCutKeepTheLargerDocIds() {
        // 6 identical documents: all scores equal; trec order keeps ids descending
        float[][] docs = new float[6][];
        for (int i = 0; i < 6; i++) docs[i] = new float[]{1f, 0f};
        String[] ids = {"a", "c", "e", "b", "f", "d"};
        try (Backend backend = Backends.create("ref", 1)) {
            Search.Hits h = new Search(backend).topK(matrix(docs), ids, null, new float[][]{{2f, 0f}}, 3, false, null)[0];
            assertArrayEquals(new String[]{"f", "e", "d"}, h.ids());
        }
    }

    @Test
    void kBeyondTheCorpusReturnsEverythingButTheSelfMatch() {
        float[][] docs = {{1f, 0f}, {0f, 1f}, {1f, 1f}};
        String[] ids = {"x", "q", "z"};
        try (Backend backend = Backends.create("ref", 1)) {
            Search.Hits h = new Search(backend).topK(matrix(docs), ids, null, new float[][]{{1f, 2f}}, 100, false, new String[]{"q"})[0];
            assertArrayEquals(new String[]{"z", "x"}, h.ids());
            assertArrayEquals(new float[]{3f, 1f}, h.scores());
        }
    }

    @Test
    void cosineNormalisesQueriesAndDocuments() {
        float[][] docs = {{10f, 0f}, {0.6f, 0.8f}};
        String[] ids = {"long", "unit"};
        float[] inv = {0.1f, 1f};
        try (Backend backend = Backends.create("ref", 1)) {
            Search s = new Search(backend);
            // dot product prefers the long vector; cosine the aligned one
            assertEquals("long", s.topK(matrix(docs), ids, null, new float[][]{{3f, 4f}}, 1, false, null)[0].ids()[0]);
            Search.Hits h = s.topK(matrix(docs), ids, inv, new float[][]{{3f, 4f}}, 2, true, null)[0];
            assertEquals("unit", h.ids()[0]);
            assertEquals(1f, h.scores()[0], 1e-6f);
            assertEquals(0.6f, h.scores()[1], 1e-6f);
        }
    }
}
