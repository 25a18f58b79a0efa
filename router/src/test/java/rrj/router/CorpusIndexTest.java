package rrj.router;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Tensor;
import rrj.model.Encoder;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The on-disk corpus index: contents, reuse, invalidation, refusal, resume after interruption. */
class CorpusIndexTest {
    @TempDir static Path tmp;
    static Backend backend;
    static Encoder enc, other;
    static Beir.Corpus corpus;

    @BeforeAll
    static void setUp() throws IOException {
        backend = Backends.create("ref", 1);
        enc = Encoder.open(TinyModel.create(tmp.resolve("model-a"), 3), backend, null, null, null);
        other = Encoder.open(TinyModel.create(tmp.resolve("model-b"), 4), backend, null, null, null);
        Path f = tmp.resolve("corpus.jsonl");
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < 11; i++) b.append("{\"_id\": \"d").append(i).append("\", \"title\": \"t").append(i).append("\", \"text\": \"document number ").append(i).append("\"}\n");
        Files.writeString(f, b);
        corpus = Beir.readCorpus(f, "");
    }

    @AfterAll
    static void tearDown() {
        enc.close();
        other.close();
        backend.close();
    }

    static float[] row(Tensor t, int i) {
        int c = (int) t.dim(1);
        float[] v = new float[c];
        for (int j = 0; j < c; j++) v[j] = t.getFloat((long) i * c + j);
        return v;
    }

    @Test
    void buildsMapsAndReuses() throws IOException {
        Path dir = tmp.resolve("idx-reuse");
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        PrintStream ps = new PrintStream(log, true, StandardCharsets.UTF_8);
        float[][] want = enc.embed(List.of(corpus.texts()));
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, corpus, false, ps)) {
            assertEquals(11, idx.size());
            assertEquals(32, idx.dimension());
            assertArrayEquals(corpus.ids(), idx.docIds);
            for (int i = 0; i < 11; i++) assertArrayEquals(want[i], row(idx.embeddings, i), 1e-6f, "row " + i);
            assertEquals("mean", idx.metadata.get("pooling"));
        }
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("encoding 11 documents"), log.toString(StandardCharsets.UTF_8));
        assertFalse(Files.exists(dir.resolve("chunks")), "chunks left behind");
        long mtime = Files.getLastModifiedTime(dir.resolve(CorpusIndex.EMBEDDINGS)).toMillis();
        log.reset();
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, corpus, true, ps)) { // same model and corpus: reused even when explicit
            assertEquals(11, idx.size());
        }
        assertEquals("", log.toString(StandardCharsets.UTF_8));
        assertEquals(mtime, Files.getLastModifiedTime(dir.resolve(CorpusIndex.EMBEDDINGS)).toMillis());
    }

    @Test
    void anotherModelIsRefusedWhenExplicitAndRebuildsInACache() throws IOException {
        Path dir = tmp.resolve("idx-models");
        CorpusIndex.obtain(dir, enc, corpus, false, null).close();
        CorpusIndex.MismatchException e = assertThrows(CorpusIndex.MismatchException.class,
                () -> CorpusIndex.obtain(dir, other, corpus, true, null));
        assertTrue(e.getMessage().contains("model-a") && e.getMessage().contains("model-b"), e.getMessage());
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        try (CorpusIndex idx = CorpusIndex.obtain(dir, other, corpus, false, new PrintStream(log, true, StandardCharsets.UTF_8))) {
            assertArrayEquals(other.embed(List.of(corpus.texts()[0]))[0], row(idx.embeddings, 0), 1e-6f);
        }
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("stale"), log.toString(StandardCharsets.UTF_8));
        // options are part of the identity too
        try (Encoder cls = Encoder.open(tmp.resolve("model-b"), backend, rrj.engine.Backend.Pooling.CLS, null, null)) {
            e = assertThrows(CorpusIndex.MismatchException.class, () -> CorpusIndex.obtain(dir, cls, corpus, true, null));
            assertTrue(e.getMessage().contains("pooling 'mean' in the index, 'cls' asked"), e.getMessage());
        }
    }

    @Test
    void aChangedCorpusRebuilds() throws IOException {
        Path dir = tmp.resolve("idx-corpus");
        CorpusIndex.obtain(dir, enc, corpus, false, null).close();
        Path f2 = tmp.resolve("corpus2.jsonl");
        Files.writeString(f2, Files.readString(corpus.file()) + "{\"_id\": \"extra\", \"text\": \"one more\"}\n");
        Beir.Corpus c2 = Beir.readCorpus(f2, "");
        CorpusIndex.MismatchException e = assertThrows(CorpusIndex.MismatchException.class, () -> CorpusIndex.obtain(dir, enc, c2, true, null));
        assertTrue(e.getMessage().contains("corpus"), e.getMessage());
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, c2, false, null)) {
            assertEquals(12, idx.size());
            assertEquals("extra", idx.docIds[11]);
        }
    }

    @Test
    void anInterruptedBuildResumesFromFinishedChunks() throws IOException {
        Path dir = tmp.resolve("idx-resume");
        RuntimeException stop = new RuntimeException("interrupted");
        RuntimeException got = assertThrows(RuntimeException.class, () -> CorpusIndex.obtain(dir, enc, corpus, false, null, 4, k -> {
            if (k == 1) throw stop;
        }));
        assertEquals(stop, got);
        assertFalse(Files.exists(dir.resolve(CorpusIndex.EMBEDDINGS)));
        assertTrue(Files.exists(dir.resolve("chunks/chunk-00000.safetensors")) && Files.exists(dir.resolve("chunks/chunk-00001.safetensors")));
        List<Integer> written = new ArrayList<>();
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, corpus, false, new PrintStream(log, true, StandardCharsets.UTF_8), 4, written::add)) {
            assertEquals(List.of(2), written); // 11 docs in chunks of 4: only the last one was missing
            float[][] want = enc.embed(List.of(corpus.texts()));
            for (int i = 0; i < 11; i++) assertArrayEquals(want[i], row(idx.embeddings, i), 1e-6f, "row " + i);
        }
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("resuming, 8 of 11"), log.toString(StandardCharsets.UTF_8));
    }

    @Test
    void aMatchingIndexOpensWithoutReadingTheCorpusAndAChangedFileIsRead() throws IOException {
        Path dir = tmp.resolve("idx-lazy"), f = tmp.resolve("lazy-corpus.jsonl");
        Files.copy(corpus.file(), f);
        CorpusIndex.CorpusSource never = () -> { throw new AssertionError("the corpus was read although the index matches"); };
        int[] reads = {0};
        String[] prefix = {""};
        CorpusIndex.CorpusSource counted = () -> { reads[0]++; return Beir.readCorpus(f, prefix[0]); };
        CorpusIndex.obtain(dir, enc, f, "", counted, false, null).close();
        assertEquals(1, reads[0], "building reads the corpus");
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, f, "", never, false, null)) {
            assertEquals(11, idx.size());
        }
        // another passage prefix: the corpus is read and the index rebuilt
        prefix[0] = "passage: ";
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, f, "passage: ", counted, false, null)) {
            assertEquals(2, reads[0]);
            assertEquals("passage: ", idx.metadata.get("passage_prefix"));
        }
        // the same name, other bytes: read and rebuilt, with the new count
        Files.writeString(f, Files.readString(f) + "{\"_id\": \"d11\", \"title\": \"\", \"text\": \"one more\"}\n");
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, f, "passage: ", counted, false, null)) {
            assertEquals(3, reads[0]);
            assertEquals(12, idx.size());
        }
    }

    @Test
    void labelsAreWrittenOnceAndReadBackExactly() throws IOException {
        Path dir = tmp.resolve("idx-labels"), f = tmp.resolve("labels-corpus.jsonl");
        String odd = "tab\there, new\nline, back\\slash \\t";
        StringBuilder b = new StringBuilder();
        b.append("{\"_id\": \"a\", \"title\": ").append(rrj.model.Json.write(odd)).append(", \"text\": \"first\"}\n");
        b.append("{\"_id\": \"b\", \"title\": \"\", \"text\": ").append(rrj.model.Json.write("x".repeat(3000))).append("}\n");
        b.append("{\"_id\": \"c\", \"text\": \"no title at all\"}\n");
        Files.writeString(f, b);
        CorpusIndex.CorpusSource read = () -> Beir.readCorpus(f, "");
        CorpusIndex.CorpusSource never = () -> { throw new AssertionError("the corpus was read although the labels are stored"); };
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, f, "", read, false, null)) {
            assertFalse(Files.exists(dir.resolve(CorpusIndex.DOC_LABELS)), "labels are written when first asked for");
            CorpusIndex.Labels l = idx.labels(read);
            assertTrue(Files.exists(dir.resolve(CorpusIndex.DOC_LABELS)));
            assertEquals(3, Files.readAllLines(dir.resolve(CorpusIndex.DOC_LABELS)).size(), "one line per row: breaks are escaped");
            for (CorpusIndex.Labels x : new CorpusIndex.Labels[]{l, idx.labels(never)}) {
                assertEquals(odd, x.title(0));
                assertEquals(odd, x.label(0));
                assertEquals("", x.title(1));
                assertEquals("x".repeat(CorpusIndex.SNIPPET_CHARS), x.label(1), "no title: the start of the text");
                assertEquals("no title at all", x.label(2));
            }
        }
        // a torn or foreign labels file is not trusted: made again from the corpus
        Files.writeString(dir.resolve(CorpusIndex.DOC_LABELS), "only one line\n");
        try (CorpusIndex idx = CorpusIndex.open(dir)) {
            assertEquals(odd, idx.labels(read).title(0));
        }
        // a rebuilt index drops the old corpus's labels
        Files.writeString(f, "{\"_id\": \"z\", \"title\": \"new\", \"text\": \"changed\"}\n");
        try (CorpusIndex idx = CorpusIndex.obtain(dir, enc, f, "", read, false, null)) {
            assertFalse(Files.exists(dir.resolve(CorpusIndex.DOC_LABELS)));
            assertEquals("new", idx.labels(read).title(0));
        }
    }
}
