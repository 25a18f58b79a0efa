package rrj.engine.cuda;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;

import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The error paths that run without a GPU: one clear line, never a stack trace from JCuda. */
class CudaUnavailableTest {

    static boolean driverLoads() {
        try {
            SymbolLookup.libraryLookup(Cuda.DRIVER_LIBRARY, Arena.global());
            return true;
        } catch (IllegalArgumentException e) {
            return false;
        }
    }

    static void oneClearLine(Backends.UnavailableException e) {
        String m = e.getMessage();
        assertFalse(m.contains("\n") || m.contains("\r"), "one line: " + m);
        assertTrue(m.startsWith("backend 'cuda': ") && m.endsWith("; use --backend cpu"), m);
        assertNull(e.getCause(), "no cause whose stack trace a caller could print");
    }

    @Test
    void createCudaWithoutADriverIsOneClearLine() {
        if (driverLoads()) { // a GPU machine: it opens, or says in one line why not
            try (Backend b = Backends.create("cuda", 1)) {
                assertEquals("cuda", b.name());
                assertTrue(b.describe().startsWith("backend=cuda"), b.describe());
            } catch (Backends.UnavailableException e) {
                oneClearLine(e);
            }
            return;
        }
        Backends.UnavailableException e = assertThrows(Backends.UnavailableException.class, () -> Backends.create("cuda", 1));
        oneClearLine(e);
        assertEquals("backend 'cuda': no CUDA driver (" + Cuda.DRIVER_LIBRARY + " not found); use --backend cpu", e.getMessage());
    }

    @Test
    void missingDriverLibraryIsNamed() {
        Backends.UnavailableException e = assertThrows(Backends.UnavailableException.class, () -> Cuda.open(1, "libcuda-rrj-test-missing.so.1"));
        oneClearLine(e);
        assertEquals("backend 'cuda': no CUDA driver (libcuda-rrj-test-missing.so.1 not found); use --backend cpu", e.getMessage());
    }

    @Test
    void ffmCublasLoaderNamesEveryCandidateItTried() {
        CudaError e = assertThrows(CudaError.class,
                () -> FfmBlas.find(List.of("/nonexistent/dir/libcublas.so.13", "libcublas-rrj-test-missing.so.12")));
        assertEquals("no usable libcublas; tried /nonexistent/dir/libcublas.so.13 (not found), libcublas-rrj-test-missing.so.12 (not found)",
                e.getMessage());
    }

    @Test
    void ffmCublasLoaderRejectsALibraryWithoutTheSymbols() {
        // libc loads everywhere this project runs (Linux), and exports no cuBLAS
        CudaError e = assertThrows(CudaError.class, () -> FfmBlas.find(List.of("libc.so.6")));
        assertEquals("no usable libcublas; tried libc.so.6 (loaded, but has no cublasCreate_v2)", e.getMessage());
    }

    @Test
    void ffmCandidatesPreferCuda13ThenCuda12() {
        List<String> c = FfmBlas.candidates();
        int i13 = c.indexOf("libcublas.so.13"), i12 = c.indexOf("libcublas.so.12");
        assertTrue(i13 >= 0 && i12 > i13, c.toString());
        assertTrue(c.contains("/usr/local/cuda/lib64/libcublas.so.13"), c.toString());
    }

    @Test
    void oneLineKeepsTheFirstLineOfJcudasMultiLineErrors() {
        assertEquals("Error while loading native library \"JCublas2-12.6.0-linux-x86_64\"",
                Blas.oneLine(new UnsatisfiedLinkError("Error while loading native library \"JCublas2-12.6.0-linux-x86_64\"\nOperating system name: Linux\n...")));
    }
}
