package rrj.router;

import java.util.Map;

/**
 * Retrieval metrics exactly as BEIR reports them: nDCG@k, Recall@k and MAP@k are trec_eval
 * 9.0.5's {@code ndcg_cut.k}, {@code recall.k} and {@code map_cut.k} (what BEIR asks
 * pytrec_eval for); MRR@k is BEIR's own {@code mrr} (reciprocal rank of the first document
 * with grade &gt; 0 within the top k; BEIR sorts by score alone, leaving ties in dict order —
 * here ties follow the same trec_eval order as every other measure).
 *
 * <p>trec_eval's conventions, all of which change figures:
 * <ul>
 * <li>The ranking is rebuilt from the scores: score descending (compared as fp32), ties broken
 *     by doc id <em>descending</em> ({@code comp_sim_docno} in form_res_rels.c:
 *     {@code strcmp(ptr2->docno, ptr1->docno)}). The order results arrive in is ignored.</li>
 * <li>nDCG: gain = the qrel grade (linear), discount {@code 1/log2(rank+1)}; the ideal DCG
 *     sorts <em>all</em> judged documents with grade &gt; 0 (retrieved or not, in the corpus or
 *     not) and cuts it at k. Ideal DCG 0 (no relevant judged) → 0.</li>
 * <li>Recall and MAP count grade ≥ 1 as relevant (relevance_level 1) and divide by the number
 *     of relevant judged documents (for MAP@k too — not by min(k, R)); none → 0.</li>
 * <li>A query in the qrels with nothing relevant judged is still evaluated (scores 0), as
 *     pytrec_eval evaluates every run query found in the qrels. The mean is over the evaluated
 *     queries.</li>
 * </ul>
 * Self-match exclusion (ArguAna, Quora) is the search's job, before any metric sees the list.
 */
public final class Metrics {
    private Metrics() {}

    public enum Measure { NDCG, RECALL, MRR, MAP }

    /** One figure: a measure at a cutoff, written like BEIR: "nDCG@10", "Recall@100", "MRR@10", "MAP@10". */
    public record Metric(Measure measure, int k) {
        public Metric {
            if (k < 1) throw new IllegalArgumentException("metric cutoff must be ≥ 1, got " + k);
        }

        public static final Metric NDCG_10 = new Metric(Measure.NDCG, 10);

        public String label() {
            return switch (measure) {
                case NDCG -> "nDCG";
                case RECALL -> "Recall";
                case MRR -> "MRR";
                case MAP -> "MAP";
            } + "@" + k;
        }

        /** The key in JSON reports: the label in lower case ("ndcg@10", "recall@100"). */
        public String key() { return label().toLowerCase(java.util.Locale.ROOT); }

        /** Parses a label ("ndcg@10", case-insensitive). */
        public static Metric parse(String s) {
            int at = s.indexOf('@');
            if (at < 0) throw new IllegalArgumentException("metric '" + s + "': expected NAME@K, e.g. nDCG@10");
            int k;
            try {
                k = Integer.parseInt(s.substring(at + 1));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("metric '" + s + "': cutoff is not an integer");
            }
            Measure m = switch (s.substring(0, at).toLowerCase(java.util.Locale.ROOT)) {
                case "ndcg" -> Measure.NDCG;
                case "recall" -> Measure.RECALL;
                case "mrr" -> Measure.MRR;
                case "map" -> Measure.MAP;
                default -> throw new IllegalArgumentException("metric '" + s + "': unknown measure (nDCG, Recall, MRR, MAP)");
            };
            return new Metric(m, k);
        }

        @Override public String toString() { return label(); }
    }

    /**
     * trec_eval's document order: 1 when {@code a} ranks after {@code b}, -1 before, 0 same.
     * Scores compare as floats with {@code <}/{@code >} (so -0.0 == 0.0), then doc ids by
     * {@link #compareIds} descending.
     */
    public static int compareRank(float scoreA, String idA, float scoreB, String idB) {
        if (scoreA > scoreB) return -1;
        if (scoreA < scoreB) return 1;
        return -compareIds(idA, idB);
    }

    /**
     * strcmp over UTF-8 bytes, i.e. Unicode code point order ({@link String#compareTo} compares
     * UTF-16 units, which differs above U+D7FF).
     */
    public static int compareIds(String a, String b) {
        int i = 0, j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i), cb = b.codePointAt(j);
            if (ca != cb) return ca < cb ? -1 : 1;
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    /**
     * Positions of {@code ids}/{@code scores} in trec_eval order (best first). Insertion sort:
     * lists are top-k (~100) long and usually arrive sorted.
     */
    public static int[] trecOrder(String[] ids, float[] scores) {
        if (ids.length != scores.length) throw new IllegalArgumentException(ids.length + " ids but " + scores.length + " scores");
        int n = ids.length;
        int[] ord = new int[n];
        for (int i = 0; i < n; i++) {
            int j = i;
            while (j > 0 && compareRank(scores[i], ids[i], scores[ord[j - 1]], ids[ord[j - 1]]) < 0) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = i;
        }
        return ord;
    }

    /**
     * One query's value of {@code m}. {@code ids}/{@code scores}: the retrieved documents (any
     * order; re-ranked here as trec_eval does); {@code judged}: doc id → grade for this query.
     */
    public static double score(Metric m, String[] ids, float[] scores, Map<String, Integer> judged) {
        int[] ord = trecOrder(ids, scores);
        int k = Math.min(m.k(), ord.length);
        switch (m.measure()) {
            case NDCG: {
                double dcg = 0;
                for (int r = 0; r < k; r++) {
                    int g = grade(judged, ids[ord[r]]);
                    if (g > 0) dcg += g / log2(r + 2); // rank r+1 → discount 1/log2(rank+1)
                }
                double idcg = idealDcg(judged, m.k());
                return idcg > 0 ? dcg / idcg : 0;
            }
            case RECALL: {
                int rel = relevantJudged(judged);
                if (rel == 0) return 0;
                int found = 0;
                for (int r = 0; r < k; r++) if (grade(judged, ids[ord[r]]) >= 1) found++;
                return (double) found / rel;
            }
            case MAP: {
                int rel = relevantJudged(judged);
                if (rel == 0) return 0;
                int found = 0;
                double sum = 0;
                for (int r = 0; r < k; r++)
                    if (grade(judged, ids[ord[r]]) >= 1) sum += (double) ++found / (r + 1);
                return sum / rel;
            }
            case MRR: {
                for (int r = 0; r < k; r++) if (grade(judged, ids[ord[r]]) > 0) return 1.0 / (r + 1);
                return 0;
            }
            default: throw new AssertionError(m);
        }
    }

    /** The mean of {@code m} over queries; {@code ids[q]}, {@code scores[q]}, {@code judged[q]} per query. */
    public static double mean(Metric m, String[][] ids, float[][] scores, java.util.List<Map<String, Integer>> judged) {
        if (ids.length == 0) throw new IllegalArgumentException("no queries to evaluate");
        double s = 0;
        for (int q = 0; q < ids.length; q++) s += score(m, ids[q], scores[q], judged.get(q));
        return s / ids.length;
    }

    /** DCG of the best possible ranking: judged grades &gt; 0, descending, cut at k. */
    static double idealDcg(Map<String, Integer> judged, int k) {
        int n = 0;
        int[] g = new int[judged.size()];
        for (int v : judged.values()) if (v > 0) g[n++] = v;
        java.util.Arrays.sort(g, 0, n);
        double idcg = 0;
        for (int r = 0; r < Math.min(k, n); r++) idcg += g[n - 1 - r] / log2(r + 2);
        return idcg;
    }

    private static int relevantJudged(Map<String, Integer> judged) {
        int n = 0;
        for (int v : judged.values()) if (v >= 1) n++;
        return n;
    }

    private static int grade(Map<String, Integer> judged, String id) {
        Integer g = judged.get(id);
        return g == null ? 0 : g;
    }

    private static double log2(double x) { return Math.log(x) / Math.log(2); }
}
