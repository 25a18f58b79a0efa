package rrj.router;

import rrj.engine.Backend;
import rrj.engine.DType;
import rrj.engine.Tensor;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Exact top-k search: every query against every document by dot product (cosine as an
 * option), as BEIR's {@code DenseRetrievalExactSearch}.
 *
 * <p>The scores come from the engine's GEMM ({@link Backend#linear}: {@code y = x·Wᵀ}) with a
 * batch of queries as x and a block of {@link #DOC_BLOCK} corpus rows as W, read in place from
 * the mapped index. The full [queries, corpus] score matrix never exists: each block's scores
 * go straight into per-query bounded min-heaps. The loop runs corpus blocks outside and query
 * batches inside, so each corpus block is handed to the backend once per search.
 *
 * <p>Ranking within the top k is trec_eval's ({@link Metrics#compareRank}: score descending,
 * ties by doc id descending), so the cut at k agrees with what the metrics would rank.
 * Self-match exclusion (DESIGN §3: ArguAna and Quora) drops the document whose id equals the
 * query id before it can take a slot, as BEIR does.
 *
 * <p>Not thread-safe (reuses its buffers). Not here: approximate search, sharding.
 */
public final class Search {
    public static final int DEFAULT_K = 100;
    /** Corpus rows per GEMM call (the W operand). */
    public static final int DOC_BLOCK = 4096;
    /** Query rows per GEMM call (the x operand). */
    public static final int QUERY_BLOCK = 256;

    /** One query's results, best first: corpus rows, their ids, their scores. */
    public record Hits(int[] docs, String[] ids, float[] scores) {
        public int size() { return docs.length; }
    }

    private final Backend backend;
    private final int docBlock, queryBlock;
    private final List<Tensor> xs = new ArrayList<>(); // [QUERY_BLOCK, C] query batches, reused
    private Tensor y;                                   // [QUERY_BLOCK, DOC_BLOCK] scores
    private int width = -1;

    public Search(Backend backend) { this(backend, DOC_BLOCK, QUERY_BLOCK); }

    /** With other block sizes (tests use small ones to cross many block boundaries). */
    Search(Backend backend, int docBlock, int queryBlock) {
        if (docBlock < 1 || queryBlock < 1) throw new IllegalArgumentException("block sizes must be ≥ 1");
        this.backend = backend;
        this.docBlock = docBlock;
        this.queryBlock = queryBlock;
    }

    /**
     * Top {@code k} documents of {@code index} per query. {@code cosine}: normalise the
     * queries and divide by document norms (a no-op for an index the encoder normalised).
     * {@code queryIds}: when non-null, a document whose id equals its query's id is dropped.
     */
    public Hits[] topK(CorpusIndex index, float[][] queries, int k, boolean cosine, String[] queryIds) {
        float[] inv = cosine && !index.normalized() ? index.inverseNorms() : null;
        return topK(index.embeddings, index.docIds, inv, queries, k, cosine, queryIds);
    }

    /**
     * As above over any [n, C] fp32 matrix: {@code invDocNorms} (null for none) multiplies
     * each document's score; {@code normalizeQueries} divides each query by its L2 norm.
     */
    public Hits[] topK(Tensor corpus, String[] docIds, float[] invDocNorms, float[][] queries, int k,
                       boolean normalizeQueries, String[] queryIds) {
        if (corpus.dtype != DType.F32 || corpus.rank() != 2) throw new IllegalArgumentException("corpus must be F32 [n, C], got " + corpus);
        int n = (int) corpus.dim(0), c = (int) corpus.dim(1), nq = queries.length;
        if (docIds.length != n) throw new IllegalArgumentException(docIds.length + " doc ids for " + n + " corpus rows");
        if (k < 1) throw new IllegalArgumentException("k must be ≥ 1, got " + k);
        if (queryIds != null && queryIds.length != nq) throw new IllegalArgumentException(queryIds.length + " query ids for " + nq + " queries");
        prepare(queries, c, normalizeQueries);

        // the row of each query's own id, for self-match exclusion (-1: none)
        int[] self = new int[nq];
        java.util.Arrays.fill(self, -1);
        if (queryIds != null) {
            Map<String, Integer> row = new java.util.HashMap<>(n * 2);
            for (int i = 0; i < n; i++) row.put(docIds[i], i);
            for (int q = 0; q < nq; q++) {
                Integer r = row.get(queryIds[q]);
                if (r != null) self[q] = r;
            }
        }

        int cap = Math.min(k, n);
        float[][] hs = new float[nq][cap]; // per-query min-heaps (root = the worst kept), scores
        int[][] hd = new int[nq][cap];     // … and corpus rows
        int[] size = new int[nq];
        float[] row = new float[docBlock];
        for (int d0 = 0; d0 < n; d0 += docBlock) {
            int nd = Math.min(docBlock, n - d0);
            Tensor w = backend.weight(new Tensor(DType.F32, new long[]{nd, c},
                    corpus.data.asSlice((long) d0 * c * 4, (long) nd * c * 4)));
            for (int qb = 0; qb * queryBlock < nq; qb++) {
                int q0 = qb * queryBlock, rows = Math.min(queryBlock, nq - q0);
                backend.linear(y, xs.get(qb), rows, w, null, null, false); // y holds [rows, nd], row stride nd
                for (int r = 0; r < rows; r++) {
                    int q = q0 + r;
                    backend.read(y, (long) r * nd, row, 0, nd);
                    float[] h = hs[q];
                    int[] hi = hd[q];
                    int sq = size[q], skip = self[q] - d0;
                    for (int j = 0; j < nd; j++) {
                        if (j == skip) continue;
                        float s = invDocNorms == null ? row[j] : row[j] * invDocNorms[d0 + j];
                        if (s != s) throw new IllegalStateException("score NaN for query " + q + ", document " + docIds[d0 + j]);
                        if (sq < cap) {
                            h[sq] = s;
                            hi[sq] = d0 + j;
                            siftUp(h, hi, sq++, docIds);
                        } else if (s > h[0] || (s == h[0] && Metrics.compareIds(docIds[d0 + j], docIds[hi[0]]) > 0)) {
                            h[0] = s;
                            hi[0] = d0 + j;
                            siftDown(h, hi, sq, docIds);
                        }
                    }
                    size[q] = sq;
                }
            }
        }

        Hits[] out = new Hits[nq];
        for (int q = 0; q < nq; q++) {
            int m = size[q];
            String[] ids = new String[m];
            float[] sc = new float[m];
            for (int i = 0; i < m; i++) {
                ids[i] = docIds[hd[q][i]];
                sc[i] = hs[q][i];
            }
            int[] ord = Metrics.trecOrder(ids, sc);
            int[] docs = new int[m];
            String[] oi = new String[m];
            float[] os = new float[m];
            for (int i = 0; i < m; i++) {
                docs[i] = hd[q][ord[i]];
                oi[i] = ids[ord[i]];
                os[i] = sc[ord[i]];
            }
            out[q] = new Hits(docs, oi, os);
        }
        return out;
    }

    /** Copies the queries (normalised if asked) into the backend's query batches. */
    private void prepare(float[][] queries, int c, boolean normalize) {
        if (width != c) {
            xs.clear();
            y = backend.allocate(queryBlock, docBlock);
            width = c;
        }
        int blocks = (queries.length + queryBlock - 1) / queryBlock;
        while (xs.size() < blocks) xs.add(backend.allocate(queryBlock, c));
        float[] tmp = new float[c];
        for (int q = 0; q < queries.length; q++) {
            float[] v = queries[q];
            if (v.length != c) throw new IllegalArgumentException("query " + q + " has dimension " + v.length + ", the corpus " + c);
            float[] src = v;
            if (normalize) {
                double s = 0;
                for (int j = 0; j < c; j++) s += (double) v[j] * v[j];
                float inv = s > 0 ? (float) (1 / Math.sqrt(s)) : 0f;
                for (int j = 0; j < c; j++) tmp[j] = v[j] * inv;
                src = tmp;
            }
            backend.write(src, 0, xs.get(q / queryBlock), (long) (q % queryBlock) * c, c);
        }
    }

    // min-heap in trec order: the root is the entry that ranks last
    private static boolean worse(float sa, int da, float sb, int db, String[] ids) {
        return Metrics.compareRank(sa, ids[da], sb, ids[db]) > 0;
    }

    private static void siftUp(float[] h, int[] d, int i, String[] ids) {
        while (i > 0) {
            int p = (i - 1) >>> 1;
            if (!worse(h[i], d[i], h[p], d[p], ids)) break;
            swap(h, d, i, p);
            i = p;
        }
    }

    private static void siftDown(float[] h, int[] d, int size, String[] ids) {
        int i = 0;
        while (true) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < size && worse(h[l], d[l], h[m], d[m], ids)) m = l;
            if (r < size && worse(h[r], d[r], h[m], d[m], ids)) m = r;
            if (m == i) return;
            swap(h, d, i, m);
            i = m;
        }
    }

    private static void swap(float[] h, int[] d, int i, int j) {
        float t = h[i]; h[i] = h[j]; h[j] = t;
        int u = d[i]; d[i] = d[j]; d[j] = u;
    }
}
