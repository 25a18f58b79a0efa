package rrj.engine.cuda;

import jcuda.driver.CUstream;

/** A CUDA stream whose raw handle we can read (for cublasSetStream_v2 through FFM). */
final class StreamHandle extends CUstream {
    long address() { return getNativePointer(); }
}
