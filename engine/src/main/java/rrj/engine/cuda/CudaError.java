package rrj.engine.cuda;

/**
 * A CUDA driver or cuBLAS call failed; the message names the call and the error in one line.
 * While the backend starts, {@link Cuda#open} turns it into
 * {@link rrj.engine.Backends.UnavailableException}.
 */
final class CudaError extends RuntimeException {
    CudaError(String message) { super(message); }
}
