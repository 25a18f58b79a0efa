package rrj.router;

import rrj.model.Json;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.GZIPInputStream;

/**
 * BEIR datasets on disk (Thakur et al. 2021, {@code beir.datasets.data_loader.GenericDataLoader}):
 * {@code corpus.jsonl} ({@code _id}, {@code title}, {@code text}), {@code queries.jsonl}
 * ({@code _id}, {@code text}) and {@code qrels/<split>.tsv} (a header line, then
 * {@code query-id corpus-id score}), each file optionally gzipped ({@code .gz}).
 *
 * <p>As BEIR: document text = {@code title + " " + text} when the title is non-empty, else
 * {@code text}; only queries named in the qrels are evaluated, in qrels order; judgments are
 * kept as given (also those naming documents missing from the corpus: trec_eval counts them in
 * the ideal DCG and in recall's denominator, so dropping them would change the figures).
 * Unlike BEIR, qrels rows naming unknown ids are counted and reported instead of crashing or
 * passing silently, and malformed lines are errors naming the file and line.
 *
 * <p>Not here: downloading, other layouts (TREC topics, MS MARCO tsv), streaming corpora too
 * large for memory.
 */
public final class Beir {
    private Beir() {}

    /** A malformed dataset file; the message names the file, the line and the key. */
    public static final class DataException extends RuntimeException {
        public DataException(String message) { super(message); }
    }

    /** Documents in file order. {@code texts} already carry {@code passagePrefix} ("" for none). */
    public record Corpus(Path file, String passagePrefix, String[] ids, String[] texts) {
        public int size() { return ids.length; }

        /** doc id → row, for self-match exclusion and qrels checks. */
        public Map<String, Integer> index() {
            Map<String, Integer> m = new HashMap<>(ids.length * 2);
            for (int i = 0; i < ids.length; i++) m.put(ids[i], i);
            return m;
        }
    }

    /**
     * Queries with their judgments, aligned by position: {@code qrels.get(i)} maps doc id →
     * grade for query {@code ids[i]}. {@code texts} already carry the query prefix, if any.
     */
    public record Queries(String[] ids, String[] texts, List<Map<String, Integer>> qrels) {
        public int size() { return ids.length; }
    }

    /**
     * A loaded split. {@code unknownQueryRows}: qrels rows whose query id is not in the
     * queries file (dropped); {@code unknownDocRows}: rows whose doc id is not in the corpus
     * (kept, see the class comment).
     */
    public record Dataset(String name, Path dir, String split, Corpus corpus, Queries queries,
                          int qrelRows, int unknownQueryRows, int unknownDocRows) {}

    /** Loads with no prefixes, warnings to stderr. */
    public static Dataset load(Path dir, String split) throws IOException {
        return load(dir, split, "", "", System.err);
    }

    /**
     * Loads {@code dir}/corpus.jsonl[.gz], queries.jsonl[.gz] and qrels/{@code split}.tsv[.gz].
     * {@code queryPrefix}/{@code passagePrefix} are prepended to every query/document text
     * (e5: "query: " and "passage: "; "" for none). One warning line goes to {@code warn}
     * (may be null) when qrels name unknown ids.
     */
    public static Dataset load(Path dir, String split, String queryPrefix, String passagePrefix, PrintStream warn)
            throws IOException {
        if (!Files.isDirectory(dir)) throw new NoSuchFileException(dir.toString(), null, "dataset directory not found");
        Corpus corpus = readCorpus(find(dir.resolve("corpus.jsonl")), passagePrefix);
        Map<String, String> queryText = readQueries(find(dir.resolve("queries.jsonl")));
        Path qrelFile = find(dir.resolve("qrels").resolve(split + ".tsv"));
        Map<String, Integer> docRow = corpus.index();

        // query id → (doc id → grade), in order of first appearance
        Map<String, Map<String, Integer>> qrels = new LinkedHashMap<>();
        int rows = 0, unknownQ = 0, unknownD = 0;
        try (BufferedReader r = reader(qrelFile)) {
            String line = r.readLine(); // header, skipped whatever it says (as BEIR's csv reader does)
            if (line == null) throw new DataException(qrelFile + ": empty file (expected a header line and query-id, corpus-id, score rows)");
            int lineNo = 1;
            while ((line = r.readLine()) != null) {
                lineNo++;
                if (line.isBlank()) continue;
                String[] f = line.split("\t", -1);
                if (f.length != 3)
                    throw new DataException(qrelFile + ":" + lineNo + ": expected 3 tab-separated columns (query-id, corpus-id, score), got " + f.length);
                int grade;
                try {
                    grade = Integer.parseInt(f[2].strip());
                } catch (NumberFormatException e) {
                    throw new DataException(qrelFile + ":" + lineNo + ": score '" + f[2] + "' is not an integer");
                }
                String qid = f[0].strip(), did = f[1].strip();
                if (qid.isEmpty() || did.isEmpty()) throw new DataException(qrelFile + ":" + lineNo + ": empty query-id or corpus-id");
                rows++;
                if (!queryText.containsKey(qid)) { unknownQ++; continue; }
                if (!docRow.containsKey(did)) unknownD++;
                Map<String, Integer> judged = qrels.get(qid);
                if (judged == null) qrels.put(qid, judged = new LinkedHashMap<>());
                judged.put(did, grade); // a repeated pair: the last row wins, as in BEIR's dict
            }
        }
        if (qrels.isEmpty())
            throw new DataException(qrelFile + ": no judgments for any query of " + find(dir.resolve("queries.jsonl")) + " (" + rows + " rows)");
        String[] ids = qrels.keySet().toArray(new String[0]);
        String[] texts = new String[ids.length];
        List<Map<String, Integer>> judged = new ArrayList<>(ids.length);
        for (int i = 0; i < ids.length; i++) {
            texts[i] = queryPrefix + queryText.get(ids[i]);
            judged.add(qrels.get(ids[i]));
        }
        if ((unknownQ > 0 || unknownD > 0) && warn != null)
            warn.println("warning: " + qrelFile + ": " + unknownQ + " of " + rows + " rows name a query not in the queries file (dropped), "
                    + unknownD + " name a document not in the corpus (kept as judged, never retrieved)");
        return new Dataset(datasetName(dir), dir, split, corpus, new Queries(ids, texts, judged), rows, unknownQ, unknownD);
    }

    /**
     * BEIR's generated training queries ({@code generated-queries.train.jsonl[.gz]}: one record
     * {@code {_id, title, text, query}} per line, {@code _id} the source document). Each line
     * becomes a query {@code gen-<line>} judged relevant (grade 1) to its source document only.
     * {@code limit} ≤ 0 reads all.
     */
    public static Queries loadGeneratedQueries(Path file, String queryPrefix, int limit) throws IOException {
        Path f = find(file);
        List<String> ids = new ArrayList<>(), texts = new ArrayList<>();
        List<Map<String, Integer>> qrels = new ArrayList<>();
        try (BufferedReader r = reader(f)) {
            String line;
            int lineNo = 0;
            while ((line = r.readLine()) != null && (limit <= 0 || ids.size() < limit)) {
                lineNo++;
                if (line.isBlank()) continue;
                Map<String, Object> o = object(f, lineNo, line);
                String doc = string(f, lineNo, o, "_id", true);
                ids.add("gen-" + lineNo);
                texts.add(queryPrefix + string(f, lineNo, o, "query", true));
                qrels.add(Map.of(doc, 1));
            }
        }
        if (ids.isEmpty()) throw new DataException(f + ": no queries");
        return new Queries(ids.toArray(new String[0]), texts.toArray(new String[0]), qrels);
    }

    /** Reads a corpus file: document text = title + " " + text, or text when the title is empty. */
    public static Corpus readCorpus(Path file, String passagePrefix) throws IOException {
        List<String> ids = new ArrayList<>(), texts = new ArrayList<>();
        Map<String, Integer> seen = new HashMap<>();
        try (BufferedReader r = reader(file)) {
            String line;
            int lineNo = 0;
            while ((line = r.readLine()) != null) {
                lineNo++;
                if (line.isBlank()) continue;
                Map<String, Object> o = object(file, lineNo, line);
                String id = string(file, lineNo, o, "_id", true);
                String title = string(file, lineNo, o, "title", false);
                String text = string(file, lineNo, o, "text", true);
                Integer before = seen.put(id, lineNo);
                if (before != null) throw new DataException(file + ":" + lineNo + ": duplicate _id '" + id + "' (first on line " + before + ")");
                ids.add(id);
                texts.add(passagePrefix + (title == null || title.isEmpty() ? text : title + " " + text));
            }
        }
        if (ids.isEmpty()) throw new DataException(file + ": the corpus is empty (no documents)");
        return new Corpus(file, passagePrefix, ids.toArray(new String[0]), texts.toArray(new String[0]));
    }

    /**
     * A dataset's name: its directory's name, after resolving "." and ".." — the key of its
     * corpus index in the cache and of its column in evaluation reports.
     */
    public static String datasetName(Path dir) {
        Path n = dir.toAbsolutePath().normalize().getFileName();
        return n == null ? dir.toAbsolutePath().toString() : n.toString();
    }

    /** The titles of a corpus file in file order ("" where a document has none): for display. */
    public static String[] readTitles(Path file) throws IOException {
        List<String> titles = new ArrayList<>();
        try (BufferedReader r = reader(file)) {
            String line;
            int lineNo = 0;
            while ((line = r.readLine()) != null) {
                lineNo++;
                if (line.isBlank()) continue;
                String t = string(file, lineNo, object(file, lineNo, line), "title", false);
                titles.add(t == null ? "" : t);
            }
        }
        return titles.toArray(new String[0]);
    }

    /**
     * The training queries of a dataset: {@code qrels/train.tsv} when there is one, else the
     * generated queries; at most {@code limit} of them (≤ 0: all), a seeded sample, in file order.
     */
    public static Queries trainingQueries(Path dir, String queryPrefix, int limit, long seed, PrintStream warn) throws IOException {
        Queries q;
        if (Files.exists(dir.resolve("qrels/train.tsv")) || Files.exists(dir.resolve("qrels/train.tsv.gz")))
            q = load(dir, "train", queryPrefix, "", warn).queries();
        else if (Files.exists(dir.resolve("generated-queries.train.jsonl")) || Files.exists(dir.resolve("generated-queries.train.jsonl.gz")))
            q = loadGeneratedQueries(dir.resolve("generated-queries.train.jsonl"), queryPrefix, 0);
        else
            throw new NoSuchFileException(dir.toString(), null, "no training data (expected qrels/train.tsv or generated-queries.train.jsonl[.gz])");
        if (limit <= 0 || q.size() <= limit) return q;
        int[] idx = new int[q.size()];
        for (int i = 0; i < idx.length; i++) idx[i] = i;
        java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
        for (int i = 0; i < limit; i++) { int j = i + r.nextInt(idx.length - i); int t = idx[i]; idx[i] = idx[j]; idx[j] = t; }
        int[] keep = java.util.Arrays.copyOf(idx, limit);
        java.util.Arrays.sort(keep);
        String[] ids = new String[limit], texts = new String[limit];
        List<Map<String, Integer>> qrels = new ArrayList<>(limit);
        for (int i = 0; i < limit; i++) { ids[i] = q.ids()[keep[i]]; texts[i] = q.texts()[keep[i]]; qrels.add(q.qrels().get(keep[i])); }
        return new Queries(ids, texts, qrels);
    }

    /** Reads a queries file into id → text (file order). */
    public static Map<String, String> readQueries(Path file) throws IOException {
        Map<String, String> out = new LinkedHashMap<>();
        try (BufferedReader r = reader(file)) {
            String line;
            int lineNo = 0;
            while ((line = r.readLine()) != null) {
                lineNo++;
                if (line.isBlank()) continue;
                Map<String, Object> o = object(file, lineNo, line);
                String id = string(file, lineNo, o, "_id", true);
                if (out.put(id, string(file, lineNo, o, "text", true)) != null)
                    throw new DataException(file + ":" + lineNo + ": duplicate _id '" + id + "'");
            }
        }
        if (out.isEmpty()) throw new DataException(file + ": no queries");
        return out;
    }

    /** {@code file} if it exists (preferred when both do), else {@code file.gz}; neither → NoSuchFileException naming both. */
    public static Path find(Path file) throws NoSuchFileException {
        if (Files.isRegularFile(file)) return file;
        Path gz = file.resolveSibling(file.getFileName() + ".gz");
        if (Files.isRegularFile(gz)) return gz;
        if (file.getFileName().toString().endsWith(".gz")) {
            String n = file.getFileName().toString();
            Path plain = file.resolveSibling(n.substring(0, n.length() - 3));
            if (Files.isRegularFile(plain)) return plain;
        }
        throw new NoSuchFileException(file.toString(), null, "not found (nor " + gz.getFileName() + ")");
    }

    static BufferedReader reader(Path file) throws IOException {
        InputStream in = Files.newInputStream(file);
        try {
            if (file.getFileName().toString().endsWith(".gz")) in = new GZIPInputStream(in, 1 << 16);
        } catch (IOException e) {
            in.close();
            throw new IOException(file + ": not a gzip file: " + e.getMessage(), e);
        }
        return new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8), 1 << 16);
    }

    private static Map<String, Object> object(Path file, int lineNo, String line) {
        Object v;
        try {
            v = Json.parse(line);
        } catch (Json.JsonException e) {
            // the parser counts lines within this one line: report its column only
            throw new DataException(file + ":" + lineNo + ": not valid JSON: " + e.getMessage().replace("at line 1, column", "at column"));
        }
        if (!(v instanceof Map<?, ?>)) throw new DataException(file + ":" + lineNo + ": expected a JSON object");
        @SuppressWarnings("unchecked") Map<String, Object> m = (Map<String, Object>) v;
        return m;
    }

    /** A string field; ids given as JSON numbers are accepted and written as integers. */
    private static String string(Path file, int lineNo, Map<String, Object> o, String key, boolean required) {
        Object v = o.get(key);
        if (v == null) {
            if (required) throw new DataException(file + ":" + lineNo + ": missing field '" + key + "'");
            return null;
        }
        if (v instanceof String s) return s;
        if (v instanceof Long l && key.equals("_id")) return Long.toString(l);
        throw new DataException(file + ":" + lineNo + ": field '" + key + "' must be a string, got " + v.getClass().getSimpleName());
    }
}
