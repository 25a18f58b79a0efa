package rrj.router;

import rrj.engine.DType;
import rrj.engine.Tensor;
import rrj.model.Json;
import rrj.model.Safetensors;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * The routing math of RouterRetriever (arXiv 2409.02685, DESIGN §2), on plain vectors: how
 * embeddings and per-query scores are produced is someone else's business.
 *
 * <ul>
 * <li><b>Pilots.</b> For a training dataset d and each of its queries q: g*(q) = the expert
 *     with the best nDCG@10 (ties: the first in configured order); group d's queries by g*;
 *     each group's pilot = mean of E(q) over the group (k-means with k = 1). So each dataset
 *     gives at most one pilot per expert: T datasets → at most T per expert, T² in all.</li>
 * <li><b>router</b> (the paper): score(g) = mean over g's pilots of E(q)·pilot; argmax.
 *     Experts without pilots get no score and are never chosen.</li>
 * <li><b>router-nearest</b> (the official code): the expert of the single most similar pilot.</li>
 * <li><b>dataset-router</b>: the nearest of up to 100 sampled training queries per dataset
 *     (fixed seed) names a dataset, whose expert is chosen.</li>
 * <li><b>Oracles</b> from per-query per-expert metric values: dataset-oracle (one expert per
 *     test set, best on average) and instance-oracle (per query its best; an upper bound).</li>
 * </ul>
 * Every argmax here breaks ties towards the first expert (lowest index). Similarity is the
 * plain dot product of base embeddings, as retrieval scores are.
 */
public final class Routing {
    private Routing() {}

    /** One pilot embedding: the mean base embedding of {@code queries} queries of {@code dataset}. */
    public record Pilot(String dataset, int queries, float[] vector) {}

    /** Pilots per expert (experts in configured order). Mutable while built, then read-only in use. */
    public static final class PilotTable {
        public final List<String> experts;
        private final List<List<Pilot>> pilots = new ArrayList<>();
        private int dim = -1;

        public PilotTable(List<String> experts) {
            if (experts.isEmpty()) throw new IllegalArgumentException("a pilot table needs at least one expert");
            if (new java.util.HashSet<>(experts).size() != experts.size()) throw new IllegalArgumentException("duplicate expert names in " + experts);
            this.experts = List.copyOf(experts);
            for (int g = 0; g < experts.size(); g++) pilots.add(new ArrayList<>());
        }

        public List<Pilot> pilots(int expert) { return java.util.Collections.unmodifiableList(pilots.get(expert)); }

        public int expert(String name) {
            int g = experts.indexOf(name);
            if (g < 0) throw new IllegalArgumentException("unknown expert '" + name + "' (experts: " + String.join(", ", experts) + ")");
            return g;
        }

        public void add(int expert, Pilot p) {
            if (dim < 0) dim = p.vector().length;
            else if (p.vector().length != dim)
                throw new IllegalArgumentException("pilot of dimension " + p.vector().length + " in a table of dimension " + dim);
            pilots.get(expert).add(p);
        }

        public int count() {
            int n = 0;
            for (List<Pilot> l : pilots) n += l.size();
            return n;
        }

        /** Vector width, or -1 while empty. */
        public int dimension() { return dim; }

        static final String META_KEY = "rrj.pilot_table";

        /** Writes tensor "pilots" [P, C] and metadata (experts, and per row its expert, dataset and query count) atomically. */
        public void save(Path file) throws IOException {
            int p = count(), c = Math.max(dim, 0);
            Tensor t = Tensor.allocate(Arena.ofAuto(), p, c);
            List<Object> rows = new ArrayList<>();
            int i = 0;
            for (int g = 0; g < experts.size(); g++)
                for (Pilot pi : pilots.get(g)) {
                    MemorySegment.copy(pi.vector(), 0, t.data, Tensor.F32, (long) i++ * c * 4, c);
                    Map<String, Object> r = new LinkedHashMap<>();
                    r.put("expert", experts.get(g));
                    r.put("dataset", pi.dataset());
                    r.put("queries", (long) pi.queries());
                    rows.add(r);
                }
            Map<String, Object> meta = new LinkedHashMap<>();
            meta.put("experts", new ArrayList<Object>(experts));
            meta.put("pilots", rows);
            Safetensors.write(file, Map.of("pilots", t), Map.of(META_KEY, Json.write(meta)));
        }

        /** Reads a table written by {@link #save}; every inconsistency names the file and key. */
        public static PilotTable load(Path file) throws IOException {
            try (Arena arena = Arena.ofConfined()) {
                Safetensors.File st = Safetensors.open(file, arena);
                Tensor t = st.get("pilots");
                if (t.dtype != DType.F32 || t.rank() != 2)
                    throw new Safetensors.FormatException(file + ": tensor 'pilots' must be F32 [P, C], got " + t);
                String raw = st.metadata().get(META_KEY);
                if (raw == null) throw new Safetensors.FormatException(file + ": missing metadata '" + META_KEY + "' (not a pilot table?)");
                Map<String, Object> meta;
                try {
                    meta = Json.parseObject(raw);
                } catch (Json.JsonException e) {
                    throw new Safetensors.FormatException(file + ": metadata '" + META_KEY + "' is not valid JSON: " + e.getMessage());
                }
                if (!(meta.get("experts") instanceof List<?> ex) || ex.isEmpty())
                    throw new Safetensors.FormatException(file + ": metadata '" + META_KEY + "': 'experts' must be a non-empty list");
                List<String> experts = new ArrayList<>();
                for (Object o : ex) experts.add(String.valueOf(o));
                PilotTable table = new PilotTable(experts);
                if (!(meta.get("pilots") instanceof List<?> rows) || rows.size() != t.dim(0))
                    throw new Safetensors.FormatException(file + ": metadata '" + META_KEY + "': 'pilots' must list one entry per row of 'pilots' ("
                            + t.dim(0) + ")");
                int c = (int) t.dim(1);
                for (int i = 0; i < rows.size(); i++) {
                    if (!(rows.get(i) instanceof Map<?, ?> r) || !(r.get("expert") instanceof String e)
                            || !(r.get("dataset") instanceof String d) || !(r.get("queries") instanceof Long n))
                        throw new Safetensors.FormatException(file + ": metadata '" + META_KEY + "': pilots[" + i
                                + "] needs string 'expert', string 'dataset' and integer 'queries'");
                    int g = experts.indexOf(e);
                    if (g < 0) throw new Safetensors.FormatException(file + ": pilots[" + i + "]: expert '" + e + "' is not in 'experts'");
                    float[] v = new float[c];
                    MemorySegment.copy(t.data, Tensor.F32, (long) i * c * 4, v, 0, c);
                    table.add(g, new Pilot(d, (int) (long) n, v));
                }
                return table;
            }
        }
    }

    /** Index of the largest value, ties → the first; NaN entries are skipped; -1 if all are NaN. */
    public static int argmax(double[] v) {
        int best = -1;
        for (int i = 0; i < v.length; i++)
            if (!Double.isNaN(v[i]) && (best < 0 || v[i] > v[best])) best = i;
        return best;
    }

    /**
     * Adds one training dataset's pilots to {@code table}: {@code base[q]} = E(q),
     * {@code scores[q][g]} = nDCG@10 of expert g on query q (experts in the table's order).
     * Returns g*(q) per query.
     */
    public static int[] addPilots(PilotTable table, String dataset, float[][] base, double[][] scores) {
        int nq = base.length, ne = table.experts.size();
        if (scores.length != nq) throw new IllegalArgumentException(nq + " embeddings but " + scores.length + " score rows");
        if (nq == 0) throw new IllegalArgumentException("dataset '" + dataset + "': no training queries");
        int c = base[0].length;
        int[] best = new int[nq];
        double[][] sum = new double[ne][];
        int[] count = new int[ne];
        for (int q = 0; q < nq; q++) {
            if (scores[q].length != ne) throw new IllegalArgumentException("query " + q + ": " + scores[q].length + " scores for " + ne + " experts");
            if (base[q].length != c) throw new IllegalArgumentException("query " + q + ": dimension " + base[q].length + ", expected " + c);
            int g = argmax(scores[q]);
            if (g < 0) throw new IllegalArgumentException("dataset '" + dataset + "', query " + q + ": every expert score is NaN");
            best[q] = g;
            if (sum[g] == null) sum[g] = new double[c];
            for (int j = 0; j < c; j++) sum[g][j] += base[q][j];
            count[g]++;
        }
        for (int g = 0; g < ne; g++) {
            if (count[g] == 0) continue;
            float[] v = new float[c];
            for (int j = 0; j < c; j++) v[j] = (float) (sum[g][j] / count[g]);
            table.add(g, new Pilot(dataset, count[g], v));
        }
        return best;
    }

    /** A routing decision: the chosen expert (-1: none possible) and a score per expert (NaN: no score). */
    public record Decision(int expert, double[] scores) {}

    /** The paper's router: per expert the mean of E(q)·pilot over its pilots; argmax. */
    public static Decision route(PilotTable t, float[] e) {
        int ne = t.experts.size();
        double[] s = new double[ne];
        for (int g = 0; g < ne; g++) {
            List<Pilot> ps = t.pilots.get(g);
            if (ps.isEmpty()) { s[g] = Double.NaN; continue; }
            double sum = 0;
            for (Pilot p : ps) sum += dot(e, p.vector());
            s[g] = sum / ps.size();
        }
        return new Decision(argmax(s), s);
    }

    /** The official code's router: the expert of the most similar single pilot (per-expert score = its best pilot). */
    public static Decision routeNearest(PilotTable t, float[] e) {
        int ne = t.experts.size();
        double[] s = new double[ne];
        for (int g = 0; g < ne; g++) {
            double best = Double.NaN;
            for (Pilot p : t.pilots.get(g)) {
                double d = dot(e, p.vector());
                if (Double.isNaN(best) || d > best) best = d;
            }
            s[g] = best;
        }
        return new Decision(argmax(s), s);
    }

    /**
     * DatasetRouter: up to {@code perDataset} training queries sampled from each dataset
     * (fixed seed); a query goes to the expert of the dataset of its nearest sample.
     */
    public static final class DatasetRouter {
        public final List<String> experts;
        private final float[][] samples;
        private final int[] sampleExpert;
        private final String[] sampleDataset;

        /**
         * @param experts        experts in configured order
         * @param datasetExpert  training dataset name → the expert trained on it
         * @param trainQueries   training dataset name → base embeddings of its training queries
         */
        public DatasetRouter(List<String> experts, Map<String, String> datasetExpert, Map<String, float[][]> trainQueries,
                             int perDataset, long seed) {
            this.experts = List.copyOf(experts);
            List<float[]> s = new ArrayList<>();
            List<Integer> ge = new ArrayList<>();
            List<String> ds = new ArrayList<>();
            for (Map.Entry<String, float[][]> e : trainQueries.entrySet()) {
                String expert = datasetExpert.get(e.getKey());
                if (expert == null) throw new IllegalArgumentException("training dataset '" + e.getKey() + "' has no expert in the dataset→expert mapping");
                int g = this.experts.indexOf(expert);
                if (g < 0) throw new IllegalArgumentException("dataset '" + e.getKey() + "' maps to unknown expert '" + expert + "'");
                float[][] q = e.getValue();
                // partial Fisher–Yates with a per-dataset stream: the sample does not depend on map order
                int[] idx = new int[q.length];
                for (int i = 0; i < idx.length; i++) idx[i] = i;
                SplittableRandom r = new SplittableRandom(seed ^ e.getKey().hashCode());
                int m = Math.min(perDataset, q.length);
                for (int i = 0; i < m; i++) {
                    int j = i + r.nextInt(q.length - i);
                    int t = idx[i]; idx[i] = idx[j]; idx[j] = t;
                }
                for (int i = 0; i < m; i++) { s.add(q[idx[i]]); ge.add(g); ds.add(e.getKey()); }
            }
            if (s.isEmpty()) throw new IllegalArgumentException("dataset router: no training queries");
            samples = s.toArray(new float[0][]);
            sampleExpert = new int[ge.size()];
            for (int i = 0; i < sampleExpert.length; i++) sampleExpert[i] = ge.get(i);
            sampleDataset = ds.toArray(new String[0]);
        }

        public int samples() { return samples.length; }

        /** Per-expert score = its best sample's similarity; the chosen expert is that of the nearest sample (ties: first sample). */
        public Decision route(float[] e) {
            double[] s = new double[experts.size()];
            java.util.Arrays.fill(s, Double.NaN);
            int best = -1;
            double bestSim = 0;
            for (int i = 0; i < samples.length; i++) {
                double d = dot(e, samples[i]);
                if (best < 0 || d > bestSim) { best = i; bestSim = d; }
                int g = sampleExpert[i];
                if (Double.isNaN(s[g]) || d > s[g]) s[g] = d;
            }
            return new Decision(sampleExpert[best], s);
        }

        /** The training dataset of the nearest sample. */
        public String nearestDataset(float[] e) {
            int best = 0;
            double bestSim = dot(e, samples[0]);
            for (int i = 1; i < samples.length; i++) {
                double d = dot(e, samples[i]);
                if (d > bestSim) { best = i; bestSim = d; }
            }
            return sampleDataset[best];
        }
    }

    /** DatasetOracle: the expert with the best mean of {@code values[q][g]} over the test set (ties: first). */
    public static int datasetOracle(double[][] values) {
        if (values.length == 0) throw new IllegalArgumentException("no queries");
        double[] mean = new double[values[0].length];
        for (double[] row : values) for (int g = 0; g < mean.length; g++) mean[g] += row[g];
        for (int g = 0; g < mean.length; g++) mean[g] /= values.length;
        return argmax(mean);
    }

    /** InstanceOracle: per query, the expert with the best value (ties: first). */
    public static int[] instanceOracle(double[][] values) {
        int[] out = new int[values.length];
        for (int q = 0; q < values.length; q++) out[q] = argmax(values[q]);
        return out;
    }

    static double dot(float[] a, float[] b) {
        if (a.length != b.length) throw new IllegalArgumentException("dimension " + a.length + " vs " + b.length);
        double s = 0;
        for (int j = 0; j < a.length; j++) s += (double) a[j] * b[j];
        return s;
    }
}
