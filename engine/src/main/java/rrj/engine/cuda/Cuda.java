package rrj.engine.cuda;

import rrj.engine.Backend;
import rrj.engine.Backends;

import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;

/**
 * Opens the CUDA backend, or says in one line why it cannot: {@link Backends#create}'s
 * {@code "cuda"} case. The driver library is probed through FFM before any JCuda class is
 * touched, so a machine without a GPU driver gets "no CUDA driver" rather than JCuda's
 * native-library stack trace. No JCuda import here.
 */
public final class Cuda {
    private Cuda() {}

    /** The CUDA driver's library: what JCuda's native library links, and what we probe. */
    static final String DRIVER_LIBRARY = System.getProperty("os.name", "").startsWith("Windows") ? "nvcuda.dll" : "libcuda.so.1";

    /** The CUDA backend on the GPU named by {@code RRJ_CUDA_DEVICE} (default 0). */
    public static Backend open(int threads) { return open(threads, DRIVER_LIBRARY); }

    /** As {@link #open(int)}, probing {@code driverLibrary} (tests pass one that does not exist). */
    static Backend open(int threads, String driverLibrary) {
        try {
            SymbolLookup.libraryLookup(driverLibrary, Arena.global());
        } catch (IllegalArgumentException e) {
            throw unavailable("no CUDA driver (" + driverLibrary + " not found)");
        } catch (IllegalCallerException e) {
            throw unavailable("native access is disabled: run the JVM with --enable-native-access=ALL-UNNAMED");
        }
        try {
            return new CudaBackend(threads);
        } catch (CudaError e) {
            throw unavailable(e.getMessage());
        } catch (LinkageError e) { // JCuda's jar or native library missing or unloadable
            throw unavailable("cannot load JCuda (" + Blas.oneLine(e) + ")");
        }
    }

    private static Backends.UnavailableException unavailable(String why) {
        return new Backends.UnavailableException("backend 'cuda': " + why.replaceAll("\\s*\\R\\s*", " ") + "; use --backend cpu", null);
    }
}
