package rrj.router;

import rrj.engine.Tensor;
import rrj.model.Encoder;
import rrj.model.LoraAdapter;
import rrj.model.LoraTrainer;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;

/**
 * {@code rr train-expert}: trains one LoRA expert (or the multi-task expert, over several
 * datasets at once) with {@link LoraTrainer}, on (query, positive document) pairs from BEIR
 * train qrels or BEIR generated-queries files.
 *
 * <p>Documents come from each dataset's base-encoder corpus index (the frozen document side,
 * computed once and shared with retrieval). A dev split (by query, fixed seed) is held out;
 * every {@code validateEvery} steps the expert is scored by nDCG@10 of the dev queries
 * against the full corpus, the best adapter is written to {@code out}, and a checkpoint
 * (adapter + optimiser state) goes to {@code checkpoint}, from which an interrupted run
 * resumes with the same batches in the same order.
 */
public final class ExpertTraining {
    private ExpertTraining() {}

    public record Options(String name, List<Path> data, Path out, Path checkpoint, Path indexCache, int epochs, int batch,
                          int maxPairsPerDataset, double devFraction, int maxDev, int validateEvery, LoraTrainer.Hyper hyper,
                          PrintStream log) {}

    /** What a run did: best dev nDCG@10, the step it was reached, steps, skipped pairs, seconds. */
    public record Result(double bestDev, int bestStep, int steps, int skippedPairs, double seconds) {}

    /** One dataset's training pairs and dev split. */
    record Data(String name, CorpusIndex index, Map<String, Integer> docRow, List<String> queries, List<int[]> positives,
                int skipped, int devCount) {}

    public static Result run(Encoder enc, Options o) throws IOException {
        PrintStream log = o.log();
        List<Data> sets = new ArrayList<>();
        int skipped = 0;
        for (Path dir : o.data()) {
            Data d = load(enc, dir, o);
            skipped += d.skipped();
            log.printf("%s: %d training queries, %d held out for dev, %d pairs skipped (positive not in the corpus)%n",
                    d.name(), d.queries().size() - d.devCount(), d.devCount(), d.skipped());
            sets.add(d);
        }
        List<int[][]> batches = plan(sets, o); // each batch: rows of {dataset, query, docRow}
        if (batches.isEmpty()) throw new IllegalArgumentException("empty training set: no batch of " + o.batch() + " pairs could be formed");
        LoraTrainer tr = new LoraTrainer(o.name(), enc, o.hyper(), batches.size());
        double best = -1;
        int bestStep = 0;
        if (LoraTrainer.hasCheckpoint(o.checkpoint())) {
            Map<String, String> meta = tr.resume(o.checkpoint());
            best = Double.parseDouble(meta.getOrDefault("best_dev", "-1"));
            bestStep = Integer.parseInt(meta.getOrDefault("best_step", "0"));
            log.printf("resuming %s from step %d of %d (best dev nDCG@10 so far %.4f)%n", o.checkpoint(), tr.step, batches.size(), best);
        } else {
            double base = validate(enc, sets, null);
            log.printf("base model dev nDCG@10 %.4f (%d steps planned)%n", base, batches.size());
        }
        long t0 = System.nanoTime();
        int startStep = tr.step;
        double lossAvg = Double.NaN;
        while (tr.step < batches.size()) {
            int[][] b = batches.get(tr.step);
            int[][] ids = new int[b.length][];
            float[][] docs = new float[b.length][];
            for (int i = 0; i < b.length; i++) {
                Data d = sets.get(b[i][0]);
                ids[i] = enc.tokenize(d.queries().get(b[i][1]));
                docs[i] = row(d.index().embeddings, b[i][2]);
            }
            double loss;
            try {
                loss = tr.step(ids, docs);
            } catch (LoraTrainer.DivergedException e) {
                throw new LoraTrainer.DivergedException(e.getMessage() + "; training stopped, the last good checkpoint is " + o.checkpoint()
                        + " and the best adapter " + o.out());
            }
            lossAvg = Double.isNaN(lossAvg) ? loss : 0.95 * lossAvg + 0.05 * loss;
            double perStep = (System.nanoTime() - t0) / 1e9 / (tr.step - startStep);
            progress(log, tr.step, batches.size(), lossAvg, perStep, tr.learningRate(tr.step - 1));
            if (tr.step % o.validateEvery() == 0 || tr.step == batches.size()) {
                double dev = validate(enc, sets, tr.adapter);
                boolean improved = dev > best;
                if (improved) { best = dev; bestStep = tr.step; tr.adapter.save(o.out()); }
                Map<String, String> meta = new LinkedHashMap<>();
                meta.put("best_dev", Double.toString(best));
                meta.put("best_step", Integer.toString(bestStep));
                tr.checkpoint(o.checkpoint(), meta);
                log.printf("%nstep %d: dev nDCG@10 %.4f%s (best %.4f at step %d)%n", tr.step, dev, improved ? " *" : "", best, bestStep);
            }
        }
        return new Result(best, bestStep, batches.size(), skipped, (System.nanoTime() - t0) / 1e9);
    }

    private static void progress(PrintStream log, int step, int total, double loss, double perStep, double lr) {
        boolean tty = System.console() != null;
        if (!tty && step % Math.max(1, total / 20) != 0 && step != total) return;
        double eta = perStep * (total - step);
        String pace = perStep >= 1 ? String.format("%.2f s/step", perStep) : String.format("%.1f ms/step", perStep * 1e3); // ms on a GPU
        log.printf("%sstep %d/%d  loss %.4f  lr %.2e  %s  ETA %dm%02ds%s", tty ? "\r" : "", step, total, loss, lr, pace,
                (int) eta / 60, (int) eta % 60, tty ? "" : "\n");
    }

    private static float[] row(Tensor t, int r) {
        int c = (int) t.dim(1);
        float[] out = new float[c];
        java.lang.foreign.MemorySegment.copy(t.data, Tensor.F32, (long) r * c * 4, out, 0, c);
        return out;
    }

    static Data load(Encoder enc, Path dir, Options o) throws IOException {
        Beir.Corpus corpus;
        Beir.Queries q;
        Path gen = dir.resolve("generated-queries.train.jsonl");
        boolean hasQrels = Files.exists(dir.resolve("qrels/train.tsv")) || Files.exists(dir.resolve("qrels/train.tsv.gz"));
        boolean hasGen = Files.exists(gen) || Files.exists(Path.of(gen + ".gz"));
        if (hasQrels) {
            Beir.Dataset ds = Beir.load(dir, "train", "", "", o.log());
            corpus = ds.corpus();
            q = ds.queries();
        } else if (hasGen) {
            corpus = Beir.readCorpus(Beir.find(dir.resolve("corpus.jsonl")), "");
            q = Beir.loadGeneratedQueries(gen, "", 0);
        } else {
            throw new IllegalArgumentException(dir + ": no training data (expected qrels/train.tsv or generated-queries.train.jsonl[.gz])");
        }
        String name = Beir.datasetName(dir);
        CorpusIndex index = CorpusIndex.obtain(CorpusIndex.cacheDir(o.indexCache(), name, enc), enc, corpus, false, o.log());
        Map<String, Integer> docRow = corpus.index();
        List<String> queries = new ArrayList<>();
        List<int[]> positives = new ArrayList<>();
        int skipped = 0;
        for (int i = 0; i < q.size(); i++) {
            List<Integer> pos = new ArrayList<>();
            for (Map.Entry<String, Integer> e : q.qrels().get(i).entrySet()) {
                if (e.getValue() <= 0) continue;
                Integer r = docRow.get(e.getKey());
                if (r == null) skipped++;
                else pos.add(r);
            }
            if (pos.isEmpty()) continue;
            queries.add(q.texts()[i]);
            positives.add(pos.stream().mapToInt(Integer::intValue).toArray());
        }
        if (queries.isEmpty()) throw new IllegalArgumentException(dir + ": empty training set (no query has a positive document in the corpus; " + skipped + " pairs skipped)");
        // dev split by query: a seeded shuffle, the first part held out
        SplittableRandom r = new SplittableRandom(o.hyper().seed() ^ name.hashCode());
        int[] perm = shuffled(queries.size(), r);
        int dev = (int) Math.min(o.maxDev(), Math.max(1, Math.round(o.devFraction() * queries.size())));
        if (queries.size() - dev < 2) throw new IllegalArgumentException(dir + ": too few training queries (" + queries.size() + ") for a dev split");
        List<String> qs = new ArrayList<>();
        List<int[]> ps = new ArrayList<>();
        for (int i : perm) { qs.add(queries.get(i)); ps.add(positives.get(i)); }
        return new Data(name, index, docRow, qs, ps, skipped, dev);
    }

    private static int[] shuffled(int n, SplittableRandom r) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) { int j = r.nextInt(i + 1); int t = p[i]; p[i] = p[j]; p[j] = t; }
        return p;
    }

    /**
     * Every batch of every epoch, fixed by the seed: pairs (dataset, query, positive) of the
     * non-dev queries, shuffled per epoch, cut into batches in which no document and no query
     * text repeats (a repeat would be a false in-batch negative).
     */
    static List<int[][]> plan(List<Data> sets, Options o) {
        List<int[]> pairs = new ArrayList<>();
        for (int s = 0; s < sets.size(); s++) {
            Data d = sets.get(s);
            List<int[]> mine = new ArrayList<>();
            for (int qi = d.devCount(); qi < d.queries().size(); qi++) for (int doc : d.positives().get(qi)) mine.add(new int[]{s, qi, doc});
            if (o.maxPairsPerDataset() > 0 && mine.size() > o.maxPairsPerDataset()) {
                int[] p = shuffled(mine.size(), new SplittableRandom(o.hyper().seed() + 17 * s));
                List<int[]> sub = new ArrayList<>();
                for (int i = 0; i < o.maxPairsPerDataset(); i++) sub.add(mine.get(p[i]));
                mine = sub;
            }
            pairs.addAll(mine);
        }
        List<int[][]> out = new ArrayList<>();
        for (int e = 0; e < o.epochs(); e++) {
            int[] p = shuffled(pairs.size(), new SplittableRandom(o.hyper().seed() * 31 + e));
            List<int[]> pending = new ArrayList<>();
            for (int i : p) pending.add(pairs.get(i));
            while (pending.size() >= o.batch()) {
                List<int[]> batch = new ArrayList<>();
                Set<Long> docs = new HashSet<>();
                Set<String> texts = new HashSet<>();
                List<int[]> rest = new ArrayList<>();
                for (int[] x : pending) {
                    String text = sets.get(x[0]).queries().get(x[1]);
                    long docKey = ((long) x[0] << 32) | x[2];
                    if (batch.size() < o.batch() && !docs.contains(docKey) && !texts.contains(text)) {
                        batch.add(x); docs.add(docKey); texts.add(text);
                    } else rest.add(x);
                }
                if (batch.size() < o.batch()) break; // the remainder cannot form a full batch without repeats
                out.add(batch.toArray(new int[0][]));
                pending = rest;
            }
        }
        return out;
    }

    /** Mean over datasets of the dev queries' nDCG@10 with {@code adapter} (null: the base model). */
    static double validate(Encoder enc, List<Data> sets, LoraAdapter adapter) {
        Search search = new Search(enc.bert.backend());
        double sum = 0;
        for (Data d : sets) {
            List<String> texts = d.queries().subList(0, d.devCount());
            LoraAdapter[] experts = null;
            if (adapter != null) { experts = new LoraAdapter[texts.size()]; java.util.Arrays.fill(experts, adapter); }
            float[][] q = enc.embed(texts, experts);
            Search.Hits[] hits = search.topK(d.index(), q, 10, false, null);
            String[][] ids = new String[hits.length][];
            float[][] scores = new float[hits.length][];
            List<Map<String, Integer>> judged = new ArrayList<>();
            for (int i = 0; i < hits.length; i++) {
                ids[i] = hits[i].ids();
                scores[i] = hits[i].scores();
                Map<String, Integer> j = new LinkedHashMap<>();
                for (int doc : d.positives().get(i)) j.put(d.index().docIds[doc], 1);
                judged.add(j);
            }
            sum += Metrics.mean(Metrics.Metric.NDCG_10, ids, scores, judged);
        }
        return sum / sets.size();
    }
}
