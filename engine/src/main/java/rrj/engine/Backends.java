package rrj.engine;

/**
 * The one factory: the backend is chosen explicitly, and asking for one that is not there is
 * an error, never a silent fallback.
 */
public final class Backends {
    private Backends() {}

    /** Thrown when the requested backend cannot be used here; the message says why, in one line. */
    public static final class UnavailableException extends RuntimeException {
        public UnavailableException(String message, Throwable cause) { super(message, cause); }
    }

    public static Backend create(String name, int threads) {
        return switch (name) {
            case "ref" -> new ReferenceBackend();
            case "cpu" -> {
                try {
                    yield new rrj.engine.cpu.CpuBackend(threads);
                } catch (NoClassDefFoundError e) { // the class links jdk.incubator.vector, resolved only here
                    throw new UnavailableException("backend 'cpu' needs the Vector API: run the JVM with --add-modules jdk.incubator.vector", e);
                }
            }
            case "cuda" -> rrj.engine.cuda.Cuda.open(threads); // one-line UnavailableException without a GPU, driver or cuBLAS
            default -> throw new IllegalArgumentException("unknown backend '" + name + "' (choose ref, cpu or cuda)");
        };
    }

    /** Default thread count: the available processors. */
    public static int defaultThreads() { return Runtime.getRuntime().availableProcessors(); }
}
