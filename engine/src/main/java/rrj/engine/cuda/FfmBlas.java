package rrj.engine.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * cuBLAS called directly through the Java FFM API (java.lang.foreign): the fallback for
 * machines whose cuBLAS is libcublas.so.13 (CUDA 13), which JCublas 12.x cannot link. Binds the
 * five v2 entry points the backend needs; cuBLAS shares the CUDA primary context the backend
 * made current, and runs on the backend's stream. Needs {@code --enable-native-access=ALL-UNNAMED}
 * (the project's JVM flags have it; without it the JDK only warns).
 *
 * <p>{@link #find} only loads the library and looks the symbols up: it needs no GPU, and its
 * error lists every candidate tried, with why each failed.
 */
final class FfmBlas implements Blas {
    /** Symbols a library must export to be used. */
    static final List<String> SYMBOLS = List.of("cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2",
            "cublasSgemm_v2", "cublasSgemmStridedBatched", "cublasGetVersion_v2");

    private static final int OP_N = 0, OP_T = 1; // cublasOperation_t

    /** A cuBLAS library that loaded and exports every one of {@link #SYMBOLS}. */
    record Library(String name, SymbolLookup lookup) {
        MemorySegment symbol(String s) { return lookup.find(s).orElseThrow(); }
    }

    /**
     * Where to look, in order: {@code $RRJ_CUBLAS} (a file or a soname), then the sonames
     * libcublas.so.13 and libcublas.so.12 on the loader's path (LD_LIBRARY_PATH, ldconfig),
     * then the CUDA toolkit's lib64 under {@code $CUDA_HOME}, {@code $CUDA_PATH} and
     * /usr/local/cuda.
     */
    static List<String> candidates() {
        List<String> c = new ArrayList<>();
        String env = System.getenv("RRJ_CUBLAS");
        if (env != null && !env.isBlank()) c.add(env.strip());
        c.add("libcublas.so.13");
        c.add("libcublas.so.12");
        List<String> homes = new ArrayList<>();
        for (String v : new String[]{System.getenv("CUDA_HOME"), System.getenv("CUDA_PATH"), "/usr/local/cuda"})
            if (v != null && !v.isBlank() && !homes.contains(v)) homes.add(v);
        for (String h : homes)
            for (String so : new String[]{"libcublas.so.13", "libcublas.so.12"}) c.add(h + "/lib64/" + so);
        return c;
    }

    /** The first candidate that loads and has every symbol; a {@link CudaError} listing each one tried otherwise. */
    static Library find(List<String> candidates) {
        StringBuilder tried = new StringBuilder();
        for (String name : candidates) {
            if (!tried.isEmpty()) tried.append(", ");
            SymbolLookup lookup;
            try {
                lookup = SymbolLookup.libraryLookup(name, Arena.global());
            } catch (IllegalArgumentException e) {
                tried.append(name).append(" (not found)");
                continue;
            }
            String missing = null;
            for (String s : SYMBOLS) {
                Optional<MemorySegment> f = lookup.find(s);
                if (f.isEmpty()) { missing = s; break; }
            }
            if (missing != null) {
                tried.append(name).append(" (loaded, but has no ").append(missing).append(")");
                continue;
            }
            return new Library(name, lookup);
        }
        throw new CudaError("no usable libcublas; tried " + tried);
    }

    private final String library, version;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment handle, alpha, beta;
    private final MethodHandle destroy, sgemm, sgemmStrided;

    private FfmBlas(Library lib, long stream) {
        Linker linker = Linker.nativeLinker();
        MethodHandle create = linker.downcallHandle(lib.symbol("cublasCreate_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS));
        MethodHandle setStream = linker.downcallHandle(lib.symbol("cublasSetStream_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        MethodHandle getVersion = linker.downcallHandle(lib.symbol("cublasGetVersion_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        destroy = linker.downcallHandle(lib.symbol("cublasDestroy_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS));
        // cublasStatus_t cublasSgemm_v2(handle, transa, transb, m, n, k, *alpha, *A, lda, *B, ldb, *beta, *C, ldc)
        sgemm = linker.downcallHandle(lib.symbol("cublasSgemm_v2"), FunctionDescriptor.of(JAVA_INT,
                ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, JAVA_INT,
                ADDRESS, ADDRESS, JAVA_INT));
        // (handle, transa, transb, m, n, k, *alpha, *A, lda, strideA, *B, ldb, strideB, *beta, *C, ldc, strideC, batchCount)
        sgemmStrided = linker.downcallHandle(lib.symbol("cublasSgemmStridedBatched"), FunctionDescriptor.of(JAVA_INT,
                ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, JAVA_LONG,
                ADDRESS, JAVA_INT, JAVA_LONG, ADDRESS, ADDRESS, JAVA_INT, JAVA_LONG, JAVA_INT));
        library = lib.name();
        alpha = arena.allocate(ValueLayout.JAVA_FLOAT);
        beta = arena.allocate(ValueLayout.JAVA_FLOAT);
        MemorySegment out = arena.allocate(ADDRESS);
        try {
            check((int) create.invokeExact(out), "cublasCreate_v2");
            handle = out.get(ADDRESS, 0);
            check((int) setStream.invokeExact(handle, MemorySegment.ofAddress(stream)), "cublasSetStream_v2");
            MemorySegment v = arena.allocate(JAVA_INT);
            check((int) getVersion.invokeExact(handle, v), "cublasGetVersion_v2");
            int n = v.get(JAVA_INT, 0);
            version = n / 10000 + "." + n % 10000 / 100 + "." + n % 100;
        } catch (CudaError e) {
            arena.close();
            throw e;
        } catch (Throwable e) {
            arena.close();
            throw new CudaError("calling " + library + ": " + e);
        }
    }

    /** Creates a cuBLAS handle on the current context, bound to {@code stream} (a raw CUstream). */
    static FfmBlas open(Library lib, long stream) { return new FfmBlas(lib, stream); }

    private static void check(int status, String call) {
        if (status != 0) throw new CudaError(call + ": " + statusName(status));
    }

    static String statusName(int s) {
        return switch (s) {
            case 0 -> "CUBLAS_STATUS_SUCCESS";
            case 1 -> "CUBLAS_STATUS_NOT_INITIALIZED";
            case 3 -> "CUBLAS_STATUS_ALLOC_FAILED";
            case 7 -> "CUBLAS_STATUS_INVALID_VALUE";
            case 8 -> "CUBLAS_STATUS_ARCH_MISMATCH";
            case 11 -> "CUBLAS_STATUS_MAPPING_ERROR";
            case 13 -> "CUBLAS_STATUS_EXECUTION_FAILED";
            case 14 -> "CUBLAS_STATUS_INTERNAL_ERROR";
            case 15 -> "CUBLAS_STATUS_NOT_SUPPORTED";
            case 16 -> "CUBLAS_STATUS_LICENSE_ERROR";
            default -> "cuBLAS status " + s;
        };
    }

    @Override public String describe() { return "ffm (" + library + ", cuBLAS " + version + ")"; }

    private static MemorySegment at(DevPtr p, long floatOffset) { return MemorySegment.ofAddress(p.address() + floatOffset * 4); }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                      DevPtr a, long aOff, int lda, DevPtr b, long bOff, int ldb,
                      float beta, DevPtr c, long cOff, int ldc) {
        this.alpha.set(ValueLayout.JAVA_FLOAT, 0, alpha);
        this.beta.set(ValueLayout.JAVA_FLOAT, 0, beta);
        int status;
        try {
            status = (int) sgemm.invokeExact(handle, transA ? OP_T : OP_N, transB ? OP_T : OP_N, m, n, k, this.alpha,
                    at(a, aOff), lda, at(b, bOff), ldb, this.beta, at(c, cOff), ldc);
        } catch (Throwable e) {
            throw new CudaError("cublasSgemm_v2: " + e);
        }
        check(status, "cublasSgemm_v2");
    }

    @Override
    public void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                    DevPtr a, long aOff, int lda, long strideA, DevPtr b, long bOff, int ldb, long strideB,
                                    float beta, DevPtr c, long cOff, int ldc, long strideC, int batch) {
        this.alpha.set(ValueLayout.JAVA_FLOAT, 0, alpha);
        this.beta.set(ValueLayout.JAVA_FLOAT, 0, beta);
        int status;
        try {
            status = (int) sgemmStrided.invokeExact(handle, transA ? OP_T : OP_N, transB ? OP_T : OP_N, m, n, k, this.alpha,
                    at(a, aOff), lda, strideA, at(b, bOff), ldb, strideB, this.beta, at(c, cOff), ldc, strideC, batch);
        } catch (Throwable e) {
            throw new CudaError("cublasSgemmStridedBatched: " + e);
        }
        check(status, "cublasSgemmStridedBatched");
    }

    @Override
    public void close() {
        try {
            int ignored = (int) destroy.invokeExact(handle);
        } catch (Throwable e) {
            // closing: nothing left to do with the error
        } finally {
            arena.close();
        }
    }
}
