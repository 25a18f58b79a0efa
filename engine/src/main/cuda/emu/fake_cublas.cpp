// A fake cuBLAS (libcublas.so.13) for cuda-emu: the six entry points FfmBlas binds, with
// cuBLAS's column-major semantics written out as plain loops (C = α·op(A)·op(B) + β·C, op(X)
// = X or Xᵀ, X stored column-major with leading dimension ldX; β = 0 never reads C). It checks
// the leading dimensions as cuBLAS does and that every operand lies inside one device
// allocation of the fake driver. A test tool; never a backend.
#include <cstdint>
#include <cstdio>
#include <vector>

extern "C" int emu_inside(std::uintptr_t p, std::size_t n); // from the fake libcuda.so.1

namespace {
constexpr int OK = 0, INVALID_VALUE = 7;

bool operand(const float* p, long rows, long cols, long ld, const char* what) {
    if (rows == 0 || cols == 0) return true;
    std::size_t n = ((cols - 1) * ld + rows) * sizeof(float);
    if (emu_inside(reinterpret_cast<std::uintptr_t>(p), n)) return true;
    std::fprintf(stderr, "rrj cuda-emu cuBLAS: %s (%ld×%ld, ld %ld) is not inside one device allocation\n", what, rows, cols, ld);
    return false;
}

int gemm(int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
         float beta, float* C, int ldc) {
    if (m < 0 || n < 0 || k < 0 || lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) || ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1))
        || ldc < (m > 1 ? m : 1)) return INVALID_VALUE;
    if (!operand(A, ta ? k : m, ta ? m : k, lda, "A") || !operand(B, tb ? n : k, tb ? k : n, ldb, "B") || !operand(C, m, n, ldc, "C"))
        return INVALID_VALUE;
    std::vector<double> col(m);
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) col[i] = 0;
        for (int l = 0; l < k; l++) {
            double b = tb ? B[j + (long) l * ldb] : B[l + (long) j * ldb];
            if (ta) for (int i = 0; i < m; i++) col[i] += (double) A[l + (long) i * lda] * b;
            else for (int i = 0; i < m; i++) col[i] += (double) A[i + (long) l * lda] * b;
        }
        for (int i = 0; i < m; i++) {
            float* c = C + i + (long) j * ldc;
            *c = (float) (alpha * col[i] + (beta == 0.f ? 0.0 : (double) beta * *c));
        }
    }
    return OK;
}
} // namespace

extern "C" {
int cublasCreate_v2(void** h) { *h = reinterpret_cast<void*>(0x10); return OK; }
int cublasDestroy_v2(void*) { return OK; }
int cublasSetStream_v2(void*, void*) { return OK; }
int cublasGetVersion_v2(void*, int* v) { *v = 130000; return OK; }

int cublasSgemm_v2(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
    return gemm(ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
}

int cublasSgemmStridedBatched(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                              long long sa, const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                              long long sc, int batch) {
    for (int i = 0; i < batch; i++) {
        int s = gemm(ta, tb, m, n, k, *alpha, A + i * sa, lda, B + i * sb, ldb, *beta, C + i * sc, ldc);
        if (s != OK) return s;
    }
    return OK;
}
}
