package rrj.router;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Map;
import java.util.zip.GZIPOutputStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** BEIR loading: layout, gzip, text rules, qrels filtering, and one-line errors naming file and line. */
class BeirTest {
    @TempDir Path tmp;

    static void write(Path file, String text, boolean gz) throws IOException {
        Files.createDirectories(file.getParent());
        if (!gz) {
            Files.writeString(file, text);
            return;
        }
        try (OutputStream o = new GZIPOutputStream(Files.newOutputStream(file.resolveSibling(file.getFileName() + ".gz")))) {
            o.write(text.getBytes(StandardCharsets.UTF_8));
        }
    }

    Path dataset(boolean gz, String corpus, String queries, String qrels) throws IOException {
        Path d = tmp.resolve("ds" + (gz ? "-gz" : ""));
        write(d.resolve("corpus.jsonl"), corpus, gz);
        write(d.resolve("queries.jsonl"), queries, gz);
        write(d.resolve("qrels/test.tsv"), qrels, gz);
        return d;
    }

    static final String CORPUS = """
            {"_id": "d1", "title": "Title", "text": "body one"}
            {"_id": "d2", "title": "", "text": "body two"}
            {"_id": "d3", "text": "no title field"}
            """;
    static final String QUERIES = """
            {"_id": "q1", "text": "first"}
            {"_id": "q2", "text": "second"}
            {"_id": "q3", "text": "not judged"}
            """;
    static final String QRELS = "query-id\tcorpus-id\tscore\nq2\td2\t1\nq1\td1\t2\nq1\td3\t0\nq1\tmissing-doc\t1\nq9\td1\t1\n";

    @Test
    void loadsPlainAndGzippedAlike() throws IOException {
        for (boolean gz : new boolean[]{false, true}) {
            ByteArrayOutputStream warn = new ByteArrayOutputStream();
            Beir.Dataset ds = Beir.load(dataset(gz, CORPUS, QUERIES, QRELS), "test", "query: ", "passage: ",
                    new PrintStream(warn, true, StandardCharsets.UTF_8));
            assertArrayEquals(new String[]{"d1", "d2", "d3"}, ds.corpus().ids());
            assertArrayEquals(new String[]{"passage: Title body one", "passage: body two", "passage: no title field"}, ds.corpus().texts());
            // only judged queries, in qrels order
            assertArrayEquals(new String[]{"q2", "q1"}, ds.queries().ids());
            assertArrayEquals(new String[]{"query: second", "query: first"}, ds.queries().texts());
            assertEquals(Map.of("d1", 2, "d3", 0, "missing-doc", 1), ds.queries().qrels().get(1));
            assertEquals(5, ds.qrelRows());
            assertEquals(1, ds.unknownQueryRows());
            assertEquals(1, ds.unknownDocRows());
            String w = warn.toString(StandardCharsets.UTF_8);
            assertEquals(1, w.lines().count(), w);
            assertTrue(w.contains("1 of 5 rows name a query") && w.contains("1 name a document"), w);
        }
    }

    @Test
    void malformedLinesNameFileAndLine() throws IOException {
        Path d = dataset(true, CORPUS + "{\"_id\": \"d4\", \"text\": }\n", QUERIES, QRELS);
        Beir.DataException e = assertThrows(Beir.DataException.class, () -> Beir.load(d, "test"));
        assertTrue(e.getMessage().contains("corpus.jsonl.gz:4: not valid JSON"), e.getMessage());

        Path d2 = dataset(false, CORPUS, QUERIES + "{\"text\": \"no id\"}\n", QRELS);
        e = assertThrows(Beir.DataException.class, () -> Beir.load(d2, "test"));
        assertTrue(e.getMessage().contains("queries.jsonl:4: missing field '_id'"), e.getMessage());

        write(d2.resolve("queries.jsonl"), QUERIES, false);
        write(d2.resolve("qrels/test.tsv"), "h\th\th\nq1\td1\tx\n", false);
        e = assertThrows(Beir.DataException.class, () -> Beir.load(d2, "test"));
        assertTrue(e.getMessage().contains("test.tsv:2: score 'x' is not an integer"), e.getMessage());

        write(d2.resolve("qrels/test.tsv"), "h\th\th\nq1 d1 1\n", false);
        e = assertThrows(Beir.DataException.class, () -> Beir.load(d2, "test"));
        assertTrue(e.getMessage().contains("test.tsv:2: expected 3 tab-separated columns"), e.getMessage());

        Path d3 = dataset(false, CORPUS + "{\"_id\": \"d1\", \"text\": \"again\"}\n", QUERIES, QRELS);
        e = assertThrows(Beir.DataException.class, () -> Beir.load(d3, "test"));
        assertTrue(e.getMessage().contains("corpus.jsonl:4: duplicate _id 'd1' (first on line 1)"), e.getMessage());
    }

    @Test
    void emptyCorpusAndMissingFilesAreClearErrors() throws IOException {
        Path d = dataset(false, "\n", QUERIES, QRELS);
        Beir.DataException e = assertThrows(Beir.DataException.class, () -> Beir.load(d, "test"));
        assertTrue(e.getMessage().contains("the corpus is empty"), e.getMessage());
        write(d.resolve("corpus.jsonl"), CORPUS, false);
        NoSuchFileException nf = assertThrows(NoSuchFileException.class, () -> Beir.load(d, "dev"));
        assertTrue(nf.getMessage().contains("dev.tsv") && nf.getMessage().contains("dev.tsv.gz"), nf.getMessage());
    }

    @Test
    void generatedQueriesJudgeTheirSourceDocument() throws IOException {
        Path f = tmp.resolve("generated-queries.train.jsonl");
        write(f, """
                {"_id": "d1", "title": "t", "text": "x", "query": "what is one"}
                {"_id": "d2", "title": "t", "text": "y", "query": "what is two"}
                """, true);
        Beir.Queries q = Beir.loadGeneratedQueries(f, "", 0); // finds the .gz
        assertArrayEquals(new String[]{"gen-1", "gen-2"}, q.ids());
        assertEquals(Map.of("d2", 1), q.qrels().get(1));
        assertEquals(1, Beir.loadGeneratedQueries(f, "", 1).size());
    }

    @Test
    void repoDatasetsHaveTheDocumentedSizes() throws IOException {
        Beir.Dataset sf = Beir.load(Path.of("../data/scifact"), "test", "", "", null);
        assertEquals(5183, sf.corpus().size());
        assertEquals(300, sf.queries().size());
        assertEquals(0, sf.unknownQueryRows() + sf.unknownDocRows());
        Beir.Dataset aa = Beir.load(Path.of("../data/arguana"), "test", "", "", null);
        assertEquals(8674, aa.corpus().size());
        assertEquals(1406, aa.queries().size());
    }
}
