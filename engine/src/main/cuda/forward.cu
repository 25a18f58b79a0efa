// Inference kernels of the CUDA backend (rrj.engine.cuda.CudaBackend). The GEMMs are cuBLAS
// calls made by the host; these kernels are everything around them: embedding gather +
// LayerNorm, the bias/GELU epilogue, residual add + LayerNorm, the softmax of the cuBLAS
// attention path, the packed attention kernel for batches of mixed lengths, pooling and L2
// normalisation.
//
// Mirrors HF modeling_bert.py: post-LayerNorm (biased variance, eps inside the sqrt), exact
// erf GELU, bidirectional attention that sees only its own sequence's tokens.
//
// Compiled to PTX by build-ptx.sh (the Maven profile "ptx"); the host loads
// rrj/engine/cuda/forward.ptx and launches these entries by the names in Kernels.java.
#include "common.cuh"

#define ROW_THREADS 256   // one block per row for the LayerNorm-type kernels
#define ATT_WARPS 8       // attention_packed: query rows per block (one warp each)
#define ATT_TILE 32       // attention_packed: keys per shared-memory tile (one per lane)
#define ATT_MAX_D 128     // attention_packed: head width it supports (4 values per lane)

// LayerNorm of row[0..c) (shared memory, each thread owning the indices j ≡ tid mod blockDim,
// so no barrier is needed between filling and reading) into out.
__device__ void layernorm_row(const float* row, int c, const float* gamma, const float* beta,
                              float eps, float* out, float* red) {
    float s = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += row[j];
    float mean = block_sum(s, red) / c;
    float v = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) { float d = row[j] - mean; v += d * d; }
    float var = block_sum(v, red) / c;            // biased, as torch.nn.LayerNorm
    float inv = 1.f / sqrtf(var + eps);
    for (int j = threadIdx.x; j < c; j += blockDim.x) out[j] = (row[j] - mean) * inv * gamma[j] + beta[j];
}

// out[i] = LayerNorm(word[ids[i]] + pos[positions[i]] + type[types[i]]), one block per row.
// tok: [3n] ints, ids then positions then token types. Dynamic shared memory: c floats.
extern "C" __global__ void embed_layernorm(float* out, const int* tok, int n,
                                           const float* word, const float* pos, const float* type,
                                           const float* gamma, const float* beta, int c, float eps) {
    extern __shared__ float row[];
    __shared__ float red[32];
    int i = blockIdx.x;
    const float* w = word + (long long) tok[i] * c;
    const float* p = pos + (long long) tok[n + i] * c;
    const float* t = type + (long long) tok[2 * n + i] * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) row[j] = w[j] + p[j] + t[j];
    layernorm_row(row, c, gamma, beta, eps, out + (long long) i * c, red);
}

// y[r, o] = act(x[r, o] + bias[o]) over rows × cols; y may be x (the linear epilogue runs in
// place on the GEMM output). flags: 1 = add bias, 2 = exact GELU. Grid: (⌈cols/256⌉, ≤ 65535).
extern "C" __global__ void bias_act(float* y, const float* x, const float* bias, int rows, int cols, int flags) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= cols) return;
    float b = (flags & 1) ? bias[o] : 0.f;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        long long at = (long long) r * cols + o;
        float v = x[at] + b;
        y[at] = (flags & 2) ? gelu_erf(v) : v;
    }
}

// out[i] = LayerNorm(x[i] + res[i]), one block per row; out may alias res (each thread reads
// its own indices before writing them). Dynamic shared memory: c floats.
extern "C" __global__ void add_layernorm(float* out, const float* x, const float* res,
                                         const float* gamma, const float* beta, int c, float eps) {
    extern __shared__ float row[];
    __shared__ float red[32];
    long long o = (long long) blockIdx.x * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) row[j] = x[o + j] + res[o + j];
    layernorm_row(row, c, gamma, beta, eps, out + o, red);
}

// In-place softmax over rows of len contiguous floats (the cuBLAS path's score matrices:
// the 1/√D scale is already in the GEMM's alpha). One warp per row.
extern "C" __global__ void softmax_rows(float* s, long long rows, int len) {
    long long r = (long long) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    float* p = s + r * len;
    float m = -INFINITY;
    for (int j = lane; j < len; j += 32) m = fmaxf(m, p[j]);
    m = warp_max(m);
    float sum = 0.f;
    for (int j = lane; j < len; j += 32) { float e = expf(p[j] - m); p[j] = e; sum += e; }
    float inv = 1.f / warp_sum(sum);
    for (int j = lane; j < len; j += 32) p[j] *= inv;
}

// Attention over a packed batch of mixed lengths in one launch: out = softmax(q·kᵀ·scale)·v
// per (sequence, head), q/k/v/out [N, C] with head h in columns [h·D, (h+1)·D).
// Grid (⌈maxLen/ATT_WARPS⌉, H, B), ATT_WARPS warps; warp w of block x owns query row
// x·ATT_WARPS + w of its sequence. Keys stream through shared memory ATT_TILE at a time with
// an online softmax (running max m and sum l; FlashAttention's recurrence, fp32 throughout).
// Lane j scores key j of the tile; lane e accumulates output dims e, e+32, e+64, e+96.
// Dynamic shared memory: (2·ATT_TILE·(D+1) + ATT_WARPS·D) floats (rows padded to D+1 so the
// lanes' reads of different key rows fall in different banks). D ≤ ATT_MAX_D.
extern "C" __global__ void attention_packed(float* out, const float* q, const float* k, const float* v,
                                            const int* start, int C, int D, float scale) {
    extern __shared__ float sm[];
    float* ks = sm;                              // [ATT_TILE][D+1]
    float* vs = ks + ATT_TILE * (D + 1);         // [ATT_TILE][D+1]
    float* qs = vs + ATT_TILE * (D + 1);         // [ATT_WARPS][D]
    int b = blockIdx.z, h = blockIdx.y;
    int s0 = start[b], len = start[b + 1] - s0;
    if (blockIdx.x * ATT_WARPS >= len) return;   // the whole block is past this sequence
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int i = blockIdx.x * ATT_WARPS + warp;
    bool active = i < len;                       // uniform within a warp
    float* qw = qs + warp * D;
    if (active)
        for (int e = lane; e < D; e += 32) qw[e] = q[(long long) (s0 + i) * C + h * D + e] * scale;
    float acc[ATT_MAX_D / 32];
#pragma unroll
    for (int t = 0; t < ATT_MAX_D / 32; t++) acc[t] = 0.f;
    float m = -INFINITY, l = 0.f;
    for (int j0 = 0; j0 < len; j0 += ATT_TILE) {
        __syncthreads();                         // the previous tile is consumed (and qw written)
        for (int idx = threadIdx.x; idx < ATT_TILE * D; idx += blockDim.x) {
            int r = idx / D, e = idx - r * D, j = j0 + r;
            long long g = (long long) (s0 + j) * C + h * D + e;
            ks[r * (D + 1) + e] = j < len ? k[g] : 0.f;
            vs[r * (D + 1) + e] = j < len ? v[g] : 0.f;
        }
        __syncthreads();
        if (!active) continue;
        bool valid = j0 + lane < len;
        float s = 0.f;
        const float* kr = ks + lane * (D + 1);
        for (int e = 0; e < D; e++) s += qw[e] * kr[e];
        s = valid ? s : -INFINITY;
        float mnew = fmaxf(m, warp_max(s));      // finite: key j0 < len is valid
        float p = valid ? expf(s - mnew) : 0.f;
        float corr = expf(m - mnew);             // 0 on the first tile (m = -inf)
        l = l * corr + warp_sum(p);
        int nk = min(ATT_TILE, len - j0);
#pragma unroll
        for (int t = 0; t < ATT_MAX_D / 32; t++) acc[t] *= corr;
        for (int jj = 0; jj < nk; jj++) {
            float pj = __shfl_sync(FULL_MASK, p, jj);
            const float* vr = vs + jj * (D + 1);
#pragma unroll
            for (int t = 0; t < ATT_MAX_D / 32; t++) {
                int e = lane + 32 * t;
                if (e < D) acc[t] += pj * vr[e];
            }
        }
        m = mnew;
    }
    if (!active) return;
    float inv = 1.f / l;
#pragma unroll
    for (int t = 0; t < ATT_MAX_D / 32; t++) {
        int e = lane + 32 * t;
        if (e < D) out[(long long) (s0 + i) * C + h * D + e] = acc[t] * inv;
    }
}

// Pooling into one row per sequence: mode 0 = mean over the sequence's rows ([CLS] and [SEP]
// included), 1 = the first row ([CLS]). Grid (⌈c/256⌉, B).
extern "C" __global__ void pool_rows(float* out, const float* h, const int* start, int c, int mode) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (j >= c) return;
    int s0 = start[b], len = start[b + 1] - s0;
    float s;
    if (mode == 1) s = h[(long long) s0 * c + j];
    else {
        s = 0.f;
        for (int t = 0; t < len; t++) s += h[(long long) (s0 + t) * c + j];
        s /= len;
    }
    out[(long long) b * c + j] = s;
}

// x[i] /= max(‖x[i]‖, 1e-12) (sentence-transformers' Normalize), one block per row.
extern "C" __global__ void l2_normalize(float* x, int c) {
    __shared__ float red[32];
    float* r = x + (long long) blockIdx.x * c;
    float s = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += r[j] * r[j];
    float n = fmaxf(sqrtf(block_sum(s, red)), 1e-12f);
    for (int j = threadIdx.x; j < c; j += blockDim.x) r[j] /= n;
}
