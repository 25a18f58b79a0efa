package rrj.app;

import rrj.convert.Converter;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.model.Encoder;
import rrj.model.Json;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The {@code rr} command line. Every failure is one line on stderr ("rr: error: ...") and a
 * non-zero exit code: 2 for usage errors, 1 for everything else. No stack traces unless
 * {@code RR_DEBUG=1}.
 */
public final class Main {
    private Main() {}

    static final String USAGE = """
            usage: rr <command> [options]
              rr embed [--model DIR] [--pooling mean|cls] [--normalize] [--max-length N]
                       [--backend ref|cpu] [--threads N] [TEXT...]
                  Embeds the texts given as arguments, or one per line on stdin (a line that is a
                  JSON object takes its "text" field). Prints one JSON object per line:
                  {"text": ..., "embedding": [...]}. Without --model: the default model
                  (all-MiniLM-L6-v2, converted into the cache on first use).
              rr convert SOURCE --out DIR [--tokenizer FILE] [--pooling mean|cls] [--normalize]
                       [--max-length N]
                  SOURCE: an .onnx BERT export, a pytorch_model.bin (config.json beside it), a
                  .safetensors file, or a Hugging Face model directory.
            """;

    public static void main(String[] argv) {
        int code = execute(argv, System.out, System.err);
        System.out.flush();
        System.exit(code);
    }

    /** Runs one command; returns the exit code. Errors go to {@code err} as one line. */
    public static int execute(String[] argv, PrintStream out, PrintStream err) {
        try {
            return run(argv, out);
        } catch (Args.UsageException e) {
            err.println("rr: " + e.getMessage());
            err.println("run 'rr help' for usage");
            return 2;
        } catch (Throwable e) {
            if ("1".equals(System.getenv("RR_DEBUG"))) e.printStackTrace(err);
            err.println("rr: error: " + message(e));
            return 1;
        }
    }

    /** One line naming what went wrong, whatever the exception type. */
    static String message(Throwable e) {
        if (e instanceof java.nio.file.NoSuchFileException n)
            return n.getFile() + ": " + (n.getReason() == null ? "file not found" : n.getReason());
        if (e instanceof java.nio.file.AccessDeniedException a) return a.getFile() + ": permission denied";
        if (e instanceof java.nio.file.FileAlreadyExistsException a) return a.getFile() + ": already exists";
        if (e instanceof java.nio.file.DirectoryNotEmptyException d) return d.getFile() + ": directory is not empty";
        String m = e.getMessage();
        if (m == null || m.isBlank()) m = e.getClass().getSimpleName();
        return m.replace('\n', ' ');
    }

    static int run(String[] argv, PrintStream out) throws IOException {
        if (argv.length == 0 || argv[0].equals("help") || argv[0].equals("--help") || argv[0].equals("-h")) {
            out.print(USAGE);
            return argv.length == 0 ? 2 : 0;
        }
        return switch (argv[0]) {
            case "embed" -> embed(argv, out);
            case "convert" -> convert(argv, out);
            default -> throw new Args.UsageException("unknown command '" + argv[0] + "'");
        };
    }

    static Backend.Pooling pooling(Args a) {
        String p = a.get("pooling");
        if (p == null) return null;
        return switch (p) {
            case "mean" -> Backend.Pooling.MEAN;
            case "cls" -> Backend.Pooling.CLS;
            default -> throw new Args.UsageException("--pooling must be mean or cls, got '" + p + "'");
        };
    }

    /** The backend named by --backend (default cpu) with --threads, logged once on stderr. */
    static Backend backend(Args a) {
        String name = a.get("backend") == null ? "cpu" : a.get("backend");
        int threads = a.getInt("threads", Backends.defaultThreads(), 1, 1024);
        Backend b = Backends.create(name, threads);
        System.err.println("rr: " + b.describe());
        return b;
    }

    static Path modelDir(Args a) throws IOException {
        return a.get("model") != null ? Path.of(a.get("model")) : DefaultModel.ensure();
    }

    static int convert(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, Set.of("out", "tokenizer", "pooling", "max-length"), Set.of("normalize"));
        if (a.positional.size() != 1) throw new Args.UsageException("convert needs exactly one SOURCE");
        if (a.get("out") == null) throw new Args.UsageException("convert needs --out DIR");
        Integer maxLen = a.has("max-length") ? a.getInt("max-length", 0, 2, 1 << 20) : null;
        Path outDir = Path.of(a.get("out"));
        Converter.convert(Path.of(a.positional.get(0)), outDir, new Converter.Options(
                a.get("tokenizer") == null ? null : Path.of(a.get("tokenizer")), pooling(a),
                a.has("normalize") ? Boolean.TRUE : null, maxLen));
        out.println("converted " + a.positional.get(0) + " -> " + outDir);
        return 0;
    }

    static int embed(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, Set.of("model", "pooling", "max-length", "backend", "threads"), Set.of("normalize"));
        Integer maxLen = a.has("max-length") ? a.getInt("max-length", 0, 2, 1 << 20) : null;
        Path dir = modelDir(a);
        try (Backend backend = backend(a);
             Encoder enc = Encoder.open(dir, backend, pooling(a), a.has("normalize") ? Boolean.TRUE : null, maxLen)) {
            if (!a.positional.isEmpty()) {
                writeEmbeddings(enc, a.positional, out);
                return 0;
            }
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            List<String> chunk = new ArrayList<>();
            int lineNo = 0;
            for (String line; (line = in.readLine()) != null; ) {
                lineNo++;
                chunk.add(textOf(line, lineNo));
                if (chunk.size() == 256) { writeEmbeddings(enc, chunk, out); chunk.clear(); }
            }
            if (!chunk.isEmpty()) writeEmbeddings(enc, chunk, out);
            return 0;
        }
    }

    /** A stdin line: plain text, or a JSON object whose "text" field is the text. */
    static String textOf(String line, int lineNo) {
        String t = line.strip();
        if (!t.startsWith("{")) return line;
        try {
            Map<String, Object> m = Json.parseObject(t);
            if (!(m.get("text") instanceof String s)) throw new IllegalArgumentException("stdin line " + lineNo + ": JSON object has no string field \"text\"");
            return s;
        } catch (Json.JsonException e) {
            throw new IllegalArgumentException("stdin line " + lineNo + ": malformed JSON: " + e.getMessage());
        }
    }

    static void writeEmbeddings(Encoder enc, List<String> texts, PrintStream out) {
        float[][] e = enc.embed(texts);
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < texts.size(); i++) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("text", texts.get(i));
            o.put("embedding", e[i]);
            b.setLength(0);
            b.append(Json.write(o));
            out.println(b);
        }
    }
}
