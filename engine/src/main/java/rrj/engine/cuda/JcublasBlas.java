package rrj.engine.cuda;

import jcuda.Pointer;
import jcuda.jcublas.JCublas2;
import jcuda.jcublas.cublasHandle;
import jcuda.jcublas.cublasOperation;
import jcuda.jcublas.cublasStatus;
import jcuda.runtime.cudaStream_t;

/**
 * cuBLAS through JCublas2 (org.jcuda:jcublas 12.6), whose native library links
 * libcublas.so.12: {@link #open} fails with an {@link UnsatisfiedLinkError} where only a
 * CUDA 13 cuBLAS is installed, and {@link Blas#open} then takes {@link FfmBlas}.
 */
final class JcublasBlas implements Blas {
    private final cublasHandle handle;
    private final float[] alpha = new float[1], beta = new float[1];
    private final Pointer alphaPtr = Pointer.to(alpha), betaPtr = Pointer.to(beta);
    private final String version;

    private JcublasBlas(cublasHandle handle, String version) {
        this.handle = handle;
        this.version = version;
    }

    static JcublasBlas open(StreamHandle stream) {
        JCublas2.setExceptionsEnabled(false);
        JCublas2.initialize(); // loads libJCublas2, which needs libcublas.so.12
        cublasHandle h = new cublasHandle();
        check(JCublas2.cublasCreate(h), "cublasCreate");
        check(JCublas2.cublasSetStream(h, new cudaStream_t(stream)), "cublasSetStream");
        int[] v = new int[1];
        check(JCublas2.cublasGetVersion(h, v), "cublasGetVersion");
        return new JcublasBlas(h, v[0] / 10000 + "." + v[0] % 10000 / 100 + "." + v[0] % 100);
    }

    private static void check(int status, String call) {
        if (status != cublasStatus.CUBLAS_STATUS_SUCCESS) throw new CudaError(call + ": " + cublasStatus.stringFor(status));
    }

    private static int op(boolean t) { return t ? cublasOperation.CUBLAS_OP_T : cublasOperation.CUBLAS_OP_N; }

    @Override public String describe() { return "jcublas (libcublas.so.12, cuBLAS " + version + ")"; }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                      DevPtr a, long aOff, int lda, DevPtr b, long bOff, int ldb,
                      float beta, DevPtr c, long cOff, int ldc) {
        this.alpha[0] = alpha;
        this.beta[0] = beta;
        check(JCublas2.cublasSgemm(handle, op(transA), op(transB), m, n, k, alphaPtr, a.at(aOff * 4), lda, b.at(bOff * 4), ldb,
                betaPtr, c.at(cOff * 4), ldc), "cublasSgemm");
    }

    @Override
    public void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                    DevPtr a, long aOff, int lda, long strideA, DevPtr b, long bOff, int ldb, long strideB,
                                    float beta, DevPtr c, long cOff, int ldc, long strideC, int batch) {
        this.alpha[0] = alpha;
        this.beta[0] = beta;
        check(JCublas2.cublasSgemmStridedBatched(handle, op(transA), op(transB), m, n, k, alphaPtr, a.at(aOff * 4), lda, strideA,
                b.at(bOff * 4), ldb, strideB, betaPtr, c.at(cOff * 4), ldc, strideC, batch), "cublasSgemmStridedBatched");
    }

    @Override
    public void close() { JCublas2.cublasDestroy(handle); }
}
