package rrj.app;

import rrj.convert.Converter;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.model.BertConfig;
import rrj.model.Encoder;
import rrj.model.ExpertTable;
import rrj.model.LoraAdapter;
import rrj.model.Json;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
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
                       [--backend ref|cpu|cuda] [--threads N] [TEXT...]
                  Embeds the texts given as arguments, or one per line on stdin (a line that is a
                  JSON object takes its "text" field). Prints one JSON object per line:
                  {"text": ..., "embedding": [...]}. Without --model: the default model
                  (all-MiniLM-L6-v2, converted into the cache on first use).
                  --expert NAME embeds through that LoRA expert (from --experts DIR).
              rr experts list [--experts DIR]
              rr experts add NAME ADAPTER_DIR [--experts DIR] [--model DIR]
                  Copies a PEFT adapter (adapter_model.safetensors or .bin) into the experts
                  directory after checking it against the model.
              rr experts remove NAME [--experts DIR]
                  The experts directory defaults to $RR_EXPERTS, else the repository's experts/.
              rr search [--expert auto|base|NAME] [--k N] [--json] [--data DIR...] QUERY...
                  Routes each query over the experts (auto, when a pilot table exists), encodes it
                  with the chosen expert and prints the top hits of the --data corpora (default:
                  the bundled SciFact and ArguAna), with the per-expert routing scores. Corpus
                  indexes are built by the base encoder on first use and cached.
              rr route [--json] QUERY...
                  Which expert each query goes to, with the per-expert scores.
              rr index [--data DIR...] [--index-cache DIR]
                  Builds (or checks and reuses) the corpus indexes.
              rr pilots build [--data DIR...] [--max-queries N] [--seed N] [--out FILE]
                  Scores every training query under every expert and writes the pilot table
                  (DESIGN §2) to the experts directory's pilots.safetensors.
              rr eval [--data DIR...] [--methods base,router,...] [--split test] [--recall]
                      [--max-queries N] [--json FILE] [--plot FILE.svg]
                  nDCG@10 (and Recall@100) per method and dataset, as the paper's tables.
                  Methods: base, router, router-nearest, dataset-router, dataset-oracle,
                  instance-oracle, and any expert's name.
              All of these take [--model DIR] [--experts DIR] [--max-length N] [--backend ref|cpu|cuda]
              [--threads N].
              rr serve [--host 127.0.0.1] [--port 8080] [--model DIR] [--experts DIR] [--data DIR...]
                       [--max-batch-tokens N] [--max-queue N] [--max-inputs N] [--max-body-bytes N]
                       [--no-truncate] [--api-key KEY] [--backend ref|cpu|cuda] [--threads N]
                  HTTP server: POST /v1/embeddings (OpenAI's API; model = the model's name, base,
                  an expert, or auto), POST /route, POST /search, GET /health, /info, /metrics.
                  Concurrent requests are batched dynamically; --api-key (or $RR_API_KEY) asks
                  for 'Authorization: Bearer KEY'. SIGTERM or ctrl-C: finish accepted requests,
                  exit 0.
              rr train-expert --data DIR [--data DIR...] --name NAME [--base MODEL] [--epochs N]
                       [--batch N] [--lr X] [--rank R] [--alpha A] [--targets query,value,...]
                       [--max-train N] [--validate-every N] [--seed N] [--out DIR] [--experts DIR]
                  Trains a LoRA expert (several --data: one multi-task expert) on BEIR train
                  qrels or generated queries; writes the best adapter (by dev nDCG@10) in
                  PEFT layout to --out (default: the experts directory / NAME). Resumes from
                  its checkpoint when interrupted.
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
            case "experts" -> experts(argv, out);
            case "train-expert" -> trainExpert(argv, out);
            case "index" -> Retrieval.index(argv, out);
            case "search" -> Retrieval.search(argv, out);
            case "route" -> Retrieval.route(argv, out);
            case "pilots" -> Retrieval.pilots(argv, out);
            case "eval" -> Retrieval.eval(argv, out);
            case "serve" -> rrj.app.serve.ServeCommand.run(argv, out, new rrj.app.serve.ServeCommand.Defaults(DefaultModel::ensure, DefaultModel.cacheDir()));
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

    /** --experts DIR, else $RR_EXPERTS, else the repository's experts/ (the launcher passes -Drr.home). */
    public static Path expertsDir(Args a) {
        if (a.get("experts") != null) return Path.of(a.get("experts"));
        String env = System.getenv("RR_EXPERTS");
        if (env != null && !env.isBlank()) return Path.of(env);
        return Path.of(System.getProperty("rr.home", "."), "experts");
    }

    static int experts(String[] argv, PrintStream out) throws IOException {
        if (argv.length < 2) throw new Args.UsageException("experts needs list, add or remove");
        Args a = Args.parse(argv, 2, Set.of("experts", "model"), Set.of());
        Path dir = expertsDir(a);
        switch (argv[1]) {
            case "list" -> {
                if (!a.positional.isEmpty()) throw new Args.UsageException("experts list takes no arguments");
                for (String n : ExpertTable.listNames(dir)) {
                    Map<String, Object> cfg = Json.parseObject(Files.readString(dir.resolve(n).resolve("adapter_config.json")));
                    out.println(n + "\tr=" + cfg.get("r") + "\talpha=" + cfg.get("lora_alpha") + "\ttargets=" + cfg.get("target_modules")
                            + (Boolean.TRUE.equals(cfg.get("use_rslora")) ? "\trslora" : ""));
                }
            }
            case "add" -> {
                if (a.positional.size() != 2) throw new Args.UsageException("experts add needs NAME and ADAPTER_DIR");
                String name = a.positional.get(0);
                if (!name.matches("[A-Za-z0-9][A-Za-z0-9._-]{0,63}") || name.equals("base") || name.equals("auto"))
                    throw new Args.UsageException("bad expert name '" + name + "': use letters, digits, '.', '_' or '-' (not 'base' or 'auto')");
                Path target = dir.resolve(name);
                if (Files.exists(target)) throw new IllegalArgumentException("expert '" + name + "' already exists in " + dir);
                BertConfig model = BertConfig.read(modelDir(a).resolve("config.json"));
                Converter.convertAdapter(Path.of(a.positional.get(1)), target, model);
                out.println("added expert " + name + " -> " + target);
            }
            case "remove" -> {
                if (a.positional.size() != 1) throw new Args.UsageException("experts remove needs NAME");
                Path target = dir.resolve(a.positional.get(0));
                if (!Files.exists(target.resolve("adapter_config.json")))
                    throw new IllegalArgumentException("unknown expert '" + a.positional.get(0) + "' in " + dir);
                try (var s = Files.walk(target)) {
                    for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) Files.delete(p);
                }
                out.println("removed expert " + a.positional.get(0));
            }
            default -> throw new Args.UsageException("unknown experts command '" + argv[1] + "' (list, add, remove)");
        }
        return 0;
    }

    static int trainExpert(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse(argv, 1, Set.of("data", "name", "base", "model", "epochs", "batch", "lr", "rank", "alpha", "targets", "max-train",
                "validate-every", "seed", "out", "experts", "checkpoint", "backend", "threads", "dev-fraction", "max-dev"), Set.of());
        if (!a.positional.isEmpty()) throw new Args.UsageException("train-expert takes no positional arguments: " + a.positional);
        if (a.all("data").isEmpty()) throw new Args.UsageException("train-expert needs --data DIR (one or more)");
        String name = a.get("name");
        if (name == null) throw new Args.UsageException("train-expert needs --name NAME");
        if (!name.matches("[A-Za-z0-9][A-Za-z0-9._-]{0,63}") || name.equals("base") || name.equals("auto"))
            throw new Args.UsageException("bad expert name '" + name + "'");
        java.util.List<rrj.model.Bert.Target> targets = new java.util.ArrayList<>();
        for (String t : (a.get("targets") == null ? "query,value" : a.get("targets")).split(",")) {
            rrj.model.Bert.Target found = null;
            for (rrj.model.Bert.Target x : rrj.model.Bert.Target.values())
                if (x.module.equals(t) || x.module.equals("attention.self." + t)) found = x;
            if (found == null) throw new Args.UsageException("--targets: unknown module '" + t + "' (query, key, value, attention.output.dense, intermediate.dense, output.dense)");
            targets.add(found);
        }
        rrj.model.LoraTrainer.Hyper d = rrj.model.LoraTrainer.Hyper.defaults();
        rrj.model.LoraTrainer.Hyper h = new rrj.model.LoraTrainer.Hyper(a.getInt("rank", d.rank(), 1, 1024),
                a.get("alpha") == null ? d.alpha() : number(a, "alpha"), targets, a.get("lr") == null ? d.lr() : number(a, "lr"),
                d.weightDecay(), d.warmupFraction(), d.dropout(), d.temperature(), d.clipNorm(), a.getInt("seed", (int) d.seed(), 0, Integer.MAX_VALUE));
        Path outDir = a.get("out") != null ? Path.of(a.get("out")) : expertsDir(a).resolve(name);
        Path ckpt = a.get("checkpoint") != null ? Path.of(a.get("checkpoint")) : DefaultModel.cacheDir().resolve("train").resolve(name);
        java.util.List<Path> data = new java.util.ArrayList<>();
        for (String x : a.all("data")) data.add(Path.of(x));
        String base = a.get("base") != null ? a.get("base") : a.get("model");
        Path modelDir = base != null ? Path.of(base) : DefaultModel.ensure();
        try (Backend backend = backend(a); Encoder enc = Encoder.open(modelDir, backend, null, null, null)) {
            rrj.router.ExpertTraining.Options o = new rrj.router.ExpertTraining.Options(name, data, outDir, ckpt,
                    DefaultModel.cacheDir().resolve("index"), a.getInt("epochs", 1, 1, 1000), a.getInt("batch", 32, 2, 4096),
                    a.getInt("max-train", 0, 0, Integer.MAX_VALUE), a.get("dev-fraction") == null ? 0.1 : number(a, "dev-fraction"),
                    a.getInt("max-dev", 200, 1, 1_000_000), a.getInt("validate-every", 50, 1, 1_000_000), h, System.err);
            rrj.router.ExpertTraining.Result r = rrj.router.ExpertTraining.run(enc, o);
            out.printf("trained expert %s: best dev nDCG@10 %.4f at step %d of %d, %.1f s with validation; adapter in %s%n",
                    name, r.bestDev(), r.bestStep(), r.steps(), r.seconds(), outDir);
        }
        return 0;
    }

    static double number(Args a, String name) {
        try {
            return Double.parseDouble(a.get(name));
        } catch (NumberFormatException e) {
            throw new Args.UsageException("--" + name + " must be a number, got '" + a.get(name) + "'");
        }
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
        Args a = Args.parse(argv, 1, Set.of("model", "pooling", "max-length", "backend", "threads", "expert", "experts"), Set.of("normalize"));
        Integer maxLen = a.has("max-length") ? a.getInt("max-length", 0, 2, 1 << 20) : null;
        Path dir = modelDir(a);
        try (Backend backend = backend(a);
             Encoder enc = Encoder.open(dir, backend, pooling(a), a.has("normalize") ? Boolean.TRUE : null, maxLen)) {
            LoraAdapter expert = null;
            if (a.get("expert") != null) {
                Path ed = expertsDir(a);
                Path adapter = ed.resolve(a.get("expert"));
                if (!Files.exists(adapter.resolve("adapter_config.json")))
                    throw new IllegalArgumentException("unknown expert '" + a.get("expert") + "' in " + ed + " (known: "
                            + String.join(", ", ExpertTable.listNames(ed)) + ")");
                expert = LoraAdapter.load(a.get("expert"), adapter, enc.bert.config, backend, java.lang.foreign.Arena.ofAuto());
            }
            if (!a.positional.isEmpty()) {
                writeEmbeddings(enc, a.positional, expert, out);
                return 0;
            }
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            List<String> chunk = new ArrayList<>();
            int lineNo = 0;
            for (String line; (line = in.readLine()) != null; ) {
                lineNo++;
                chunk.add(textOf(line, lineNo));
                if (chunk.size() == 256) { writeEmbeddings(enc, chunk, expert, out); chunk.clear(); }
            }
            if (!chunk.isEmpty()) writeEmbeddings(enc, chunk, expert, out);
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

    static void writeEmbeddings(Encoder enc, List<String> texts, LoraAdapter expert, PrintStream out) {
        LoraAdapter[] experts = null;
        if (expert != null) {
            experts = new LoraAdapter[texts.size()];
            java.util.Arrays.fill(experts, expert);
        }
        float[][] e = enc.embed(texts, experts);
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
