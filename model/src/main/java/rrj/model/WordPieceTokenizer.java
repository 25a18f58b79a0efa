/*
 * WordPieceTokenizer: turns text into BERT input ids, reproducing Hugging Face `tokenizers`
 * id for id for the BERT family (all-MiniLM, bge, e5, ... any tokenizer.json whose pipeline is
 * BertNormalizer + BertPreTokenizer + WordPiece + TemplateProcessing/BertProcessing).
 *
 * What it mirrors (HF tokenizers, Rust):
 *   - added tokens: "[MASK]", "[CLS]", ... written literally in the text are split out before
 *     normalization (AddedVocabulary, leftmost-longest match, honouring single_word / lstrip /
 *     rstrip / normalized);
 *   - BertNormalizer: clean_text, handle_chinese_chars, strip_accents (NFD, then drop Mn),
 *     lowercase (Rust char::to_lowercase per code point, so 'Σ' is always 'σ' and 'İ' is "i̇");
 *   - BertPreTokenizer: split on whitespace, every punctuation character is its own word;
 *   - WordPiece: greedy longest-match-first with the "##" continuation prefix, a word longer than
 *     max_input_chars_per_word or one that cannot be fully split is a single unk token;
 *   - post-processor: the single-sequence template ([CLS] A [SEP]), truncation on the right with
 *     the special tokens counted inside max length (HF "truncation on", LongestFirst/Right).
 *
 * What it deliberately does not do:
 *   - padding and the file's own "truncation"/"padding" sections: padding is the engine's
 *     business (it batches), and the caller passes the max length it wants; the file's values
 *     are ignored (the file's max length is reported by truncationMaxLength(), nothing more);
 *   - sentence pairs, offsets, attention masks, decoding: the engine needs ids only (type ids
 *     are all 0 for a single sequence, templates that say otherwise are refused);
 *   - other models/normalizers/pre-tokenizers (BPE, Unigram, NFKC, Metaspace, ...): they are
 *     refused at load time with a message naming the file, rather than silently tokenized wrong.
 *
 * Unicode: HF classifies characters with the `unicode_categories` crate, whose tables are from
 * Unicode 8.0, while the JDK knows Unicode 16. Using Character.getType would differ from HF on
 * every punctuation mark, format character and combining mark added since 2015 (e.g. U+2E43,
 * U+08E2, U+1E94A), so the sets HF uses are embedded below as range tables (HF_CONTROL,
 * HF_PUNCT, HF_MN), taken from HF itself by probing every code point through tokenizers 0.21.4
 * (the native library of DJL 0.36.0). Whitespace is Rust's char::is_whitespace, lowercasing is the JDK's
 * Character.toLowerCase(int) (identical to Rust's for every code point except U+0130), NFD is
 * java.text.Normalizer. WordPieceTokenizerTest checks all of this against HF.
 *
 * Performance: no regex and no per-character String allocation in the hot path. The vocab is
 * looked up through an open-addressing table keyed by char slices, with the hash of every
 * candidate prefix computed once per position, so the greedy longest-match loop allocates
 * nothing. Encoding stops as soon as the truncation limit is reached. Instances are immutable
 * and safe to share between threads.
 */
package rrj.model;

import java.io.IOException;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public final class WordPieceTokenizer {

    // ---- normalizer (BertNormalizer); all false when the file has no normalizer ----
    private final boolean cleanText;
    private final boolean handleChineseChars;
    private final boolean stripAccents;
    private final boolean lowercase;
    /** false: the pre-tokenizer is null, so each piece between added tokens is one word. */
    private final boolean bertPreTokenizer;

    // ---- WordPiece model ----
    private final HashMap<String, Integer> tokenToId;
    private final String[] idToToken;
    /** Whole vocab: the first piece of a word is looked up here. */
    private final SliceTable wordStart;
    /** Tokens that start with the continuation prefix, stored without it. */
    private final SliceTable continuation;
    private final int unkId;
    private final int maxInputCharsPerWord;
    /** Longest key of either table, in chars: the size of the prefix-hash scratch. */
    private final int maxTokenLen;

    // ---- added tokens: matched in the raw text (normalized=false) / the normalized text ----
    private final AddedTokens rawAdded;
    private final AddedTokens normalizedAdded;

    // ---- post-processor ----
    private final int[] prefixIds;
    private final int[] suffixIds;

    private final int padId;
    private final int truncationMaxLength;

    private WordPieceTokenizer(Builder b) {
        this.cleanText = b.cleanText;
        this.handleChineseChars = b.handleChineseChars;
        this.stripAccents = b.stripAccents;
        this.lowercase = b.lowercase;
        this.bertPreTokenizer = b.bertPreTokenizer;
        this.tokenToId = b.tokenToId;
        this.idToToken = b.idToToken;
        this.wordStart = b.wordStart;
        this.continuation = b.continuation;
        this.unkId = b.unkId;
        this.maxInputCharsPerWord = b.maxInputCharsPerWord;
        this.maxTokenLen = Math.max(b.wordStart.maxLen, b.continuation.maxLen);
        this.rawAdded = b.rawAdded;
        this.normalizedAdded = b.normalizedAdded;
        this.prefixIds = b.prefixIds;
        this.suffixIds = b.suffixIds;
        this.padId = b.padId;
        this.truncationMaxLength = b.truncationMaxLength;
    }

    // =====================================================================================
    // Loading
    // =====================================================================================

    /**
     * Loads {@code path}: a tokenizer.json, a vocab.txt, or a directory holding one of them
     * (tokenizer.json preferred). For a vocab.txt in a directory whose tokenizer_config.json
     * says {@code "do_lower_case": false}, the tokenizer is cased; otherwise lowercase.
     *
     * @throws NoSuchFileException if nothing usable is there
     * @throws IllegalArgumentException if the file is malformed or not supported (message names it)
     */
    public static WordPieceTokenizer load(Path path) throws IOException {
        if (Files.isDirectory(path)) {
            Path json = path.resolve("tokenizer.json");
            if (Files.isRegularFile(json)) return fromTokenizerJson(json);
            Path vocab = path.resolve("vocab.txt");
            if (Files.isRegularFile(vocab)) return fromVocabTxt(vocab, doLowerCase(path.resolve("tokenizer_config.json")));
            throw new NoSuchFileException(path.toString(), null, "directory has neither tokenizer.json nor vocab.txt");
        }
        if (!Files.exists(path)) throw new NoSuchFileException(path.toString(), null, "file not found");
        String name = path.getFileName().toString().toLowerCase(java.util.Locale.ROOT);
        if (name.endsWith(".json")) return fromTokenizerJson(path);
        if (name.endsWith(".txt")) {
            Path parent = path.toAbsolutePath().getParent();
            return fromVocabTxt(path, parent == null || doLowerCase(parent.resolve("tokenizer_config.json")));
        }
        throw new IllegalArgumentException(path + ": not a tokenizer file (expected tokenizer.json, vocab.txt or a directory holding one)");
    }

    /** do_lower_case from a transformers tokenizer_config.json; true when absent or unreadable. */
    private static boolean doLowerCase(Path config) {
        if (!Files.isRegularFile(config)) return true;
        try {
            Object v = Json.parseObject(Files.readString(config)).get("do_lower_case");
            return !(v instanceof Boolean bv) || bv;
        } catch (IOException | RuntimeException e) {
            return true; // the config is optional metadata; the BERT default applies
        }
    }

    /**
     * Reads a plain BERT vocab.txt (one token per line, id = line number) with the options of
     * transformers' BertTokenizerFast: clean_text, handle_chinese_chars, strip_accents following
     * {@code lowercase}, [CLS] A [SEP], and [PAD]/[UNK]/[CLS]/[SEP]/[MASK] as special added
     * tokens (so "[MASK]" typed in the text stays one token).
     */
    public static WordPieceTokenizer fromVocabTxt(Path path, boolean lowercase) throws IOException {
        String text = readUtf8(path);
        Builder b = new Builder(path);
        b.cleanText = true;
        b.handleChineseChars = true;
        b.stripAccents = lowercase;
        b.lowercase = lowercase;
        b.bertPreTokenizer = true;
        HashMap<String, Integer> vocab = new HashMap<>();
        int id = 0;
        int start = 0;
        int n = text.length();
        if (n > 0 && text.charAt(0) == '\uFEFF') start = 1; // a BOM is not part of the first token
        while (start < n) {
            int nl = text.indexOf('\n', start);
            int end = nl < 0 ? n : nl;
            // HF's WordPiece::read_file trims trailing whitespace (and so "\r") from each line.
            int e = end;
            while (e > start && isWhitespace(text.charAt(e - 1))) e--;
            vocab.put(text.substring(start, e), id++);
            start = end + 1;
        }
        if (vocab.isEmpty()) throw b.error("vocab is empty");
        b.setVocab(vocab, "[UNK]", "##", 100);
        List<Added> added = new ArrayList<>();
        for (String special : new String[] {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
            Integer sid = vocab.get(special);
            if (sid != null) added.add(new Added(special, sid, false, false, false, false));
        }
        b.setAddedTokens(added);
        Integer cls = vocab.get("[CLS]");
        Integer sep = vocab.get("[SEP]");
        if (cls == null || sep == null) throw b.error("vocab has no [CLS] or [SEP] token, needed for the BERT template");
        b.prefixIds = new int[] {cls};
        b.suffixIds = new int[] {sep};
        b.padId = vocab.getOrDefault("[PAD]", 0);
        b.truncationMaxLength = -1;
        return new WordPieceTokenizer(b);
    }

    /**
     * Reads a Hugging Face tokenizer.json. Supported: model WordPiece; normalizer BertNormalizer
     * or null (or a Sequence holding one BertNormalizer); pre_tokenizer BertPreTokenizer or null
     * (or a Sequence holding one BertPreTokenizer); post_processor TemplateProcessing,
     * BertProcessing or null (then no special tokens are added, as in HF). Anything else is
     * refused. The file's "padding" and "truncation" sections are ignored (see class comment).
     */
    public static WordPieceTokenizer fromTokenizerJson(Path path) throws IOException {
        String text = readUtf8(path);
        Builder b = new Builder(path);
        Map<String, Object> root;
        try {
            root = Json.parseObject(text);
        } catch (Json.JsonException e) {
            throw b.error("malformed JSON: " + e.getMessage());
        }

        // ---- model ----
        Map<String, Object> model = b.object(root.get("model"), "model", false);
        Object type = model.get("type");
        if (type == null) {
            // Old files have no "type"; HF then tries each model in turn. Only accept the
            // unambiguous WordPiece shape.
            if (!model.containsKey("continuing_subword_prefix") || model.containsKey("merges"))
                throw b.error("model.type is missing and the model does not look like WordPiece");
        } else if (!"WordPiece".equals(type)) {
            throw b.error("model.type '" + type + "' is not supported (only WordPiece)");
        }
        Map<String, Object> vocabJson = b.object(model.get("vocab"), "model.vocab", false);
        HashMap<String, Integer> vocab = new HashMap<>(vocabJson.size() * 2);
        for (Map.Entry<String, Object> e : vocabJson.entrySet()) {
            vocab.put(e.getKey(), b.intValue(e.getValue(), "model.vocab[\"" + e.getKey() + "\"]"));
        }
        if (vocab.isEmpty()) throw b.error("model.vocab is empty");
        String unk = b.string(model.get("unk_token"), "model.unk_token", "[UNK]");
        String prefix = b.string(model.get("continuing_subword_prefix"), "model.continuing_subword_prefix", "##");
        Object maxChars = model.get("max_input_chars_per_word");
        int maxInputChars = maxChars == null ? 100 : b.intValue(maxChars, "model.max_input_chars_per_word");
        b.setVocab(vocab, unk, prefix, maxInputChars);

        // ---- normalizer ----
        Map<String, Object> norm = single(b, root.get("normalizer"), "normalizer", "BertNormalizer");
        if (norm != null) {
            b.cleanText = b.bool(norm.get("clean_text"), "normalizer.clean_text", true);
            b.handleChineseChars = b.bool(norm.get("handle_chinese_chars"), "normalizer.handle_chinese_chars", true);
            b.lowercase = b.bool(norm.get("lowercase"), "normalizer.lowercase", true);
            // strip_accents: null means "follow lowercase" (BertNormalizer::normalize).
            Object sa = norm.get("strip_accents");
            b.stripAccents = sa == null ? b.lowercase : b.bool(sa, "normalizer.strip_accents", false);
        }

        // ---- pre-tokenizer ----
        b.bertPreTokenizer = single(b, root.get("pre_tokenizer"), "pre_tokenizer", "BertPreTokenizer") != null;

        // ---- added tokens ----
        List<Added> added = new ArrayList<>();
        Object at = root.get("added_tokens");
        if (at != null) {
            if (!(at instanceof List<?> list)) throw b.error("added_tokens must be an array");
            for (int i = 0; i < list.size(); i++) {
                String where = "added_tokens[" + i + "]";
                Map<String, Object> t = b.object(list.get(i), where, false);
                String content = b.string(t.get("content"), where + ".content", null);
                if (content == null) throw b.error(where + ".content is missing");
                int id = b.intValue(t.get("id"), where + ".id");
                boolean special = b.bool(t.get("special"), where + ".special", false);
                added.add(new Added(content, id,
                        b.bool(t.get("single_word"), where + ".single_word", false),
                        b.bool(t.get("lstrip"), where + ".lstrip", false),
                        b.bool(t.get("rstrip"), where + ".rstrip", false),
                        b.bool(t.get("normalized"), where + ".normalized", !special)));
            }
        }
        b.setAddedTokens(added);

        // ---- post-processor ----
        Object ppo = root.get("post_processor");
        if (ppo == null) {
            b.prefixIds = new int[0];
            b.suffixIds = new int[0];
        } else {
            Map<String, Object> pp = b.object(ppo, "post_processor", false);
            Object ppType = pp.get("type");
            if ("TemplateProcessing".equals(ppType)) {
                b.readTemplate(pp);
            } else if ("BertProcessing".equals(ppType)) {
                b.prefixIds = new int[] {b.pairId(pp.get("cls"), "post_processor.cls")};
                b.suffixIds = new int[] {b.pairId(pp.get("sep"), "post_processor.sep")};
            } else {
                throw b.error("post_processor.type '" + ppType + "' is not supported (only TemplateProcessing, BertProcessing)");
            }
        }

        Integer pad = b.tokenToId.get("[PAD]");
        Object padding = root.get("padding");
        if (pad == null && padding instanceof Map<?, ?> pm && pm.get("pad_id") instanceof Long l) pad = (int) (long) l;
        b.padId = pad == null ? 0 : pad;
        Object trunc = root.get("truncation");
        b.truncationMaxLength = trunc instanceof Map<?, ?> tm && tm.get("max_length") instanceof Long l ? (int) (long) l : -1;
        return new WordPieceTokenizer(b);
    }

    /**
     * A normalizer / pre-tokenizer section: null, the one supported type, or a Sequence holding
     * exactly that one type. Returns the section, or null when there is none.
     */
    private static Map<String, Object> single(Builder b, Object section, String where, String supported) {
        if (section == null) return null;
        Map<String, Object> m = b.object(section, where, false);
        Object type = m.get("type");
        if (supported.equals(type)) return m;
        if ("Sequence".equals(type)) {
            Object items = m.get(where.equals("normalizer") ? "normalizers" : "pretokenizers");
            if (items instanceof List<?> l && l.size() == 1) {
                Map<String, Object> inner = b.object(l.get(0), where + ".Sequence[0]", false);
                if (supported.equals(inner.get("type"))) return inner;
            }
            throw b.error(where + " Sequence is supported only when it holds a single " + supported);
        }
        throw b.error(where + ".type '" + type + "' is not supported (only " + supported + " or null)");
    }

    private static String readUtf8(Path path) throws IOException {
        if (!Files.exists(path)) throw new NoSuchFileException(path.toString(), null, "file not found");
        if (Files.isDirectory(path)) throw new IllegalArgumentException(path + ": is a directory, expected a tokenizer file");
        try {
            return Files.readString(path);
        } catch (CharacterCodingException e) {
            throw new IllegalArgumentException(path + ": not valid UTF-8", e);
        }
    }

    // =====================================================================================
    // Public API
    // =====================================================================================

    /** Ids of {@code text} with the special tokens ([CLS] ... [SEP]) and no truncation. */
    public int[] encode(String text) {
        return encode(text, Integer.MAX_VALUE);
    }

    /**
     * Ids of {@code text} with the special tokens, at most {@code maxLength} of them: the word
     * pieces are cut on the right so that they and the special tokens fit, as HF does with
     * truncation enabled.
     *
     * @throws IllegalArgumentException if maxLength cannot even hold the special tokens
     */
    public int[] encode(String text, int maxLength) {
        int specials = prefixIds.length + suffixIds.length;
        if (maxLength < specials)
            throw new IllegalArgumentException("maxLength " + maxLength + " is smaller than the " + specials + " special tokens");
        IdBuffer out = new IdBuffer(maxLength - specials, text.length(), maxTokenLen);
        for (int id : prefixIds) out.add(id); // limit counts pieces only; shift below
        out.limit += prefixIds.length;
        encodePieces(text, out);
        int n = Math.min(out.n, out.limit);
        int[] ids = Arrays.copyOf(out.a, n + suffixIds.length);
        System.arraycopy(suffixIds, 0, ids, n, suffixIds.length);
        return ids;
    }

    /** The word-piece tokens of {@code text}, without special tokens (for debugging and tests). */
    public List<String> tokenize(String text) {
        IdBuffer out = new IdBuffer(Integer.MAX_VALUE, text.length(), maxTokenLen);
        encodePieces(text, out);
        List<String> tokens = new ArrayList<>(out.n);
        for (int i = 0; i < out.n; i++) tokens.add(token(out.a[i]));
        return tokens;
    }

    /** Number of ids: one more than the largest id (the embedding matrix needs this many rows). */
    public int vocabSize() { return idToToken.length; }

    /** Id of the padding token: [PAD] if the vocab has it, else the file's pad_id, else 0. */
    public int padId() { return padId; }

    /** The unk token's id. */
    public int unkId() { return unkId; }

    /** How many special tokens the template adds around a single sequence (2 for BERT). */
    public int specialTokenCount() { return prefixIds.length + suffixIds.length; }

    /** max_length of the tokenizer.json "truncation" section, -1 if none (informational only). */
    public int truncationMaxLength() { return truncationMaxLength; }

    /** The token with this id, or null if no token has it. */
    public String token(int id) {
        return id >= 0 && id < idToToken.length ? idToToken[id] : null;
    }

    /** The id of this token (vocab or added token), or -1. */
    public int id(String token) {
        Integer id = tokenToId.get(token);
        return id == null ? -1 : id;
    }

    // =====================================================================================
    // Encoding pipeline
    // =====================================================================================

    /**
     * Per-call state: the growable id list with its soft limit (words are finished, then the
     * list is cut) and scratch arrays, so nothing is allocated per word.
     */
    private static final class IdBuffer {
        int[] a;
        int n;
        int limit;
        final int[] prefixHash;
        /** {id, start, stop} of the last added-token match; two, as the searches nest. */
        final int[] rawMatch = new int[3], normalizedMatch = new int[3];

        IdBuffer(int limit, int textLength, int maxTokenLen) {
            this.limit = limit;
            this.a = new int[Math.max(8, Math.min(limit, textLength / 3 + 8))];
            this.prefixHash = new int[maxTokenLen + 1];
        }

        void add(int id) {
            if (n == a.length) a = Arrays.copyOf(a, a.length * 2);
            a[n++] = id;
        }

        boolean full() { return n >= limit; }
    }

    /** Reusable char buffer for the normalized text. */
    private static final class Chars {
        char[] a;
        int n;

        Chars(int capacity) { a = new char[Math.max(16, capacity)]; }

        void add(char c) {
            if (n == a.length) a = Arrays.copyOf(a, a.length * 2);
            a[n++] = c;
        }

        void addCodePoint(int cp) {
            if (cp < 0x10000) {
                add((char) cp);
            } else {
                add(Character.highSurrogate(cp));
                add(Character.lowSurrogate(cp));
            }
        }
    }

    private void encodePieces(String text, IdBuffer out) {
        if (rawAdded == null) {
            encodeSegment(text, 0, text.length(), out);
            return;
        }
        // Added tokens written in the raw text are extracted first and never normalized.
        char[] raw = text.toCharArray();
        int pos = 0;
        int[] match = out.rawMatch;
        while (pos < raw.length && !out.full()) {
            int next = rawAdded.find(raw, 0, pos, raw.length, match);
            if (next < 0) break;
            if (match[1] > pos) encodeSegment(text, pos, match[1], out);
            if (!out.full()) out.add(match[0]);
            pos = match[2];
        }
        if (pos < raw.length && !out.full()) encodeSegment(text, pos, raw.length, out);
    }

    /** Normalization works on chunks of about this many chars (see encodeSegment). */
    private static final int CHUNK = 2048;

    /** Normalize, split out normalized added tokens, pre-tokenize and WordPiece one piece. */
    private void encodeSegment(String text, int from, int to, IdBuffer out) {
        if (from >= to || out.full()) return;
        if (normalizedAdded == null && bertPreTokenizer) {
            // A long text is normalized a chunk at a time so that truncation stops the work
            // early. Chunks end before an ASCII space: a space separates words both before and
            // after normalization and NFD never reorders across it (it is a starter), so the
            // chunks tokenize exactly as the whole would. (Normalized added tokens may contain
            // spaces and a null pre-tokenizer makes the whole piece one word: no chunking then.)
            while (from < to && !out.full()) {
                int end = to;
                if (to - from > CHUNK) {
                    int space = text.indexOf(' ', from + CHUNK);
                    if (space >= 0 && space < to) end = space;
                }
                Chars norm = normalize(text, from, end, cleanText, handleChineseChars, stripAccents, lowercase);
                preTokenize(norm.a, 0, norm.n, out);
                from = end;
            }
            return;
        }
        Chars norm = normalize(text, from, to, cleanText, handleChineseChars, stripAccents, lowercase);
        if (normalizedAdded == null) {
            preTokenize(norm.a, 0, norm.n, out);
            return;
        }
        int pos = 0;
        int[] match = out.normalizedMatch;
        while (pos < norm.n && !out.full()) {
            int next = normalizedAdded.find(norm.a, 0, pos, norm.n, match);
            if (next < 0) break;
            if (match[1] > pos) preTokenize(norm.a, pos, match[1], out);
            if (!out.full()) out.add(match[0]);
            pos = match[2];
        }
        if (pos < norm.n && !out.full()) preTokenize(norm.a, pos, norm.n, out);
    }

    /** BertNormalizer, in HF's order: clean_text, handle_chinese_chars, strip_accents, lowercase. */
    private static Chars normalize(CharSequence text, int from, int to,
                                   boolean cleanText, boolean handleChineseChars, boolean stripAccents, boolean lowercase) {
        Chars c = new Chars(to - from + 16);
        boolean nonAscii = false;
        for (int i = from; i < to; i++) {
            char ch = text.charAt(i);
            if (ch < 0x80) {
                // ASCII fast path: only controls and whitespace change here.
                if (cleanText && ch < 0x20) {
                    if (ch == '\t' || ch == '\n' || ch == '\r') c.add(' ');
                    continue; // other C0 controls are dropped
                }
                if (cleanText && ch == 0x7F) continue;
                c.add(ch);
                continue;
            }
            int cp = ch;
            if (Character.isHighSurrogate(ch) && i + 1 < to && Character.isLowSurrogate(text.charAt(i + 1))) {
                cp = Character.toCodePoint(ch, text.charAt(++i));
            } else if (Character.isSurrogate(ch)) {
                cp = 0xFFFD; // a lone surrogate cannot reach HF (Rust strings are valid UTF-8)
            }
            if (cleanText) {
                if (cp == 0xFFFD || is(cp, CONTROL)) continue;
                if (isWhitespace(cp)) {
                    c.add(' ');
                    continue;
                }
            }
            nonAscii = true;
            if (handleChineseChars && isChinese(cp)) {
                c.add(' ');
                c.addCodePoint(cp);
                c.add(' ');
            } else {
                c.addCodePoint(cp);
            }
        }
        if (!stripAccents && !lowercase) return c;
        if (!nonAscii) {
            // Pure ASCII: NFD is the identity and no ASCII character is a mark.
            if (lowercase) {
                char[] a = c.a;
                for (int i = 0; i < c.n; i++) {
                    char ch = a[i];
                    if (ch >= 'A' && ch <= 'Z') a[i] = (char) (ch + 32);
                }
            }
            return c;
        }
        CharSequence src = c.n == c.a.length ? CharBuffer.wrap(c.a) : CharBuffer.wrap(c.a, 0, c.n);
        String decomposed = null;
        if (stripAccents) decomposed = Normalizer.normalize(src, Normalizer.Form.NFD);
        CharSequence in = decomposed != null ? decomposed : src;
        int len = in.length();
        Chars r = new Chars(len + 8);
        for (int i = 0; i < len; i++) {
            char ch = in.charAt(i);
            if (ch < 0x80) {
                r.add(lowercase && ch >= 'A' && ch <= 'Z' ? (char) (ch + 32) : ch);
                continue;
            }
            int cp = ch;
            if (Character.isHighSurrogate(ch) && i + 1 < len && Character.isLowSurrogate(in.charAt(i + 1))) {
                cp = Character.toCodePoint(ch, in.charAt(++i));
            }
            // Filtering marks and lowercasing are separate passes in HF; fusing them is exact
            // because the mark test looks at the character before it is lowercased.
            if (stripAccents && is(cp, MN)) continue;
            if (lowercase) {
                if (cp == 0x130) {
                    // Rust's 'İ'.to_lowercase() is "i\u0307" (SpecialCasing); the JDK's
                    // code-point toLowerCase gives plain 'i'.
                    r.add('i');
                    r.add('\u0307');
                    continue;
                }
                cp = Character.toLowerCase(cp);
            }
            r.addCodePoint(cp);
        }
        return r;
    }

    /** BertPreTokenizer: whitespace separates words, each punctuation char is its own word. */
    private void preTokenize(char[] buf, int from, int to, IdBuffer out) {
        if (!bertPreTokenizer) {
            if (from < to) wordPiece(buf, from, to, out);
            return;
        }
        int wordStart = -1;
        int i = from;
        while (i < to) {
            char ch = buf[i];
            int cp = ch;
            int len = 1;
            if (Character.isHighSurrogate(ch) && i + 1 < to && Character.isLowSurrogate(buf[i + 1])) {
                cp = Character.toCodePoint(ch, buf[i + 1]);
                len = 2;
            }
            int f = flags(cp);
            if ((f & (WS | PUNCT)) != 0) {
                if (wordStart >= 0) {
                    wordPiece(buf, wordStart, i, out);
                    wordStart = -1;
                    if (out.full()) return;
                }
                if ((f & PUNCT) != 0) {
                    wordPiece(buf, i, i + len, out);
                    if (out.full()) return;
                }
            } else if (wordStart < 0) {
                wordStart = i;
            }
            i += len;
        }
        if (wordStart >= 0) wordPiece(buf, wordStart, to, out);
    }

    /**
     * WordPiece::tokenize on buf[from, to): greedy longest match, the continuation prefix on
     * every piece but the first; a word that is too long or cannot be split is one unk token.
     * Pieces of a word are appended even past the limit (a later failure would turn the whole
     * word into unk); the caller cuts at the limit.
     */
    private void wordPiece(char[] buf, int from, int to, IdBuffer out) {
        // max_input_chars_per_word counts Unicode scalar values, not UTF-16 units.
        if (to - from > maxInputCharsPerWord && Character.codePointCount(buf, from, to - from) > maxInputCharsPerWord) {
            out.add(unkId);
            return;
        }
        int mark = out.n;
        int start = from;
        int[] prefixHash = out.prefixHash;
        while (start < to) {
            SliceTable table = start == from ? wordStart : continuation;
            int max = Math.min(to - start, table.maxLen);
            // Hash of every prefix buf[start, start + k), computed once for all candidates.
            int h = 0;
            for (int k = 0; k < max; k++) {
                h = 31 * h + buf[start + k];
                prefixHash[k + 1] = h;
            }
            int end = start + max;
            // Never end a candidate between the two halves of a surrogate pair.
            if (end < to && end > start && Character.isLowSurrogate(buf[end]) && Character.isHighSurrogate(buf[end - 1])) end--;
            int id = -1;
            while (end > start) {
                id = table.get(buf, start, end - start, prefixHash[end - start]);
                if (id >= 0) break;
                end -= (end - start >= 2 && Character.isLowSurrogate(buf[end - 1]) && Character.isHighSurrogate(buf[end - 2])) ? 2 : 1;
            }
            if (id < 0) {
                out.n = mark;
                out.add(unkId);
                return;
            }
            out.add(id);
            start = end;
        }
    }

    // =====================================================================================
    // Vocab lookup by char slice
    // =====================================================================================

    /**
     * Open-addressing hash table from token text to id, probed with a slice of a char array so
     * that the longest-match loop needs no substring. The hash is String.hashCode's polynomial,
     * which the caller computes incrementally.
     */
    private static final class SliceTable {
        final char[][] keys;
        final int[] ids;
        final int[] hashes;
        final int mask;
        final int maxLen;

        SliceTable(List<String> tokens, List<Integer> tokenIds, int stripPrefix) {
            int cap = Integer.highestOneBit(Math.max(4, tokens.size()) * 2) * 2;
            keys = new char[cap][];
            ids = new int[cap];
            hashes = new int[cap];
            mask = cap - 1;
            int longest = 0;
            for (int t = 0; t < tokens.size(); t++) {
                char[] k = tokens.get(t).substring(stripPrefix).toCharArray();
                int h = 0;
                for (char ch : k) h = 31 * h + ch;
                int slot = mix(h) & mask;
                while (keys[slot] != null && !(hashes[slot] == h && Arrays.equals(keys[slot], k))) slot = (slot + 1) & mask;
                keys[slot] = k;
                ids[slot] = tokenIds.get(t);
                hashes[slot] = h;
                longest = Math.max(longest, k.length);
            }
            maxLen = longest;
        }

        private static int mix(int h) {
            h *= 0x9E3779B9;
            return h ^ (h >>> 16);
        }

        int get(char[] buf, int off, int len, int h) {
            int slot = mix(h) & mask;
            char[] k;
            while ((k = keys[slot]) != null) {
                if (hashes[slot] == h && k.length == len && Arrays.equals(k, 0, len, buf, off, off + len)) return ids[slot];
                slot = (slot + 1) & mask;
            }
            return -1;
        }
    }

    // =====================================================================================
    // Added tokens
    // =====================================================================================

    private record Added(String content, int id, boolean singleWord, boolean lstrip, boolean rstrip, boolean normalized) {}

    /**
     * HF's AddedVocabulary matcher: aho-corasick with LeftmostLongest, iterated without
     * overlaps; a match rejected by single_word still consumes its text, as in HF.
     */
    private static final class AddedTokens {
        final char[][] patterns;
        final int[] ids;
        final boolean[] singleWord, lstrip, rstrip;
        /** Pattern indices by first char, longest first. */
        final HashMap<Character, int[]> byFirst = new HashMap<>();
        /** Bitmap of the first chars, so most positions are rejected without a map lookup. */
        final long[] firstBits = new long[1024];

        AddedTokens(List<Added> tokens, List<String> texts) {
            int n = tokens.size();
            patterns = new char[n][];
            ids = new int[n];
            singleWord = new boolean[n];
            lstrip = new boolean[n];
            rstrip = new boolean[n];
            HashMap<Character, List<Integer>> lists = new HashMap<>();
            for (int i = 0; i < n; i++) {
                Added a = tokens.get(i);
                patterns[i] = texts.get(i).toCharArray();
                ids[i] = a.id;
                singleWord[i] = a.singleWord;
                lstrip[i] = a.lstrip;
                rstrip[i] = a.rstrip;
                if (patterns[i].length == 0) continue; // a token normalized to nothing never matches
                char c = patterns[i][0];
                lists.computeIfAbsent(c, k -> new ArrayList<>()).add(i);
                firstBits[c >>> 6] |= 1L << (c & 63);
            }
            for (Map.Entry<Character, List<Integer>> e : lists.entrySet()) {
                List<Integer> l = e.getValue();
                // Longest first gives LeftmostLongest; equal patterns keep file order (first wins).
                l.sort((x, y) -> Integer.compare(patterns[y].length, patterns[x].length));
                int[] arr = new int[l.size()];
                for (int i = 0; i < arr.length; i++) arr[i] = l.get(i);
                byFirst.put(e.getKey(), arr);
            }
        }

        /**
         * Finds the next accepted match in s[from, end), where s[sentStart, end) is the whole
         * piece HF matches against (single_word looks at the char before a match even when it
         * belongs to the previous match). Fills out = {id, start, stop}, start/stop widened by
         * lstrip/rstrip (lstrip never reaches back before from), and returns start, or -1.
         */
        int find(char[] s, int sentStart, int from, int end, int[] out) {
            int i = from;
            while (i < end) {
                char c = s[i];
                if ((firstBits[c >>> 6] & (1L << (c & 63))) == 0) {
                    i++;
                    continue;
                }
                int hit = -1;
                for (int k : byFirst.get(c)) {
                    char[] p = patterns[k];
                    if (p.length <= end - i && Arrays.equals(p, 0, p.length, s, i, i + p.length)) {
                        hit = k;
                        break;
                    }
                }
                if (hit < 0) {
                    i++;
                    continue;
                }
                int start = i;
                int stop = i + patterns[hit].length;
                i = stop; // the iterator resumes after the match even if it is rejected
                if (singleWord[hit]) {
                    boolean startOk = start == sentStart || !isWordChar(codePointBefore(s, start, sentStart));
                    boolean stopOk = stop == end || !isWordChar(Character.codePointAt(s, stop, end));
                    if (!startOk || !stopOk) continue;
                }
                if (lstrip[hit]) {
                    while (start > from) {
                        int cp = codePointBefore(s, start, from);
                        if (!isWhitespace(cp)) break;
                        start -= Character.charCount(cp);
                    }
                }
                if (rstrip[hit]) {
                    while (stop < end) {
                        int cp = Character.codePointAt(s, stop, end);
                        if (!isWhitespace(cp)) break;
                        stop += Character.charCount(cp);
                    }
                }
                out[0] = ids[hit];
                out[1] = start;
                out[2] = stop;
                return start;
            }
            return -1;
        }

        private static int codePointBefore(char[] s, int index, int start) {
            char lo = s[index - 1];
            if (Character.isLowSurrogate(lo) && index - 2 >= start && Character.isHighSurrogate(s[index - 2]))
                return Character.toCodePoint(s[index - 2], lo);
            return lo;
        }

        /** Rust regex \w: Alphabetic, marks, decimal digits, connector punctuation, joiners. */
        private static boolean isWordChar(int cp) {
            if (Character.isAlphabetic(cp) || cp == 0x200C || cp == 0x200D) return true;
            int t = Character.getType(cp);
            return t == Character.NON_SPACING_MARK || t == Character.COMBINING_SPACING_MARK
                    || t == Character.ENCLOSING_MARK || t == Character.DECIMAL_DIGIT_NUMBER
                    || t == Character.CONNECTOR_PUNCTUATION;
        }
    }

    // =====================================================================================
    // Builder: parsing helpers that name the file in every message
    // =====================================================================================

    private static final class Builder {
        final Path path;
        boolean cleanText, handleChineseChars, stripAccents, lowercase, bertPreTokenizer;
        HashMap<String, Integer> tokenToId;
        String[] idToToken;
        SliceTable wordStart, continuation;
        int unkId, maxInputCharsPerWord;
        AddedTokens rawAdded, normalizedAdded;
        int[] prefixIds, suffixIds;
        int padId, truncationMaxLength;

        Builder(Path path) { this.path = path; }

        IllegalArgumentException error(String what) {
            return new IllegalArgumentException(oneLine(path + ": " + what));
        }

        void setVocab(HashMap<String, Integer> vocab, String unk, String prefix, int maxChars) {
            Integer u = vocab.get(unk);
            if (u == null) throw error("unk token '" + unk + "' is not in the vocab");
            if (maxChars < 1) throw error("max_input_chars_per_word must be positive, got " + maxChars);
            tokenToId = vocab;
            unkId = u;
            maxInputCharsPerWord = maxChars;
            List<String> all = new ArrayList<>(vocab.size());
            List<Integer> allIds = new ArrayList<>(vocab.size());
            List<String> cont = new ArrayList<>();
            List<Integer> contIds = new ArrayList<>();
            int maxId = -1;
            for (Map.Entry<String, Integer> e : vocab.entrySet()) {
                int id = e.getValue();
                if (id < 0) throw error("negative id " + id + " for token '" + e.getKey() + "'");
                maxId = Math.max(maxId, id);
                all.add(e.getKey());
                allIds.add(id);
                if (e.getKey().startsWith(prefix)) {
                    cont.add(e.getKey());
                    contIds.add(id);
                }
            }
            wordStart = new SliceTable(all, allIds, 0);
            continuation = prefix.isEmpty() ? wordStart : new SliceTable(cont, contIds, prefix.length());
            idToToken = new String[maxId + 1];
            for (Map.Entry<String, Integer> e : vocab.entrySet()) {
                // Two tokens with one id (a broken vocab): HF's choice depends on hash order;
                // take the lexicographically smaller so that ours is at least deterministic.
                String prev = idToToken[e.getValue()];
                if (prev == null || e.getKey().compareTo(prev) < 0) idToToken[e.getValue()] = e.getKey();
            }
        }

        void setAddedTokens(List<Added> added) {
            List<Added> raw = new ArrayList<>();
            List<String> rawPatterns = new ArrayList<>();
            List<Added> norm = new ArrayList<>();
            List<String> normPatterns = new ArrayList<>();
            int maxId = idToToken.length - 1;
            for (Added a : added) {
                if (a.content.isEmpty()) continue; // HF ignores empty added tokens
                maxId = Math.max(maxId, a.id);
            }
            if (maxId >= idToToken.length) idToToken = Arrays.copyOf(idToToken, maxId + 1);
            for (Added a : added) {
                if (a.content.isEmpty()) continue;
                if (a.id < 0) throw error("added token '" + a.content + "' has negative id " + a.id);
                tokenToId.put(a.content, a.id);
                idToToken[a.id] = a.content;
                if (a.normalized) {
                    norm.add(a);
                } else {
                    raw.add(a);
                    rawPatterns.add(a.content);
                }
            }
            rawAdded = raw.isEmpty() ? null : new AddedTokens(raw, rawPatterns);
            // HF matches normalized added tokens by their normalized form, in normalized text.
            for (Added a : norm) {
                Chars c = normalize(a.content, 0, a.content.length(), cleanText, handleChineseChars, stripAccents, lowercase);
                normPatterns.add(new String(c.a, 0, c.n));
            }
            normalizedAdded = norm.isEmpty() ? null : new AddedTokens(norm, normPatterns);
        }

        void readTemplate(Map<String, Object> pp) {
            Object single = pp.get("single");
            if (!(single instanceof List<?> items)) throw error("post_processor.single must be an array");
            Map<String, Object> specials = object(pp.get("special_tokens"), "post_processor.special_tokens", true);
            List<Integer> prefix = new ArrayList<>();
            List<Integer> suffix = new ArrayList<>();
            boolean seenA = false;
            for (int i = 0; i < items.size(); i++) {
                String where = "post_processor.single[" + i + "]";
                Map<String, Object> item = object(items.get(i), where, false);
                if (item.containsKey("Sequence")) {
                    Map<String, Object> seq = object(item.get("Sequence"), where + ".Sequence", false);
                    if (!"A".equals(seq.get("id"))) throw error(where + ": only sequence A is supported in the single template");
                    if (seenA) throw error("post_processor.single holds sequence A twice");
                    checkTypeId(seq.get("type_id"), where);
                    seenA = true;
                } else if (item.containsKey("SpecialToken")) {
                    Map<String, Object> st = object(item.get("SpecialToken"), where + ".SpecialToken", false);
                    String name = string(st.get("id"), where + ".SpecialToken.id", null);
                    checkTypeId(st.get("type_id"), where);
                    Map<String, Object> def = specials == null ? null : object(specials.get(name), "post_processor.special_tokens[\"" + name + "\"]", true);
                    if (def == null) throw error("post_processor.special_tokens has no entry for '" + name + "'");
                    if (!(def.get("ids") instanceof List<?> ids)) throw error("post_processor.special_tokens[\"" + name + "\"].ids must be an array");
                    for (Object o : ids) (seenA ? suffix : prefix).add(intValue(o, "post_processor.special_tokens[\"" + name + "\"].ids"));
                } else {
                    throw error(where + " is neither a Sequence nor a SpecialToken");
                }
            }
            if (!seenA) throw error("post_processor.single has no sequence A");
            prefixIds = prefix.stream().mapToInt(Integer::intValue).toArray();
            suffixIds = suffix.stream().mapToInt(Integer::intValue).toArray();
        }

        private void checkTypeId(Object typeId, String where) {
            if (typeId != null && intValue(typeId, where + ".type_id") != 0)
                throw error(where + ": a non-zero type_id in the single template is not supported");
        }

        int pairId(Object pair, String where) {
            if (pair instanceof List<?> l && l.size() == 2) return intValue(l.get(1), where + "[1]");
            throw error(where + " must be a [token, id] pair");
        }

        @SuppressWarnings("unchecked")
        Map<String, Object> object(Object v, String where, boolean nullable) {
            if (v == null && nullable) return null;
            if (v instanceof Map<?, ?> m) return (Map<String, Object>) m;
            throw error(where + (v == null ? " is missing" : " must be an object"));
        }

        int intValue(Object v, String where) {
            if (v instanceof Long l && l >= Integer.MIN_VALUE && l <= Integer.MAX_VALUE) return (int) (long) l;
            throw error(where + " must be an integer, got " + describe(v));
        }

        boolean bool(Object v, String where, boolean dflt) {
            if (v == null) return dflt;
            if (v instanceof Boolean bv) return bv;
            throw error(where + " must be true, false or null, got " + describe(v));
        }

        String string(Object v, String where, String dflt) {
            if (v == null) return dflt;
            if (v instanceof String s) return s;
            throw error(where + " must be a string, got " + describe(v));
        }

        private static String describe(Object v) {
            if (v == null) return "null";
            if (v instanceof String s) return "\"" + (s.length() > 40 ? s.substring(0, 40) + "..." : s) + "\"";
            if (v instanceof Map) return "an object";
            if (v instanceof List) return "an array";
            return String.valueOf(v);
        }
    }

    /** Messages must be one line: control characters (from file content) become spaces. */
    private static String oneLine(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            b.append(c < 0x20 || c == 0x7F || c == 0x2028 || c == 0x2029 ? ' ' : c);
        }
        return b.toString();
    }

    // =====================================================================================
    // Character classes (HF's, see the class comment)
    // =====================================================================================

    private static final int CONTROL = 1, WS = 2, PUNCT = 4, MN = 8, CHINESE = 16;

    /** Flags for every BMP code point; supplementary ones go through the range tables. */
    private static final byte[] BMP = new byte[0x10000];

    private static int flags(int cp) {
        if (cp < 0x10000) return BMP[cp];
        int f = 0;
        if (inRanges(HF_CONTROL, cp)) f |= CONTROL;
        if (inRanges(HF_PUNCT, cp)) f |= PUNCT;
        if (inRanges(HF_MN, cp)) f |= MN;
        if (isChineseRange(cp)) f |= CHINESE;
        return f;
    }

    private static boolean is(int cp, int flag) {
        return (flags(cp) & flag) != 0;
    }

    /** Rust's char::is_whitespace (the Unicode White_Space property). */
    private static boolean isWhitespace(int cp) {
        return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F
                || cp == 0x205F || cp == 0x3000;
    }

    private static boolean isChinese(int cp) {
        return cp < 0x10000 ? (BMP[cp] & CHINESE) != 0 : isChineseRange(cp);
    }

    /** BertNormalizer's is_chinese_char; note 0x2B920, not 0x2B820 as in the original BERT. */
    private static boolean isChineseRange(int cp) {
        return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF)
                || (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F)
                || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF)
                || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
    }

    private static boolean inRanges(int[] ranges, int cp) {
        int lo = 0, hi = ranges.length / 2 - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (cp < ranges[2 * mid]) hi = mid - 1;
            else if (cp > ranges[2 * mid + 1]) lo = mid + 1;
            else return true;
        }
        return false;
    }

    /*
     * The three tables below are HF's character classes as inclusive [first, last] code point
     * ranges, read back from HF tokenizers itself (every code point c, as "a" + c + "b", through
     * BertNormalizer / BertPreTokenizer configurations with a five-token vocab). They equal the
     * Unicode 8.0 categories of the unicode_categories crate:
     *   HF_CONTROL: what clean_text drops, i.e. Cc, Cf, Co (plus U+FFFD), but not \t \n \r;
     *   HF_PUNCT:   what BertPreTokenizer isolates: ASCII punctuation plus Pc Pd Ps Pe Pi Pf Po;
     *   HF_MN:      what strip_accents drops after NFD (Mn), listed for code points that can
     *               occur in NFD output.
     */
    // @formatter:off
    private static final int[] HF_CONTROL = {
        0x0,0x8, 0xB,0xC, 0xE,0x1F, 0x7F,0x9F, 0xAD,0xAD, 0x600,0x605, 0x61C,0x61C, 0x6DD,0x6DD,
        0x70F,0x70F, 0x180E,0x180E, 0x200B,0x200F, 0x202A,0x202E, 0x2060,0x2064, 0x2066,0x206F,
        0xE000,0xF8FF, 0xFEFF,0xFEFF, 0xFFF9,0xFFFB, 0xFFFD,0xFFFD, 0x110BD,0x110BD,
        0x1BCA0,0x1BCA3, 0x1D173,0x1D17A, 0xE0001,0xE0001, 0xE0020,0xE007F, 0xF0000,0xFFFFD,
        0x100000,0x10FFFD
    };

    private static final int[] HF_PUNCT = {
        0x21,0x2F, 0x3A,0x40, 0x5B,0x60, 0x7B,0x7E, 0xA1,0xA1, 0xA7,0xA7, 0xAB,0xAB, 0xB6,0xB7,
        0xBB,0xBB, 0xBF,0xBF, 0x37E,0x37E, 0x387,0x387, 0x55A,0x55F, 0x589,0x58A, 0x5BE,0x5BE,
        0x5C0,0x5C0, 0x5C3,0x5C3, 0x5C6,0x5C6, 0x5F3,0x5F4, 0x609,0x60A, 0x60C,0x60D, 0x61B,0x61B,
        0x61E,0x61F, 0x66A,0x66D, 0x6D4,0x6D4, 0x700,0x70D, 0x7F7,0x7F9, 0x830,0x83E, 0x85E,0x85E,
        0x964,0x965, 0x970,0x970, 0xAF0,0xAF0, 0xDF4,0xDF4, 0xE4F,0xE4F, 0xE5A,0xE5B, 0xF04,0xF12,
        0xF14,0xF14, 0xF3A,0xF3D, 0xF85,0xF85, 0xFD0,0xFD4, 0xFD9,0xFDA, 0x104A,0x104F,
        0x10FB,0x10FB, 0x1360,0x1368, 0x1400,0x1400, 0x166D,0x166E, 0x169B,0x169C, 0x16EB,0x16ED,
        0x1735,0x1736, 0x17D4,0x17D6, 0x17D8,0x17DA, 0x1800,0x180A, 0x1944,0x1945, 0x1A1E,0x1A1F,
        0x1AA0,0x1AA6, 0x1AA8,0x1AAD, 0x1B5A,0x1B60, 0x1BFC,0x1BFF, 0x1C3B,0x1C3F, 0x1C7E,0x1C7F,
        0x1CC0,0x1CC7, 0x1CD3,0x1CD3, 0x2010,0x2027, 0x2030,0x2043, 0x2045,0x2051, 0x2053,0x205E,
        0x207D,0x207E, 0x208D,0x208E, 0x2308,0x230B, 0x2329,0x232A, 0x2768,0x2775, 0x27C5,0x27C6,
        0x27E6,0x27EF, 0x2983,0x2998, 0x29D8,0x29DB, 0x29FC,0x29FD, 0x2CF9,0x2CFC, 0x2CFE,0x2CFF,
        0x2D70,0x2D70, 0x2E00,0x2E2E, 0x2E30,0x2E42, 0x3001,0x3003, 0x3008,0x3011, 0x3014,0x301F,
        0x3030,0x3030, 0x303D,0x303D, 0x30A0,0x30A0, 0x30FB,0x30FB, 0xA4FE,0xA4FF, 0xA60D,0xA60F,
        0xA673,0xA673, 0xA67E,0xA67E, 0xA6F2,0xA6F7, 0xA874,0xA877, 0xA8CE,0xA8CF, 0xA8F8,0xA8FA,
        0xA8FC,0xA8FC, 0xA92E,0xA92F, 0xA95F,0xA95F, 0xA9C1,0xA9CD, 0xA9DE,0xA9DF, 0xAA5C,0xAA5F,
        0xAADE,0xAADF, 0xAAF0,0xAAF1, 0xABEB,0xABEB, 0xFD3E,0xFD3F, 0xFE10,0xFE19, 0xFE30,0xFE52,
        0xFE54,0xFE61, 0xFE63,0xFE63, 0xFE68,0xFE68, 0xFE6A,0xFE6B, 0xFF01,0xFF03, 0xFF05,0xFF0A,
        0xFF0C,0xFF0F, 0xFF1A,0xFF1B, 0xFF1F,0xFF20, 0xFF3B,0xFF3D, 0xFF3F,0xFF3F, 0xFF5B,0xFF5B,
        0xFF5D,0xFF5D, 0xFF5F,0xFF65, 0x10100,0x10102, 0x1039F,0x1039F, 0x103D0,0x103D0,
        0x1056F,0x1056F, 0x10857,0x10857, 0x1091F,0x1091F, 0x1093F,0x1093F, 0x10A50,0x10A58,
        0x10A7F,0x10A7F, 0x10AF0,0x10AF6, 0x10B39,0x10B3F, 0x10B99,0x10B9C, 0x11047,0x1104D,
        0x110BB,0x110BC, 0x110BE,0x110C1, 0x11140,0x11143, 0x11174,0x11175, 0x111C5,0x111C9,
        0x111CD,0x111CD, 0x111DB,0x111DB, 0x111DD,0x111DF, 0x11238,0x1123D, 0x112A9,0x112A9,
        0x114C6,0x114C6, 0x115C1,0x115D7, 0x11641,0x11643, 0x1173C,0x1173E, 0x12470,0x12474,
        0x16A6E,0x16A6F, 0x16AF5,0x16AF5, 0x16B37,0x16B3B, 0x16B44,0x16B44, 0x1BC9F,0x1BC9F,
        0x1DA87,0x1DA8B
    };

    private static final int[] HF_MN = {
        0x300,0x33F, 0x342,0x342, 0x345,0x36F, 0x483,0x487, 0x591,0x5BD, 0x5BF,0x5BF, 0x5C1,0x5C2,
        0x5C4,0x5C5, 0x5C7,0x5C7, 0x610,0x61A, 0x64B,0x65F, 0x670,0x670, 0x6D6,0x6DC, 0x6DF,0x6E4,
        0x6E7,0x6E8, 0x6EA,0x6ED, 0x711,0x711, 0x730,0x74A, 0x7A6,0x7B0, 0x7EB,0x7F3, 0x816,0x819,
        0x81B,0x823, 0x825,0x827, 0x829,0x82D, 0x859,0x85B, 0x8E3,0x902, 0x93A,0x93A, 0x93C,0x93C,
        0x941,0x948, 0x94D,0x94D, 0x951,0x957, 0x962,0x963, 0x981,0x981, 0x9BC,0x9BC, 0x9C1,0x9C4,
        0x9CD,0x9CD, 0x9E2,0x9E3, 0xA01,0xA02, 0xA3C,0xA3C, 0xA41,0xA42, 0xA47,0xA48, 0xA4B,0xA4D,
        0xA51,0xA51, 0xA70,0xA71, 0xA75,0xA75, 0xA81,0xA82, 0xABC,0xABC, 0xAC1,0xAC5, 0xAC7,0xAC8,
        0xACD,0xACD, 0xAE2,0xAE3, 0xB01,0xB01, 0xB3C,0xB3C, 0xB3F,0xB3F, 0xB41,0xB44, 0xB4D,0xB4D,
        0xB56,0xB56, 0xB62,0xB63, 0xB82,0xB82, 0xBC0,0xBC0, 0xBCD,0xBCD, 0xC00,0xC00, 0xC3E,0xC40,
        0xC46,0xC47, 0xC4A,0xC4D, 0xC55,0xC56, 0xC62,0xC63, 0xC81,0xC81, 0xCBC,0xCBC, 0xCBF,0xCBF,
        0xCC6,0xCC6, 0xCCC,0xCCD, 0xCE2,0xCE3, 0xD01,0xD01, 0xD41,0xD44, 0xD4D,0xD4D, 0xD62,0xD63,
        0xDCA,0xDCA, 0xDD2,0xDD4, 0xDD6,0xDD6, 0xE31,0xE31, 0xE34,0xE3A, 0xE47,0xE4E, 0xEB1,0xEB1,
        0xEB4,0xEB9, 0xEBB,0xEBC, 0xEC8,0xECD, 0xF18,0xF19, 0xF35,0xF35, 0xF37,0xF37, 0xF39,0xF39,
        0xF71,0xF72, 0xF74,0xF74, 0xF77,0xF77, 0xF79,0xF7E, 0xF80,0xF80, 0xF82,0xF84, 0xF86,0xF87,
        0xF8D,0xF92, 0xF94,0xF97, 0xF99,0xF9C, 0xF9E,0xFA1, 0xFA3,0xFA6, 0xFA8,0xFAB, 0xFAD,0xFB8,
        0xFBA,0xFBC, 0xFC6,0xFC6, 0x102D,0x1030, 0x1032,0x1037, 0x1039,0x103A, 0x103D,0x103E,
        0x1058,0x1059, 0x105E,0x1060, 0x1071,0x1074, 0x1082,0x1082, 0x1085,0x1086, 0x108D,0x108D,
        0x109D,0x109D, 0x135D,0x135F, 0x1712,0x1714, 0x1732,0x1734, 0x1752,0x1753, 0x1772,0x1773,
        0x17B4,0x17B5, 0x17B7,0x17BD, 0x17C6,0x17C6, 0x17C9,0x17D3, 0x17DD,0x17DD, 0x180B,0x180D,
        0x18A9,0x18A9, 0x1920,0x1922, 0x1927,0x1928, 0x1932,0x1932, 0x1939,0x193B, 0x1A17,0x1A18,
        0x1A1B,0x1A1B, 0x1A56,0x1A56, 0x1A58,0x1A5E, 0x1A60,0x1A60, 0x1A62,0x1A62, 0x1A65,0x1A6C,
        0x1A73,0x1A7C, 0x1A7F,0x1A7F, 0x1AB0,0x1ABD, 0x1B00,0x1B03, 0x1B34,0x1B34, 0x1B36,0x1B3A,
        0x1B3C,0x1B3C, 0x1B42,0x1B42, 0x1B6B,0x1B73, 0x1B80,0x1B81, 0x1BA2,0x1BA5, 0x1BA8,0x1BA9,
        0x1BAB,0x1BAD, 0x1BE6,0x1BE6, 0x1BE8,0x1BE9, 0x1BED,0x1BED, 0x1BEF,0x1BF1, 0x1C2C,0x1C33,
        0x1C36,0x1C37, 0x1CD0,0x1CD2, 0x1CD4,0x1CE0, 0x1CE2,0x1CE8, 0x1CED,0x1CED, 0x1CF4,0x1CF4,
        0x1CF8,0x1CF9, 0x1DC0,0x1DF5, 0x1DFC,0x1DFF, 0x20D0,0x20DC, 0x20E1,0x20E1, 0x20E5,0x20F0,
        0x2CEF,0x2CF1, 0x2D7F,0x2D7F, 0x2DE0,0x2DFF, 0x302A,0x302D, 0x3099,0x309A, 0xA66F,0xA66F,
        0xA674,0xA67D, 0xA69E,0xA69F, 0xA6F0,0xA6F1, 0xA802,0xA802, 0xA806,0xA806, 0xA80B,0xA80B,
        0xA825,0xA826, 0xA8C4,0xA8C4, 0xA8E0,0xA8F1, 0xA926,0xA92D, 0xA947,0xA951, 0xA980,0xA982,
        0xA9B3,0xA9B3, 0xA9B6,0xA9B9, 0xA9BC,0xA9BC, 0xA9E5,0xA9E5, 0xAA29,0xAA2E, 0xAA31,0xAA32,
        0xAA35,0xAA36, 0xAA43,0xAA43, 0xAA4C,0xAA4C, 0xAA7C,0xAA7C, 0xAAB0,0xAAB0, 0xAAB2,0xAAB4,
        0xAAB7,0xAAB8, 0xAABE,0xAABF, 0xAAC1,0xAAC1, 0xAAEC,0xAAED, 0xAAF6,0xAAF6, 0xABE5,0xABE5,
        0xABE8,0xABE8, 0xABED,0xABED, 0xFB1E,0xFB1E, 0xFE00,0xFE0F, 0xFE20,0xFE2F, 0x101FD,0x101FD,
        0x102E0,0x102E0, 0x10376,0x1037A, 0x10A01,0x10A03, 0x10A05,0x10A06, 0x10A0C,0x10A0F,
        0x10A38,0x10A3A, 0x10A3F,0x10A3F, 0x10AE5,0x10AE6, 0x11001,0x11001, 0x11038,0x11046,
        0x1107F,0x11081, 0x110B3,0x110B6, 0x110B9,0x110BA, 0x11100,0x11102, 0x11127,0x1112B,
        0x1112D,0x1112D, 0x11130,0x11134, 0x11173,0x11173, 0x11180,0x11181, 0x111B6,0x111BE,
        0x111CA,0x111CC, 0x1122F,0x11231, 0x11234,0x11234, 0x11236,0x11237, 0x112DF,0x112DF,
        0x112E3,0x112EA, 0x11300,0x11301, 0x1133C,0x1133C, 0x11340,0x11340, 0x11366,0x1136C,
        0x11370,0x11374, 0x114B3,0x114B8, 0x114BA,0x114BA, 0x114BF,0x114C0, 0x114C2,0x114C3,
        0x115B2,0x115B5, 0x115BC,0x115BD, 0x115BF,0x115C0, 0x115DC,0x115DD, 0x11633,0x1163A,
        0x1163D,0x1163D, 0x1163F,0x11640, 0x116AB,0x116AB, 0x116AD,0x116AD, 0x116B0,0x116B5,
        0x116B7,0x116B7, 0x1171D,0x1171F, 0x11722,0x11725, 0x11727,0x1172B, 0x16AF0,0x16AF4,
        0x16B30,0x16B36, 0x16F8F,0x16F92, 0x1BC9D,0x1BC9E, 0x1D167,0x1D169, 0x1D17B,0x1D182,
        0x1D185,0x1D18B, 0x1D1AA,0x1D1AD, 0x1D242,0x1D244, 0x1DA00,0x1DA36, 0x1DA3B,0x1DA6C,
        0x1DA75,0x1DA75, 0x1DA84,0x1DA84, 0x1DA9B,0x1DA9F, 0x1DAA1,0x1DAAF, 0x1E8D0,0x1E8D6,
        0xE0100,0xE01EF
    };
    // @formatter:on

    // After the tables: static initializers run in text order.
    static {
        for (int cp = 0; cp < 0x10000; cp++) {
            int f = 0;
            if (inRanges(HF_CONTROL, cp)) f |= CONTROL;
            if (isWhitespace(cp)) f |= WS;
            if (inRanges(HF_PUNCT, cp)) f |= PUNCT;
            if (inRanges(HF_MN, cp)) f |= MN;
            if (isChineseRange(cp)) f |= CHINESE;
            BMP[cp] = (byte) f;
        }
    }
}
