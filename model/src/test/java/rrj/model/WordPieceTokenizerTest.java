package rrj.model;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.GZIPInputStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Parity of {@link WordPieceTokenizer} with Hugging Face tokenizers (the Rust library, through
 * DJL's JNI binding), id for id, on real corpus text and on hand-made hard cases.
 *
 * <p>The tokenizer.json files (all-MiniLM-L6-v2 and bge-small-en-v1.5) come from the langchain4j
 * jars on the test classpath. The MiniLM file carries "truncation" (128) and fixed "padding"
 * (128) sections: the DJL instances are opened with padding off and the truncation we test, and
 * our tokenizer ignores those sections by design (padding is the engine's job).
 */
class WordPieceTokenizerTest {

    private static final Path DATA = Path.of("../data");

    @TempDir
    static Path tmp;

    private static Path minilmJson;
    private static Path bgeJson;
    private static final List<HuggingFaceTokenizer> opened = new ArrayList<>();
    private static final Map<String, HuggingFaceTokenizer> djlCache = new HashMap<>();

    /** Strings compared id for id, over all tests of this class (reported at the end). */
    private static long compared;

    @BeforeAll
    static void copyTokenizerFiles() throws IOException {
        minilmJson = resource("/all-minilm-l6-v2-tokenizer.json", "minilm-tokenizer.json");
        bgeJson = resource("/bge-small-en-v1.5-tokenizer.json", "bge-tokenizer.json");
    }

    @AfterAll
    static void close() {
        for (HuggingFaceTokenizer t : opened) t.close();
        System.out.println("WordPieceTokenizerTest: " + compared + " strings compared id for id with HF tokenizers");
    }

    private static Path resource(String name, String fileName) throws IOException {
        try (InputStream in = WordPieceTokenizerTest.class.getResourceAsStream(name)) {
            if (in == null) throw new IllegalStateException("test resource " + name + " is not on the classpath (langchain4j embeddings jar missing?)");
            Path p = tmp.resolve(fileName);
            Files.copy(in, p);
            return p;
        }
    }

    /** HF through DJL: special tokens on, no padding, truncation to maxLength (0 = none). */
    private static HuggingFaceTokenizer djl(Path json, int maxLength) throws IOException {
        String key = json + "#" + maxLength;
        HuggingFaceTokenizer t = djlCache.get(key);
        if (t != null) return t;
        Map<String, String> options = maxLength > 0
                ? Map.of("addSpecialTokens", "true", "padding", "false", "truncation", "true", "maxLength", Integer.toString(maxLength))
                : Map.of("addSpecialTokens", "true", "padding", "false", "truncation", "false");
        t = HuggingFaceTokenizer.newInstance(json, options);
        opened.add(t);
        djlCache.put(key, t);
        return t;
    }

    /** Collects mismatches so that one run reports many of them. */
    private static final class Parity {
        final String name;
        final List<String> failures = new ArrayList<>();
        int count;

        Parity(String name) { this.name = name; }

        void check(HuggingFaceTokenizer hf, WordPieceTokenizer ours, String text, int maxLength) {
            long[] expected = hf.encode(text).getIds();
            int[] actual = maxLength > 0 ? ours.encode(text, maxLength) : ours.encode(text);
            count++;
            compared++;
            boolean same = expected.length == actual.length;
            int firstDiff = -1;
            for (int i = 0; i < Math.min(expected.length, actual.length); i++) {
                if (expected[i] != actual[i]) {
                    firstDiff = i;
                    same = false;
                    break;
                }
            }
            if (same) return;
            if (firstDiff < 0) firstDiff = Math.min(expected.length, actual.length);
            if (failures.size() < 25) {
                failures.add("text=\"" + escape(text) + "\" maxLength=" + maxLength
                        + "\n    HF  =" + Arrays.toString(expected)
                        + "\n    ours=" + Arrays.toString(actual)
                        + "\n    first difference at index " + firstDiff);
            } else if (failures.size() == 25) {
                failures.add("... more");
            }
        }

        void assertAll() {
            if (!failures.isEmpty())
                fail(name + ": " + failures.size() + " of " + count + " strings differ from HF:\n  " + String.join("\n  ", failures));
        }
    }

    private static String escape(String s) {
        StringBuilder b = new StringBuilder();
        String shown = s.length() > 300 ? s.substring(0, 300) + "…(" + s.length() + " chars)" : s;
        shown.codePoints().forEach(cp -> {
            if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || Character.getType(cp) == Character.FORMAT
                    || Character.getType(cp) == Character.NON_SPACING_MARK || cp == '"' || cp == '\\')
                b.append(String.format("\\u{%X}", cp));
            else b.appendCodePoint(cp);
        });
        return b.toString();
    }

    // =====================================================================================
    // Corpus parity
    // =====================================================================================

    private static List<String> jsonl(Path file, int limit, String... fields) throws IOException {
        if (!Files.isRegularFile(file))
            fail("dataset " + file.toAbsolutePath().normalize() + " is missing (the tests run from model/, data/ is at the repository root)");
        List<String> out = new ArrayList<>();
        InputStream raw = Files.newInputStream(file);
        InputStream in = file.toString().endsWith(".gz") ? new GZIPInputStream(raw) : raw;
        try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null && out.size() < limit) {
                if (line.isBlank()) continue;
                Map<String, Object> o = Json.parseObject(line);
                StringBuilder b = new StringBuilder();
                for (String f : fields) {
                    Object v = o.get(f);
                    if (v instanceof String s && !s.isEmpty()) b.append(b.isEmpty() ? "" : " ").append(s);
                }
                out.add(b.toString());
            }
        }
        if (out.isEmpty()) fail("dataset " + file + " has no records");
        return out;
    }

    @Test
    void corpusParityMiniLm() throws IOException {
        WordPieceTokenizer ours = WordPieceTokenizer.fromTokenizerJson(minilmJson);
        Parity p = new Parity("MiniLM corpus");
        List<String> queries = new ArrayList<>(jsonl(DATA.resolve("scifact/queries.jsonl"), Integer.MAX_VALUE, "text"));
        queries.addAll(jsonl(DATA.resolve("arguana/queries.jsonl.gz"), Integer.MAX_VALUE, "text"));
        List<String> docs = jsonl(DATA.resolve("scifact/corpus.jsonl.gz"), 1500, "title", "text");
        for (String q : queries) {
            p.check(djl(minilmJson, 0), ours, q, 0);
            p.check(djl(minilmJson, 128), ours, q, 128);
        }
        for (String d : docs) {
            p.check(djl(minilmJson, 0), ours, d, 0);
            p.check(djl(minilmJson, 512), ours, d, 512);
            p.check(djl(minilmJson, 128), ours, d, 128);
        }
        // Sentences of the abstracts, one by one: many short inputs with their own edges.
        int sentences = 0;
        for (String d : docs.subList(0, 300)) {
            for (String s : d.split("(?<=[.!?])\\s+")) {
                p.check(djl(minilmJson, 0), ours, s, 0);
                sentences++;
            }
        }
        p.assertAll();
        assertTrue(p.count >= 2000, "only " + p.count + " strings compared");
        System.out.println("corpus parity: " + queries.size() + " queries, " + docs.size() + " documents, " + sentences + " sentences, " + p.count + " comparisons");
    }

    @Test
    void corpusParityBgeAndVocabTxt() throws IOException {
        WordPieceTokenizer bge = WordPieceTokenizer.fromTokenizerJson(bgeJson);
        WordPieceTokenizer vocabTxt = WordPieceTokenizer.fromVocabTxt(writeVocabTxt(minilmJson, tmp.resolve("vt")), true);
        Parity p = new Parity("bge / vocab.txt corpus");
        List<String> texts = new ArrayList<>(jsonl(DATA.resolve("scifact/queries.jsonl"), 500, "text"));
        texts.addAll(jsonl(DATA.resolve("arguana/queries.jsonl.gz"), 300, "text"));
        texts.addAll(jsonl(DATA.resolve("scifact/corpus.jsonl.gz"), 300, "title", "text"));
        for (String t : texts) {
            p.check(djl(bgeJson, 512), bge, t, 512);
            p.check(djl(minilmJson, 0), vocabTxt, t, 0);
        }
        p.assertAll();
    }

    // =====================================================================================
    // Hard cases
    // =====================================================================================

    private static final String LONG_101 = "a".repeat(101);
    private static final String LONG_100 = "b".repeat(100);

    static List<String> hardCases() {
        List<String> h = new ArrayList<>(List.of(
                "", " ", "   ", "\t", "\n", "\r\n", " \t\r\n ", "\u00A0", "\u3000", "\u2028\u2029",
                "Hello, world!", "HELLO WORLD", "hello    world", "  leading and trailing  ",
                // accents and combining marks
                "café résumé naïve", "Ñandú ÑANDÚ", "über Müller ÜBER", "Ångström Å", "Crème Brûlée",
                "e\u0301 a\u0300 o\u0308 n\u0303", "\u0041\u030A vs \u00C5", "Z\u0335\u0321a\u0336\u0322l\u0337go",
                "ǅ ǈ ǋ ǲ", "ﬁ ﬂ ﬃ", "Å Ω K", // compatibility characters (NFD leaves them alone)
                // CJK
                "中文字符", "我爱北京天安门。", "日本語のテキスト", "カタカナとひらがな", "한국어", "한국어 텍스트입니다",
                "混合English和中文123", "㐀㐁 𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 豈", "\uD840\uDC00x", "\uD86E\uDC20x\uD86E\uDD20",
                // emoji and symbols
                "👍🏽 great", "🧑‍🚀 astronaut", "👨‍👩‍👧‍👦", "🇫🇷 flag", "I ❤️ NY", "😀😃😄😁", "a😀b", "x🏽y",
                "©®™ ℃ ½ № ∑ ∞ ≠ ≤", "→ ← ↑ ↓ ⇒", "★☆♠♣", "𝐀𝐁𝐂 𝕏", "⁰¹²³ ₀₁₂",
                // control and invisible characters
                "a\u0000b", "a\u0007b", "tab\there", "line\r\nbreak", "zero\u200Bwidth", "soft\u00ADhyphen",
                "bom\uFEFFhere", "rtl\u200Fmark", "joiner\u200Dx", "\u0000\u0001\u0002", "a\u0085b", "a\u000Bb\u000Cc",
                "a\uFFFDb", "\uE000private\uF8FF", "a\u061Cb", "a\u2066b\u2069", "tag\uDB40\uDC41s",
                // long words
                LONG_101, LONG_100, "x".repeat(99), "é".repeat(100), "é".repeat(101), "😀".repeat(100), "😀".repeat(101),
                "pneumonoultramicroscopicsilicovolcanoconiosis", "Supercalifragilisticexpialidocious",
                "antidisestablishmentarianism " + LONG_101 + " end",
                // numbers and punctuation
                "3.14159", "1,000,000", "$12.50", "50%", "10-15 mg/kg", "p<0.05", "IL-6", "COVID-19", "(a)[b]{c}",
                "e.g., i.e., etc.", "don't won't can't", "\"quoted\" 'single'", "a--b...c!!!", "#hashtag @user",
                "x^2 + y_1 = z`", "~tilde|pipe\\back", "«guillemets» „quotes“ ‘curly’ “double”", "¿Qué? ¡Sí!",
                "1. 2) 3] (4)", "§ 12 ¶ 3", "•bullet·dot", "…ellipsis", "—dash–en", "⸻", "\u2E43 \u2E4F \u1B4E x",
                // URLs, emails, code
                "https://www.example.com/path?query=1&x=y#frag", "user.name+tag@example.co.uk",
                "C:\\Users\\test\\file.txt", "<html><body>text</body></html>", "{\"json\": [1, 2, 3]}",
                // literal special tokens
                "[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "the [MASK] sat", "[CLS] hello [SEP] world [SEP]",
                "a[MASK]b", "[mask] [Mask]", "[MASK][MASK]", "[[MASK]]", "[MAS", "[MASK", "MASK]", "x [UNK] y",
                // scripts
                "Ελληνικά κείμενα ΣΟΦΙΑ", "ΟΔΟΣ", "Русский текст ЁЖИК", "العربية نص عربي", "مَرْحَبًا",
                "עברית טקסט", "שָׁלוֹם", "ภาษาไทย ข้อความ", "हिन्दी पाठ देवनागरी", "ক্ষ বাংলা", "தமிழ்",
                "ქართული", "Հայերեն", "ትግርኛ", "ᚠᚢᚦ", "ꦗꦮ", "𓀀𓀁", "Tiếng Việt có dấu", "Türkçe İstanbul ıi",
                // fullwidth and case edge cases
                "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３", "！？（）", "İ", "İstanbul", "ISTANBUL", "ß", "Straße STRASSE",
                "ẞ", "Σ ς σ ΣΑΣ", "ǰ", "ŉ", "ﬀ", "ΐ", "K Å Ω"
        ));
        // Mixed, longer text that exceeds the small limits.
        h.add("The quick brown fox — jumps over the lazy dog! 中文 😀 café [MASK] 3.14 https://x.y/z ".repeat(30));
        h.add("word ".repeat(600));
        h.add("a".repeat(5000));
        h.add("😀 ".repeat(700));
        // Longer than the normalization chunk, with marks and CJK right after the spaces.
        h.add("Zoë \u0301a 中文 Ünïcödé [MASK] x\u0308y ".repeat(400));
        h.add("word ".repeat(3000));
        return h;
    }

    @Test
    void hardCasesAllConfigs() throws IOException {
        WordPieceTokenizer minilm = WordPieceTokenizer.fromTokenizerJson(minilmJson);
        WordPieceTokenizer bge = WordPieceTokenizer.fromTokenizerJson(bgeJson);
        WordPieceTokenizer vocabTxt = WordPieceTokenizer.fromVocabTxt(writeVocabTxt(minilmJson, tmp.resolve("hv")), true);
        Parity p = new Parity("hard cases");
        for (String s : hardCases()) {
            for (int max : new int[] {0, 512, 128, 8, 3, 2}) {
                p.check(djl(minilmJson, max), minilm, s, max);
                p.check(djl(bgeJson, max), bge, s, max);
                p.check(djl(minilmJson, max), vocabTxt, s, max);
            }
        }
        p.assertAll();
    }

    /** The other BertNormalizer options, via edited copies of the MiniLM file. */
    @Test
    void normalizerOptions() throws IOException {
        Parity p = new Parity("normalizer options");
        String[] variants = {
            "{\"type\": \"BertNormalizer\", \"clean_text\": true, \"handle_chinese_chars\": true, \"strip_accents\": null, \"lowercase\": false}",
            "{\"type\": \"BertNormalizer\", \"clean_text\": true, \"handle_chinese_chars\": true, \"strip_accents\": false, \"lowercase\": true}",
            "{\"type\": \"BertNormalizer\", \"clean_text\": false, \"handle_chinese_chars\": false, \"strip_accents\": true, \"lowercase\": false}",
            "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"BertNormalizer\", \"clean_text\": true, \"handle_chinese_chars\": false, \"strip_accents\": true, \"lowercase\": true}]}",
            "null",
        };
        String base = Files.readString(minilmJson);
        for (int v = 0; v < variants.length; v++) {
            Path path = tmp.resolve("norm" + v + ".json");
            Files.writeString(path, replaceSection(base, "normalizer", variants[v]));
            WordPieceTokenizer ours = WordPieceTokenizer.fromTokenizerJson(path);
            for (String s : hardCases()) {
                p.check(djl(path, 0), ours, s, 0);
                p.check(djl(path, 128), ours, s, 128);
            }
        }
        // No pre-tokenizer: each piece between added tokens is one WordPiece word.
        Path noPre = tmp.resolve("nopre.json");
        Files.writeString(noPre, replaceSection(base, "pre_tokenizer", "null"));
        WordPieceTokenizer ours = WordPieceTokenizer.fromTokenizerJson(noPre);
        for (String s : hardCases()) p.check(djl(noPre, 0), ours, s, 0);
        p.assertAll();
    }

    /** Added tokens with normalized / single_word / lstrip / rstrip, and an extra id range. */
    @Test
    void addedTokenOptions() throws IOException {
        String base = Files.readString(minilmJson);
        String added = "[{\"id\": 0, \"content\": \"[PAD]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true},"
                + "{\"id\": 100, \"content\": \"[UNK]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true},"
                + "{\"id\": 101, \"content\": \"[CLS]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true},"
                + "{\"id\": 102, \"content\": \"[SEP]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true},"
                + "{\"id\": 103, \"content\": \"[MASK]\", \"single_word\": false, \"lstrip\": true, \"rstrip\": false, \"normalized\": false, \"special\": true},"
                + "{\"id\": 30522, \"content\": \"Hello World\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": true, \"special\": false},"
                + "{\"id\": 30523, \"content\": \"<ent>\", \"single_word\": true, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": false},"
                + "{\"id\": 30524, \"content\": \"<R>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": true, \"normalized\": false, \"special\": false},"
                + "{\"id\": 30525, \"content\": \"Café\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": true, \"special\": false},"
                + "{\"id\": 30526, \"content\": \"<ent>x\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": false}]";
        Path path = tmp.resolve("added.json");
        Files.writeString(path, replaceSection(base, "added_tokens", added));
        WordPieceTokenizer ours = WordPieceTokenizer.fromTokenizerJson(path);
        assertEquals(30527, ours.vocabSize());
        assertEquals("<ent>", ours.token(30523));
        Parity p = new Parity("added token options");
        List<String> cases = new ArrayList<>(hardCases());
        cases.addAll(List.of(
                "Hello World", "hello world", "HELLO WORLD!", "sayhello worldly", "Hello  World", "hello\tworld",
                "x<ent>y", "x <ent> y", "<ent>", "<ent>x", "<ent>xy", "a <ent>, b", "é<ent>", "1<ent>", "_<ent>",
                "<R>   tail", "<R>", "a<R>\t\nb", "a   [MASK]   b", "[MASK]", "a[MASK]", " \t [MASK]", "[MASK] [MASK]",
                "café CAFÉ cafe\u0301 Cafe", "Hello World<ent> <R> [MASK]"));
        for (String s : cases) {
            p.check(djl(path, 0), ours, s, 0);
            p.check(djl(path, 8), ours, s, 8);
        }
        p.assertAll();
    }

    /**
     * Every code point in planes 0, 1, 2 and 14 between two letters, through the full BERT
     * normalizer: this pins clean_text, the whitespace / punctuation / Chinese classes, NFD,
     * mark stripping and lowercasing to HF's, character by character.
     */
    @Test
    void everyCodePoint() throws IOException {
        WordPieceTokenizer minilm = WordPieceTokenizer.fromTokenizerJson(minilmJson);
        Path cased = tmp.resolve("cased-cp.json");
        Files.writeString(cased, replaceSection(Files.readString(minilmJson), "normalizer",
                "{\"type\": \"BertNormalizer\", \"clean_text\": false, \"handle_chinese_chars\": true, \"strip_accents\": false, \"lowercase\": false}"));
        WordPieceTokenizer casedOurs = WordPieceTokenizer.fromTokenizerJson(cased);
        Parity p = new Parity("every code point");
        int[][] ranges = {{0, 0xD7FF}, {0xE000, 0x2FFFF}, {0xE0000, 0xE01FF}};
        for (int[] r : ranges) {
            for (int cp = r[0]; cp <= r[1]; cp++) {
                String c = Character.toString(cp);
                p.check(djl(minilmJson, 0), minilm, "a" + c + "b", 0);
                p.check(djl(cased, 0), casedOurs, "É" + c + "x", 0);
            }
        }
        p.assertAll();
    }

    // =====================================================================================
    // API and loading
    // =====================================================================================

    @Test
    void api() throws IOException {
        WordPieceTokenizer t = WordPieceTokenizer.fromTokenizerJson(minilmJson);
        assertEquals(30522, t.vocabSize());
        assertEquals(0, t.padId());
        assertEquals(100, t.unkId());
        assertEquals(2, t.specialTokenCount());
        assertEquals(128, t.truncationMaxLength());
        assertEquals("[CLS]", t.token(101));
        assertEquals(102, t.id("[SEP]"));
        assertEquals(-1, t.id("no-such-token"));
        assertEquals(null, t.token(-1));
        assertEquals(null, t.token(30522));
        assertArrayEquals(new int[] {101, 102}, t.encode(""));
        assertArrayEquals(new int[] {101, 102}, t.encode("hello world", 2));
        assertEquals(List.of("hello", ",", "world", "!"), t.tokenize("Hello, World!"));
        // The file's padding (fixed 128) and truncation are not applied.
        assertEquals(4, t.encode("hello world").length);
        assertEquals(602, t.encode("word ".repeat(600)).length);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.encode("x", 1));
        assertTrue(e.getMessage().contains("maxLength 1"), e.getMessage());
    }

    @Test
    void loadChoosesFileByNameAndDirectory() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("model-dir"));
        Path vocabOnly = writeVocabTxt(minilmJson, dir);
        WordPieceTokenizer fromVocab = WordPieceTokenizer.load(dir);
        assertEquals(30522, fromVocab.vocabSize());
        assertArrayEquals(new int[] {101, 7592, 2088, 102}, fromVocab.encode("Hello World"));
        assertArrayEquals(fromVocab.encode("Café [MASK]"), WordPieceTokenizer.load(vocabOnly).encode("Café [MASK]"));

        // tokenizer_config.json's do_lower_case=false makes a vocab.txt cased.
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"do_lower_case\": false}");
        assertEquals(List.of("[UNK]"), WordPieceTokenizer.load(dir).tokenize("Hello"));
        Files.delete(dir.resolve("tokenizer_config.json"));

        // With both present the tokenizer.json wins (its truncation section proves which one).
        Files.copy(minilmJson, dir.resolve("tokenizer.json"));
        assertEquals(128, WordPieceTokenizer.load(dir).truncationMaxLength());
        assertEquals(-1, WordPieceTokenizer.load(vocabOnly).truncationMaxLength());
        assertEquals(128, WordPieceTokenizer.load(dir.resolve("tokenizer.json")).truncationMaxLength());
    }

    // =====================================================================================
    // Errors: the message names the file and says what is wrong, on one line
    // =====================================================================================

    private static void assertOneLineNaming(Exception e, Path file, String... words) {
        String m = e.getMessage();
        assertTrue(m.contains(file.toString()), "message does not name the file: " + m);
        for (String w : words) assertTrue(m.contains(w), "message lacks '" + w + "': " + m);
        assertFalse(m.contains("\n") || m.contains("\r"), "message is not one line: " + m);
    }

    @Test
    void missingFile() {
        Path missing = tmp.resolve("does-not-exist/tokenizer.json");
        assertOneLineNaming(assertThrows(NoSuchFileException.class, () -> WordPieceTokenizer.fromTokenizerJson(missing)), missing, "not found");
        assertOneLineNaming(assertThrows(NoSuchFileException.class, () -> WordPieceTokenizer.fromVocabTxt(missing.resolveSibling("vocab.txt"), true)),
                missing.resolveSibling("vocab.txt"), "not found");
        assertOneLineNaming(assertThrows(NoSuchFileException.class, () -> WordPieceTokenizer.load(missing)), missing, "not found");
    }

    @Test
    void emptyDirectory() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("empty-dir"));
        assertOneLineNaming(assertThrows(NoSuchFileException.class, () -> WordPieceTokenizer.load(dir)), dir, "neither tokenizer.json nor vocab.txt");
    }

    @Test
    void malformedJson() throws IOException {
        Path bad = tmp.resolve("malformed/tokenizer.json");
        Files.createDirectories(bad.getParent());
        Files.writeString(bad, "{\"model\": {\"type\": \"WordPiece\",\n \"vocab\": {\"a\": 0,, }}}");
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(bad)), bad, "malformed JSON", "line 2");
        Files.writeString(bad, "[1, 2, 3]");
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(bad)), bad, "malformed JSON");
        Files.write(bad, new byte[] {'{', (byte) 0xC3, (byte) 0x28, '}'});
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(bad)), bad, "UTF-8");
    }

    @Test
    void unsupportedPipelines() throws IOException {
        String base = Files.readString(minilmJson);
        Path bpe = tmp.resolve("bpe/tokenizer.json");
        Files.createDirectories(bpe.getParent());
        Files.writeString(bpe, set(base, "BPE", "model", "type"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(bpe)), bpe,
                "model.type 'BPE' is not supported (only WordPiece)");

        Path nfkc = tmp.resolve("nfkc.json");
        Files.writeString(nfkc, replaceSection(base, "normalizer", "{\"type\": \"NFKC\"}"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(nfkc)), nfkc, "normalizer.type 'NFKC'");

        Path seq = tmp.resolve("seq.json");
        Files.writeString(seq, replaceSection(base, "normalizer",
                "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFD\"}, {\"type\": \"Lowercase\"}]}"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(seq)), seq, "Sequence");

        Path meta = tmp.resolve("metaspace.json");
        Files.writeString(meta, replaceSection(base, "pre_tokenizer", "{\"type\": \"Metaspace\"}"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(meta)), meta, "pre_tokenizer.type 'Metaspace'");

        Path roberta = tmp.resolve("roberta.json");
        Files.writeString(roberta, replaceSection(base, "post_processor", "{\"type\": \"RobertaProcessing\"}"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(roberta)), roberta, "RobertaProcessing");

        Path noUnk = tmp.resolve("nounk.json");
        Files.writeString(noUnk, set(base, "<unk>", "model", "unk_token"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(noUnk)), noUnk, "<unk>");

        Path badBool = tmp.resolve("badbool.json");
        Files.writeString(badBool, set(base, "yes", "normalizer", "lowercase"));
        assertOneLineNaming(assertThrows(IllegalArgumentException.class, () -> WordPieceTokenizer.fromTokenizerJson(badBool)), badBool, "normalizer.lowercase");
    }

    @Test
    void bertProcessingAndNoPostProcessor() throws IOException {
        String base = Files.readString(minilmJson);
        Path bert = tmp.resolve("bertproc.json");
        Files.writeString(bert, replaceSection(base, "post_processor", "{\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 102], \"cls\": [\"[CLS]\", 101]}"));
        Path none = tmp.resolve("nopost.json");
        Files.writeString(none, replaceSection(base, "post_processor", "null"));
        Parity p = new Parity("post processors");
        WordPieceTokenizer b = WordPieceTokenizer.fromTokenizerJson(bert);
        WordPieceTokenizer n = WordPieceTokenizer.fromTokenizerJson(none);
        assertEquals(0, n.specialTokenCount());
        for (String s : List.of("hello world", "", "a b c d e f g h i j k l m n o p", "[MASK] x")) {
            p.check(djl(bert, 0), b, s, 0);
            p.check(djl(bert, 8), b, s, 8);
            p.check(djl(none, 0), n, s, 0);
            p.check(djl(none, 8), n, s, 8);
        }
        p.assertAll();
    }

    /** Not a benchmark, a smoke check that tokenizing a corpus is fast; prints the numbers. */
    @Test
    void throughput() throws IOException {
        WordPieceTokenizer t = WordPieceTokenizer.fromTokenizerJson(minilmJson);
        List<String> docs = jsonl(DATA.resolve("scifact/corpus.jsonl.gz"), Integer.MAX_VALUE, "title", "text");
        long chars = 0;
        for (String d : docs) chars += d.length();
        long tokens = 0;
        for (int round = 0; round < 3; round++) { // warm-up rounds, the last one is timed
            long t0 = System.nanoTime();
            tokens = 0;
            for (String d : docs) tokens += t.encode(d).length;
            double s = (System.nanoTime() - t0) / 1e9;
            if (round == 2)
                System.out.printf("throughput: %d docs, %.1f MB chars, %d tokens untruncated in %.3f s (%.1f MB/s)%n",
                        docs.size(), chars / 1e6, tokens, s, chars / 1e6 / s);
        }
        assertTrue(tokens > 0);
        List<String> some = docs.subList(0, 1000);
        long t0 = System.nanoTime();
        for (String d : some) t.encode(d, 512);
        double ours512 = (System.nanoTime() - t0) / 1e9;
        HuggingFaceTokenizer hf = djl(minilmJson, 512);
        t0 = System.nanoTime();
        for (String d : some) hf.encode(d);
        double hf512 = (System.nanoTime() - t0) / 1e9;
        System.out.printf("1000 docs at maxLength 512: ours %.3f s, HF through DJL (JNI included) %.3f s%n", ours512, hf512);
    }

    // =====================================================================================
    // Helpers
    // =====================================================================================

    /** Replaces the value of a top-level section with the given JSON text. */
    private static String replaceSection(String json, String key, String value) {
        Map<String, Object> root = Json.parseObject(json);
        if (!root.containsKey(key)) throw new IllegalArgumentException("no section " + key);
        root.put(key, Json.parse(value));
        return Json.write(root);
    }

    /** Sets root[path[0]][path[1]]... to value (which must already exist). */
    @SuppressWarnings("unchecked")
    private static String set(String json, Object value, String... path) {
        Map<String, Object> root = Json.parseObject(json);
        Map<String, Object> m = root;
        for (int i = 0; i < path.length - 1; i++) m = (Map<String, Object>) m.get(path[i]);
        if (!m.containsKey(path[path.length - 1])) throw new IllegalArgumentException("no key " + String.join(".", path));
        m.put(path[path.length - 1], value);
        return Json.write(root);
    }

    /** Writes tokenizer.json's model.vocab as a vocab.txt (one token per line, by id). */
    private static Path writeVocabTxt(Path tokenizerJson, Path dir) throws IOException {
        Map<String, Object> root = Json.parseObject(Files.readString(tokenizerJson));
        @SuppressWarnings("unchecked")
        Map<String, Object> vocab = (Map<String, Object>) ((Map<String, Object>) root.get("model")).get("vocab");
        String[] byId = new String[vocab.size()];
        for (Map.Entry<String, Object> e : vocab.entrySet()) byId[(int) (long) (Long) e.getValue()] = e.getKey();
        Files.createDirectories(dir);
        Path out = dir.resolve("vocab.txt");
        Files.writeString(out, String.join("\n", byId) + "\n");
        return out;
    }
}
