package rrj.app.serve;

import rrj.app.Args;
import rrj.app.Main;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.model.Encoder;
import rrj.router.Beir;
import rrj.router.CorpusIndex;
import rrj.router.Router;

import java.io.IOException;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;

/**
 * {@code rr serve}: reads the flags, loads the model, the experts (with their pilot table) and
 * the corpus indexes, starts an {@link EmbeddingServer}, and blocks until it is closed, by
 * SIGTERM or ctrl-C (after which it exits 0) or by the JVM shutting down (shutdown hook).
 *
 * <p>What the launcher knows and this package cannot see (the default model, the cache
 * directory, how usage errors are reported) comes in as {@link Defaults}.
 */
public final class ServeCommand {
    private ServeCommand() {}

    /** From the command line: the default model directory (made on first use) and the cache root. */
    public record Defaults(Callable<Path> model, Path cacheDir) {}

    static final Set<String> VALUED = Set.of("host", "port", "model", "experts", "data", "max-batch-tokens", "max-queue", "max-inputs",
            "max-body-bytes", "api-key", "backend", "threads");
    static final Set<String> BOOLEANS = Set.of("no-truncate");

    /** Runs the server until it is closed; returns the exit code. */
    public static int run(String[] argv, PrintStream out, Defaults d) throws IOException {
        EmbeddingServer s = start(argv, System.err, d);
        Thread hook = new Thread(s::close, "rr-serve-shutdown");
        Runtime.getRuntime().addShutdownHook(hook);
        handleSignals(s, System.err);
        out.println("rr serve: listening on " + s.url() + " (model " + s.model.name() + ", experts " + s.model.router().experts()
                + (s.model.router().pilots() == null ? ", no pilot table" : ", pilot table") + ", datasets " + s.corpora.size() + ")");
        out.flush();
        try {
            s.awaitClosed();
        } catch (InterruptedException e) {
            s.close();
        }
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException e) {
            // the JVM is already shutting down: the hook has run (close is idempotent)
        }
        out.println("rr serve: stopped");
        return 0;
    }

    /**
     * SIGTERM and SIGINT close the server gracefully and let {@link #run} return 0 (a shutdown
     * hook alone would end the JVM with 143/130). A second signal while closing exits at once.
     * sun.misc.Signal (module jdk.unsupported) is the JDK's only signal API; javac warns about it.
     */
    private static void handleSignals(EmbeddingServer s, PrintStream log) {
        for (String name : new String[]{"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(name), sig -> {
                    if (s.closing()) {
                        log.println("rr serve: SIG" + sig.getName() + " again: exiting without waiting");
                        Runtime.getRuntime().halt(128 + sig.getNumber());
                    }
                    log.println("rr serve: SIG" + sig.getName() + ": finishing accepted requests, then exiting");
                    Thread.ofPlatform().name("rr-serve-close").start(s::close);
                });
            } catch (IllegalArgumentException e) {
                // the signal is reserved here (e.g. java -Xrs): the shutdown hook still closes gracefully
            }
        }
    }

    /** Parses the flags, loads everything and starts serving (the caller closes the server). */
    static EmbeddingServer start(String[] argv, PrintStream log, Defaults d) throws IOException {
        Args f = Args.parse(argv, 1, VALUED, BOOLEANS);
        if (!f.positional.isEmpty()) throw new Args.UsageException("serve takes no positional arguments, got '" + f.positional.get(0) + "'");
        String host = f.get("host") == null ? "127.0.0.1" : f.get("host");
        int port = f.getInt("port", 8080, 0, 65535);
        Api.Limits limits = new Api.Limits(f.getInt("max-batch-tokens", 8192, 1, 1 << 24), f.getInt("max-queue", 256, 1, 1 << 20),
                f.getInt("max-inputs", 2048, 1, 1 << 20), f.getInt("max-body-bytes", 8 << 20, 1, 1 << 30), !f.has("no-truncate"));
        String key = f.get("api-key") != null ? f.get("api-key") : System.getenv("RR_API_KEY");
        if (key != null && key.isBlank()) key = null;
        String backendName = f.get("backend") == null ? "cpu" : f.get("backend");
        int threads = f.getInt("threads", Backends.defaultThreads(), 1, 1024);
        Path modelDir;
        try {
            modelDir = f.get("model") != null ? Path.of(f.get("model")) : d.model().call();
        } catch (IOException | RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new IOException(e.getMessage(), e);
        }
        Map<String, Path> data = new LinkedHashMap<>();
        for (String dir : f.all("data")) {
            Path p = Path.of(dir);
            String name = Beir.datasetName(p);
            if (data.put(name, p) != null) throw new Args.UsageException("two --data directories are named '" + name + "'");
        }

        List<AutoCloseable> opened = new ArrayList<>(); // closed in reverse order, by the server or on failure here
        try {
            Backend backend = Backends.create(backendName, threads);
            opened.add(backend);
            log.println("rr: " + backend.describe());
            Encoder enc = Encoder.open(modelDir, backend, null, null, null);
            opened.add(enc);
            Router router = Router.open(enc, Main.expertsDir(f));
            List<Batcher.Corpus> corpora = new ArrayList<>();
            for (Map.Entry<String, Path> e : data.entrySet()) {
                Path file = Beir.find(e.getValue().resolve("corpus.jsonl"));
                String prefix = rrj.router.Prompts.of(modelDir).passage();
                // the corpus is parsed only if the index or its labels need it, and then once
                CorpusIndex.CorpusSource source = CorpusIndex.CorpusSource.once(() -> Beir.readCorpus(file, prefix));
                CorpusIndex index = CorpusIndex.obtain(CorpusIndex.cacheDir(d.cacheDir().resolve("index"), e.getKey(), enc), enc, file, prefix,
                        source, false, log);
                opened.add(index);
                corpora.add(new Batcher.Corpus(e.getKey(), index, index.labels(source)));
                log.println("rr serve: dataset " + e.getKey() + ": " + index.size() + " documents");
            }
            String name = enc.dir.toAbsolutePath().normalize().getFileName().toString();
            InetSocketAddress address = new InetSocketAddress(host, port);
            if (address.isUnresolved()) throw new Args.UsageException("--host: cannot resolve '" + host + "'");
            try {
                return EmbeddingServer.start(new Api.Model(name, enc, router, limits), corpora, key, backend.describe(), opened.reversed(), log,
                        address);
            } catch (java.net.BindException e) {
                throw new IOException("cannot listen on " + host + ":" + port + ": " + e.getMessage(), e);
            }
        } catch (IOException | RuntimeException e) {
            for (AutoCloseable c : opened.reversed()) {
                try {
                    c.close();
                } catch (Exception ignored) {
                    // the first failure is the one to report
                }
            }
            throw e;
        }
    }
}
