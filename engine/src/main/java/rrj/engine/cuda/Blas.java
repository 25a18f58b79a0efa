package rrj.engine.cuda;

/**
 * The cuBLAS calls the backend makes: single-precision GEMM, plain and strided-batched, on the
 * backend's stream, host-side alpha/beta. Column-major as cuBLAS sees memory: a row-major
 * [rows, cols] matrix is a column-major [cols, rows] one with leading dimension cols, which is
 * how {@link CudaBackend} writes y = x·Wᵀ as {@code sgemm(T, N, out, rows, in, W, x)}.
 * Offsets are in floats from the pointer.
 *
 * <p>Two implementations, chosen once at startup by {@link #open}: {@link JcublasBlas}
 * (JCublas2, which links libcublas.so.12) and {@link FfmBlas} (the Java FFM API calling
 * libcublas.so.13 or .12 directly, for machines with a CUDA 13 toolkit only).
 */
interface Blas extends AutoCloseable {

    /** One line: which implementation and library. */
    String describe();

    void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
               DevPtr a, long aOff, int lda, DevPtr b, long bOff, int ldb,
               float beta, DevPtr c, long cOff, int ldc);

    void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha,
                             DevPtr a, long aOff, int lda, long strideA, DevPtr b, long bOff, int ldb, long strideB,
                             float beta, DevPtr c, long cOff, int ldc, long strideC, int batch);

    @Override
    void close();

    /**
     * The cuBLAS to use, bound to {@code stream} (the CUDA context must be current). System
     * property {@code rrj.cublas}: {@code auto} (default: JCublas, else FFM), {@code jcublas}
     * or {@code ffm}. Throws {@link CudaError} with one line naming everything tried.
     */
    static Blas open(StreamHandle stream) {
        String mode = System.getProperty("rrj.cublas", "auto");
        if (!mode.equals("auto") && !mode.equals("jcublas") && !mode.equals("ffm"))
            throw new CudaError("-Drrj.cublas=" + mode + " is not one of auto, jcublas, ffm");
        String jcublasWhy = "not tried (-Drrj.cublas=ffm)", ffmWhy = "not tried (-Drrj.cublas=jcublas)";
        if (!mode.equals("ffm")) {
            try {
                return JcublasBlas.open(stream);
            } catch (LinkageError | RuntimeException e) { // UnsatisfiedLinkError when libcublas.so.12 is missing
                jcublasWhy = oneLine(e);
            }
        }
        if (!mode.equals("jcublas")) {
            try {
                return FfmBlas.open(FfmBlas.find(FfmBlas.candidates()), stream.address());
            } catch (CudaError e) {
                ffmWhy = e.getMessage();
            }
        }
        throw new CudaError("cannot load cuBLAS: JCublas2 (links libcublas.so.12): " + jcublasWhy + "; FFM: " + ffmWhy
                + " (set RRJ_CUBLAS=/path/to/libcublas.so.N)");
    }

    /** The first line of a throwable's message (JCuda's load errors span many lines), shortened. */
    static String oneLine(Throwable e) {
        String m = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage().strip();
        int nl = m.indexOf('\n');
        if (nl >= 0) m = m.substring(0, nl).strip();
        return m.length() > 200 ? m.substring(0, 200) + "…" : m;
    }
}
