package rrj.router;

import rrj.engine.DType;
import rrj.engine.Tensor;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.model.Safetensors;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A corpus encoded once by the frozen base encoder (DESIGN §2: one index serves every expert),
 * kept on disk and memory-mapped when read back.
 *
 * <p>Layout of an index directory:
 * <pre>
 *   embeddings.safetensors   "embeddings" [n, C] fp32, metadata below
 *   doc_ids.txt              n lines, row i = doc id of row i
 *   doc_labels.tsv           n lines, row i = title TAB text start (when the title is empty),
 *                            escaped; written the first time hits are shown ({@link #labels})
 *   chunks/chunk-00000.safetensors ...   only while building (resume after an interruption)
 * </pre>
 * Metadata: {@code model_fingerprint} (sha256 of config.json, the tokenizer file, the size and
 * first/last MiB of model.safetensors), {@code model_dir}, {@code corpus_fingerprint} (sha256
 * of the corpus file bytes as stored), {@code corpus_file}, {@code pooling},
 * {@code normalize}, {@code max_length}, {@code passage_prefix}, {@code count},
 * {@code dim}. The embeddings file is written last, atomically: if it exists the index is
 * complete.
 *
 * <p>Reuse rules: {@link #obtain} with {@code explicit = false} (an index in a cache
 * directory) rebuilds when anything recorded differs; with {@code explicit = true} (a path
 * the user named) a mismatch is refused with a message naming both sides.
 *
 * <p>Encoding runs in chunks of {@link #CHUNK} documents, each written atomically to its own
 * file (tagged with a build key, so stale chunks of another model or corpus are not reused),
 * then the chunks are concatenated into the final file without loading them all.
 * Not here: sorting by length (the engine packs sequences without padding), quantised
 * storage, approximate search structures.
 */
public final class CorpusIndex implements AutoCloseable {
    public static final String EMBEDDINGS = "embeddings.safetensors";
    public static final String DOC_IDS = "doc_ids.txt";
    public static final String DOC_LABELS = "doc_labels.tsv";
    /** Characters of a document's text kept as its label when it has no title. */
    static final int SNIPPET_CHARS = 1000;
    static final int FORMAT = 1;
    /** Documents per chunk file. */
    public static final int CHUNK = 1024;
    /** Texts per {@link Encoder#embed} call. */
    public static final int BATCH = 48;

    public final Path dir;
    /** Document id of each row. */
    public final String[] docIds;
    /** [n, C] fp32, a read-only slice of the mapped file. */
    public final Tensor embeddings;
    public final Map<String, String> metadata;
    private final Arena arena;
    private float[] inverseNorms; // lazily, for cosine search over an unnormalised index

    private CorpusIndex(Path dir, String[] docIds, Tensor embeddings, Map<String, String> metadata, Arena arena) {
        this.dir = dir;
        this.docIds = docIds;
        this.embeddings = embeddings;
        this.metadata = metadata;
        this.arena = arena;
    }

    public int size() { return docIds.length; }

    public int dimension() { return (int) embeddings.dim(1); }

    /** Whether the stored rows are L2-normalised (the encoder normalised them). */
    public boolean normalized() { return Boolean.parseBoolean(metadata.get("normalize")); }

    /** A mismatch between an index and the model/corpus it is asked to serve. */
    public static final class MismatchException extends RuntimeException {
        public MismatchException(String message) { super(message); }
    }

    /**
     * The index of {@code corpus} under {@code encoder} in {@code dir}: reused when its
     * metadata matches, else built (resuming from finished chunks). {@code explicit}: the user
     * named this directory, so a mismatch is an error rather than a reason to rebuild.
     * Progress and notices go to {@code log} (may be null).
     */
    public static CorpusIndex obtain(Path dir, Encoder encoder, Beir.Corpus corpus, boolean explicit, PrintStream log)
            throws IOException {
        return obtain(dir, encoder, corpus, explicit, log, CHUNK, null);
    }

    /** Reads a corpus, when an index has to be checked against its documents or built from them. */
    public interface CorpusSource {
        Beir.Corpus read() throws IOException;

        /** {@code source}, read at most once (later calls return the same corpus). */
        static CorpusSource once(CorpusSource source) {
            Beir.Corpus[] read = new Beir.Corpus[1];
            return () -> read[0] != null ? read[0] : (read[0] = source.read());
        }
    }

    /**
     * As {@link #obtain(Path, Encoder, Beir.Corpus, boolean, PrintStream)} for a corpus not read
     * yet: an index in {@code dir} built from the same corpus file bytes (sha256), model and
     * settings is opened without parsing the corpus (for the two bundled corpora that parse was
     * about 0.5 s of a 2.9 s {@code rr search}); otherwise {@code source} reads the corpus and
     * the index is checked, rebuilt or refused exactly as by the other overload.
     */
    public static CorpusIndex obtain(Path dir, Encoder encoder, Path corpusFile, String passagePrefix, CorpusSource source,
                                     boolean explicit, PrintStream log) throws IOException {
        Path file = dir.resolve(EMBEDDINGS);
        if (Files.exists(file) && mismatch(readMetadata(file), expectedMetadata(encoder, corpusFile, passagePrefix, null)) == null)
            return open(dir);
        return obtain(dir, encoder, source.read(), explicit, log);
    }

    /** As above with a chunk size and a hook called after each chunk file is written (tests: interruption, resume). */
    static CorpusIndex obtain(Path dir, Encoder encoder, Beir.Corpus corpus, boolean explicit, PrintStream log,
                              int chunk, java.util.function.IntConsumer afterChunk) throws IOException {
        if (chunk < 1) throw new IllegalArgumentException("chunk size must be ≥ 1");
        Map<String, String> want = expectedMetadata(encoder, corpus);
        Path file = dir.resolve(EMBEDDINGS);
        if (Files.exists(file)) {
            String why = mismatch(readMetadata(file), want);
            if (why == null) return open(dir);
            if (explicit) throw new MismatchException(dir + ": index does not match: " + why);
            if (log != null) log.println("index " + dir + " is stale (" + why + "): rebuilding");
            Files.delete(file);
        }
        build(dir, encoder, corpus, want, log, chunk, afterChunk);
        return open(dir);
    }

    /** The directory for an index kept in a cache: {@code root/<dataset>--<model dir name>}. */
    public static Path cacheDir(Path root, String datasetName, Encoder encoder) {
        String model = encoder.dir.toAbsolutePath().normalize().getFileName().toString();
        return root.resolve(safe(datasetName) + "--" + safe(model));
    }

    private static String safe(String s) { return s.replaceAll("[^A-Za-z0-9._-]", "_"); }

    /** Maps an existing index (no checks against a model: see {@link #obtain}). */
    public static CorpusIndex open(Path dir) throws IOException {
        Path file = dir.resolve(EMBEDDINGS), idsFile = dir.resolve(DOC_IDS);
        if (!Files.exists(file)) throw new NoSuchFileException(file.toString(), null, "no corpus index here");
        Arena arena = Arena.ofShared();
        try {
            Safetensors.File st = Safetensors.open(file, arena);
            Tensor e = st.get("embeddings");
            if (e.dtype != DType.F32 || e.rank() != 2)
                throw new Safetensors.FormatException(file + ": tensor 'embeddings' must be F32 [n, C], got " + e);
            List<String> ids = Files.readAllLines(idsFile, StandardCharsets.UTF_8);
            if (ids.size() != e.dim(0))
                throw new Safetensors.FormatException(idsFile + ": " + ids.size() + " doc ids but " + file + " has " + e.dim(0) + " rows");
            return new CorpusIndex(dir, ids.toArray(new String[0]), e, st.metadata(), arena);
        } catch (IOException | RuntimeException ex) {
            arena.close();
            throw ex;
        }
    }

    /**
     * What a search hit shows for each row: the document's title and, when that is empty, the
     * start of its text. Read from {@link #DOC_LABELS} beside the index; the first time (or when
     * that file does not match the index) made from the corpus that {@code source} reads, and
     * written there for the next time (kept in memory only if the directory is read-only).
     * Reading the labels instead of parsing the corpus saves ~0.3 s of each {@code rr search}.
     */
    public Labels labels(CorpusSource source) throws IOException {
        Path file = dir.resolve(DOC_LABELS);
        if (Files.exists(file)) {
            List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
            if (lines.size() == size() && lines.stream().allMatch(l -> l.indexOf('\t') == l.lastIndexOf('\t') && l.indexOf('\t') >= 0))
                return new Labels(lines.toArray(new String[0]));
        }
        Beir.Corpus corpus = source.read();
        String[] titles = Beir.readTitles(corpus.file());
        if (titles.length != size() || corpus.size() != size())
            throw new MismatchException(corpus.file() + ": " + titles.length + " documents, the index in " + dir + " has " + size());
        String[] lines = new String[size()];
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < lines.length; i++) {
            String t = titles[i], text = corpus.texts()[i];
            lines[i] = Labels.escape(t) + '\t' + (t.isEmpty() ? Labels.escape(text.substring(0, Math.min(SNIPPET_CHARS, text.length()))) : "");
            b.append(lines[i]).append('\n');
        }
        try {
            writeText(file, b);
        } catch (IOException e) {
            // a read-only index directory: the labels serve this run only
        }
        return new Labels(lines);
    }

    /** Row labels, unescaped on demand (a search shows a few rows of thousands). */
    public static final class Labels {
        private final String[] lines;

        Labels(String[] lines) { this.lines = lines; }

        /** The document's title ("" when it has none). */
        public String title(int row) { return unescape(lines[row].substring(0, lines[row].indexOf('\t'))); }

        /** The title, or when it is empty the start of the document's text. */
        public String label(int row) {
            int tab = lines[row].indexOf('\t');
            return tab > 0 ? unescape(lines[row].substring(0, tab)) : unescape(lines[row].substring(tab + 1));
        }

        static String escape(String s) {
            StringBuilder b = new StringBuilder(s.length());
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '\\' -> b.append("\\\\");
                    case '\t' -> b.append("\\t");
                    case '\n' -> b.append("\\n");
                    case '\r' -> b.append("\\r");
                    default -> b.append(c);
                }
            }
            return b.toString();
        }

        static String unescape(String s) {
            if (s.indexOf('\\') < 0) return s;
            StringBuilder b = new StringBuilder(s.length());
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                if (c != '\\' || i + 1 == s.length()) { b.append(c); continue; }
                char n = s.charAt(++i);
                b.append(switch (n) { case 't' -> '\t'; case 'n' -> '\n'; case 'r' -> '\r'; default -> n; });
            }
            return b.toString();
        }
    }

    /** 1/‖row‖ per row (0 for a zero row), computed once. */
    public float[] inverseNorms() {
        if (inverseNorms == null) {
            int n = size(), c = dimension();
            float[] inv = new float[n];
            float[] row = new float[c];
            for (int i = 0; i < n; i++) {
                MemorySegment.copy(embeddings.data, Tensor.F32, (long) i * c * 4, row, 0, c);
                double s = 0;
                for (int j = 0; j < c; j++) s += (double) row[j] * row[j];
                inv[i] = s > 0 ? (float) (1 / Math.sqrt(s)) : 0f;
            }
            inverseNorms = inv;
        }
        return inverseNorms;
    }

    @Override
    public void close() { arena.close(); }

    // ------------------------------------------------------------------ metadata

    static Map<String, String> expectedMetadata(Encoder encoder, Beir.Corpus corpus) throws IOException {
        return expectedMetadata(encoder, corpus.file(), corpus.passagePrefix(), corpus.size());
    }

    /** The metadata an index of this corpus file must carry; {@code count} null: not checked (same bytes, same count). */
    static Map<String, String> expectedMetadata(Encoder encoder, Path corpusFile, String passagePrefix, Integer count) throws IOException {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("format", "rrj-corpus-index/" + FORMAT);
        m.put("model_fingerprint", modelFingerprint(encoder.dir));
        m.put("model_dir", encoder.dir.toAbsolutePath().normalize().toString());
        m.put("corpus_fingerprint", sha256(corpusFile));
        m.put("corpus_file", corpusFile.toAbsolutePath().normalize().toString());
        m.put("pooling", encoder.options.pooling().name().toLowerCase(java.util.Locale.ROOT));
        m.put("normalize", Boolean.toString(encoder.options.normalize()));
        m.put("max_length", Integer.toString(encoder.options.maxLength()));
        m.put("passage_prefix", passagePrefix); // e5's "passage: " makes other vectors
        if (count != null) m.put("count", Integer.toString(count));
        m.put("dim", Integer.toString(encoder.dimension()));
        return m;
    }

    /** Null when {@code have} serves {@code want}; else what differs, naming both sides. */
    static String mismatch(Map<String, String> have, Map<String, String> want) {
        List<String> diffs = new ArrayList<>();
        if (!want.get("format").equals(have.get("format"))) diffs.add("format " + have.get("format") + " vs " + want.get("format"));
        if (!want.get("model_fingerprint").equals(have.get("model_fingerprint")))
            diffs.add("built by model " + have.get("model_dir") + " (fingerprint " + shortHash(have.get("model_fingerprint"))
                    + "), asked for model " + want.get("model_dir") + " (fingerprint " + shortHash(want.get("model_fingerprint")) + ")");
        if (!want.get("corpus_fingerprint").equals(have.get("corpus_fingerprint")))
            diffs.add("built from corpus " + have.get("corpus_file") + " (sha256 " + shortHash(have.get("corpus_fingerprint"))
                    + "), asked for " + want.get("corpus_file") + " (sha256 " + shortHash(want.get("corpus_fingerprint")) + ")");
        for (String k : new String[]{"pooling", "normalize", "max_length", "passage_prefix", "count", "dim"})
            if (want.containsKey(k) && !want.get(k).equals(have.get(k)))
                diffs.add(k + " '" + have.get(k) + "' in the index, '" + want.get(k) + "' asked");
        return diffs.isEmpty() ? null : String.join("; ", diffs);
    }

    private static String shortHash(String h) { return h == null ? "none" : h.substring(0, Math.min(12, h.length())); }

    static Map<String, String> readMetadata(Path file) throws IOException {
        try (Arena a = Arena.ofConfined()) {
            return new LinkedHashMap<>(Safetensors.open(file, a).metadata());
        }
    }

    /**
     * A cheap but distinguishing model fingerprint: config.json and the tokenizer file whole,
     * model.safetensors by size, header and the first and last MiB (fine-tunes of one
     * architecture differ in the word embeddings at the start and the last layer at the end).
     */
    public static String modelFingerprint(Path modelDir) throws IOException {
        MessageDigest md = sha();
        for (String name : new String[]{"config.json", "tokenizer.json", "vocab.txt"}) {
            Path p = modelDir.resolve(name);
            if (Files.exists(p)) {
                md.update(name.getBytes(StandardCharsets.UTF_8));
                md.update(Files.readAllBytes(p));
            }
        }
        Path w = modelDir.resolve("model.safetensors");
        if (!Files.exists(w)) throw new NoSuchFileException(w.toString(), null, "model weights not found");
        try (FileChannel ch = FileChannel.open(w, StandardOpenOption.READ)) {
            long size = ch.size();
            md.update(Long.toString(size).getBytes(StandardCharsets.UTF_8));
            int mib = 1 << 20;
            digestRange(ch, 0, Math.min(size, mib), md);
            if (size > mib) digestRange(ch, Math.max(mib, size - mib), size, md);
        }
        return HexFormat.of().formatHex(md.digest());
    }

    private static void digestRange(FileChannel ch, long from, long to, MessageDigest md) throws IOException {
        ByteBuffer b = ByteBuffer.allocate((int) (to - from));
        long pos = from;
        while (b.hasRemaining()) {
            int n = ch.read(b, pos);
            if (n < 0) break;
            pos += n;
        }
        b.flip();
        md.update(b);
    }

    static String sha256(Path file) throws IOException {
        MessageDigest md = sha();
        byte[] buf = new byte[1 << 16];
        try (InputStream in = Files.newInputStream(file)) {
            for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
        }
        return HexFormat.of().formatHex(md.digest());
    }

    static String sha256(byte[] bytes) { return HexFormat.of().formatHex(sha().digest(bytes)); }

    private static MessageDigest sha() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    // ------------------------------------------------------------------ building

    private static void build(Path dir, Encoder encoder, Beir.Corpus corpus, Map<String, String> meta, PrintStream log,
                              int chunk, java.util.function.IntConsumer afterChunk) throws IOException {
        int n = corpus.size(), c = encoder.dimension();
        for (int i = 0; i < n; i++)
            if (corpus.ids()[i].indexOf('\n') >= 0 || corpus.ids()[i].indexOf('\r') >= 0)
                throw new Beir.DataException(corpus.file() + ": doc id '" + corpus.ids()[i].strip() + "' contains a line break");
        Path chunks = dir.resolve("chunks");
        Files.createDirectories(chunks);
        Files.deleteIfExists(dir.resolve(DOC_LABELS)); // the old corpus's labels
        // one key for everything that makes a chunk's rows: chunks under another key are rebuilt
        String buildKey = sha256(Json.write(new LinkedHashMap<String, Object>(meta)).concat("/chunk=" + chunk).getBytes(StandardCharsets.UTF_8));
        int nChunks = (n + chunk - 1) / chunk;
        boolean[] have = new boolean[nChunks];
        long done = 0;
        for (int k = 0; k < nChunks; k++) {
            Path f = chunkFile(chunks, k);
            if (Files.exists(f)) {
                Map<String, String> cm;
                try {
                    cm = readMetadata(f);
                } catch (RuntimeException e) { // a torn file cannot exist (atomic writes), but a foreign one might
                    cm = Map.of();
                }
                have[k] = buildKey.equals(cm.get("build_key"));
                if (have[k]) done += Math.min(chunk, n - (long) k * chunk);
            }
        }
        if (log != null && done > 0) log.println("index " + dir + ": resuming, " + done + " of " + n + " documents already encoded");
        Progress bar = new Progress(log, "encoding " + n + " documents", n, done);
        bar.update(done);
        List<String> batch = new ArrayList<>(BATCH);
        for (int k = 0; k < nChunks; k++) {
            if (have[k]) continue;
            int from = k * chunk, to = Math.min(n, from + chunk);
            Tensor rows = Tensor.allocate(Arena.ofAuto(), to - from, c);
            for (int b = from; b < to; b += BATCH) {
                batch.clear();
                int e = Math.min(to, b + BATCH);
                for (int i = b; i < e; i++) batch.add(corpus.texts()[i]);
                float[][] emb = encoder.embed(batch);
                for (int i = b; i < e; i++) MemorySegment.copy(emb[i - b], 0, rows.data, Tensor.F32, (long) (i - from) * c * 4, c);
                done += e - b;
                bar.update(done);
            }
            Map<String, String> cm = new LinkedHashMap<>();
            cm.put("build_key", buildKey);
            cm.put("first_row", Integer.toString(from));
            Safetensors.write(chunkFile(chunks, k), Map.of("embeddings", rows), cm);
            if (afterChunk != null) afterChunk.accept(k);
        }
        writeIds(dir.resolve(DOC_IDS), corpus.ids());
        merge(dir.resolve(EMBEDDINGS), chunks, nChunks, chunk, n, c, meta);
        for (int k = 0; k < nChunks; k++) Files.deleteIfExists(chunkFile(chunks, k));
        try (var s = Files.list(chunks)) {
            if (s.findAny().isEmpty()) Files.delete(chunks);
        }
    }

    private static Path chunkFile(Path chunks, int k) { return chunks.resolve(String.format("chunk-%05d.safetensors", k)); }

    private static void writeIds(Path file, String[] ids) throws IOException {
        StringBuilder b = new StringBuilder();
        for (String id : ids) b.append(id).append('\n');
        writeText(file, b);
    }

    /** Writes a UTF-8 text file atomically (a temporary file beside it, then a move). */
    private static void writeText(Path file, CharSequence b) throws IOException {
        Path tmp = Files.createTempFile(file.toAbsolutePath().getParent(), file.getFileName().toString(), ".tmp");
        try {
            Files.writeString(tmp, b, StandardCharsets.UTF_8);
            Safetensors.readableByAll(tmp);
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /**
     * Concatenates the chunk bodies under one safetensors header, streaming (no [n, C] buffer:
     * a large corpus does not fit in memory, and ByteBuffers stop at 2 GiB). Atomic.
     */
    private static void merge(Path out, Path chunks, int nChunks, int chunk, int n, int c, Map<String, String> meta) throws IOException {
        long bytes = (long) n * c * 4;
        Map<String, Object> header = new LinkedHashMap<>();
        header.put("__metadata__", new LinkedHashMap<String, Object>(meta));
        Map<String, Object> info = new LinkedHashMap<>();
        info.put("dtype", "F32");
        info.put("shape", List.of((long) n, (long) c));
        info.put("data_offsets", List.of(0L, bytes));
        header.put("embeddings", info);
        byte[] hb = Json.write(header).getBytes(StandardCharsets.UTF_8);
        int padded = hb.length + (8 - hb.length % 8) % 8; // data 8-byte aligned, as the reference writer does
        Path tmp = Files.createTempFile(out.toAbsolutePath().getParent(), out.getFileName().toString(), ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer h = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
                h.putLong(padded).put(hb);
                while (h.position() < h.capacity()) h.put((byte) ' ');
                h.flip();
                while (h.hasRemaining()) ch.write(h);
                for (int k = 0; k < nChunks; k++) {
                    long rows = Math.min(chunk, n - (long) k * chunk);
                    try (Arena a = Arena.ofConfined()) {
                        Tensor t = Safetensors.open(chunkFile(chunks, k), a).get("embeddings");
                        if (t.dim(0) != rows || t.dim(1) != c)
                            throw new Safetensors.FormatException(chunkFile(chunks, k) + ": expected [" + rows + ", " + c + "], got " + t);
                        ByteBuffer body = t.data.asByteBuffer(); // ≤ chunk·C·4 bytes
                        while (body.hasRemaining()) ch.write(body);
                    }
                }
                ch.force(false);
            }
            Safetensors.readableByAll(tmp);
            Files.move(tmp, out, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
