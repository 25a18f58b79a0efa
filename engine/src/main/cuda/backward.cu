// Training (backward) kernels of the CUDA backend, each the mirror of a forward op as in
// rrj.engine.ReferenceBackend (the spec) and rrj.engine.cpu.CpuTraining. The GEMM of
// linear's backward (dx = dy·W) is a cuBLAS call; LoRA's backward lives in lora.cu; the
// unfused GELU forward that training keeps is forward.cu's bias_act.
//
// Attention backward recomputes the probabilities from q and k (nothing is kept from the
// forward pass) in two packed kernels over all (sequence, head) pairs: the first writes P and
// dS = P ⊙ (dP − rowsum(P ⊙ dP))·scale per query row into scratch, the second reduces them
// into dq, dk, dv per token row, so that no two threads write the same element.
#include "common.cuh"

#define ATT_WARPS 8   // query (or key) rows per block, one warp each

// dx = dy · gelu'(x), gelu'(x) = Φ(x) + x·φ(x). Grid-stride over n elements; dx may be dy.
extern "C" __global__ void gelu_backward(float* dx, const float* dy, const float* x, long long n) {
    for (long long i = (long long) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x) {
        float v = x[i];
        float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));
        float pdf = expf(-0.5f * v * v) * 0.3989422804014327f;
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

// Backward of add_layernorm: dsum = rstd·(g·dy − mean(g·dy) − x̂·mean(g·dy·x̂)), x̂ recomputed
// from x + res. One block per row; dynamic shared memory: c floats (x + res).
extern "C" __global__ void add_layernorm_backward(float* dsum, const float* dy, const float* x, const float* res,
                                                  const float* gamma, int c, float eps) {
    extern __shared__ float row[];
    __shared__ float red[32];
    long long o = (long long) blockIdx.x * c;
    float s = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) { row[j] = x[o + j] + res[o + j]; s += row[j]; }
    float mean = block_sum(s, red) / c;
    float v = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) { float d = row[j] - mean; v += d * d; }
    float rstd = 1.f / sqrtf(block_sum(v, red) / c + eps);
    // g·dy rounded once (__fmul_rn: never contracted into an FMA) so that g·dy − mean(g·dy) is
    // exactly 0 where the row is constant; rstd (up to 1/√eps) would otherwise blow the FMA's
    // unrounded product up into a gradient where there is none (c = 1 read 0.028 instead of 0)
    float m1 = 0.f, m2 = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        float g = __fmul_rn(gamma[j], dy[o + j]);
        m1 += g;
        m2 += g * (row[j] - mean) * rstd;
    }
    m1 = block_sum(m1, red) / c;
    m2 = block_sum(m2, red) / c;
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        dsum[o + j] = rstd * (__fmul_rn(gamma[j], dy[o + j]) - m1 - (row[j] - mean) * rstd * m2);
}

// Backward of pool_rows: spreads dpooled[b] over the rows of sequence b (mean: / len; CLS:
// the first row gets it, the others 0). Grid (⌈c/256⌉, B).
extern "C" __global__ void pool_backward(float* dh, const float* dpooled, const int* start, int c, int mode) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (j >= c) return;
    int s0 = start[b], len = start[b + 1] - s0;
    float g = dpooled[(long long) b * c + j];
    for (int t = 0; t < len; t++)
        dh[(long long) (s0 + t) * c + j] = mode == 1 ? (t == 0 ? g : 0.f) : g / len;
}

// Backward of l2_normalize, x the input before normalisation: dx = (dy − x·(x·dy)/‖x‖²)/‖x‖,
// or dy / 1e-12 where the clamp was active. One block per row.
extern "C" __global__ void l2_normalize_backward(float* dx, const float* dy, const float* x, int c) {
    __shared__ float red[32];
    long long o = (long long) blockIdx.x * c;
    float ss = 0.f, xd = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) { ss += x[o + j] * x[o + j]; xd += x[o + j] * dy[o + j]; }
    ss = block_sum(ss, red);
    xd = block_sum(xd, red);
    float n = sqrtf(ss);
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        dx[o + j] = n < 1e-12f ? dy[o + j] / 1e-12f : (dy[o + j] - x[o + j] * xd / ss) / n;
}

// dst[i] += src[i] for i < n (grid-stride).
extern "C" __global__ void add_inplace(float* dst, const float* src, long long n) {
    for (long long i = (long long) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        dst[i] += src[i];
}

// Attention backward, part 1: for query row i of (sequence b, head h), with s_ij = q_i·k_j·scale,
// P_ij = softmax_j(s_ij), dP_ij = dO_i·v_j, writes P_ij and dS_ij = P_ij·(dP_ij − Σ_j' P_ij'·dP_ij')·scale
// at [H·sq[b] + (h·len + i)·len + j]. Grid (⌈maxLen/ATT_WARPS⌉, H, B), one warp per row,
// lanes over j. layout: start[0..B], then sq[0..B] with sq[b] = Σ_{b'<b} len_b'², so that
// sequence b's H·len² block starts at H·sq[b] (H = gridDim.y).
extern "C" __global__ void attention_backward_probs(float* P, float* dS, const float* q, const float* k,
                                                    const float* v, const float* dout, const int* layout,
                                                    int B, int C, int D, float scale) {
    int b = blockIdx.z, h = blockIdx.y, lane = threadIdx.x & 31;
    int s0 = layout[b], len = layout[b + 1] - s0;
    int i = blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
    if (i >= len) return;                       // whole warps leave together
    long long base = (long long) gridDim.y * layout[B + 1 + b] + ((long long) h * len + i) * len;
    const float* qi = q + (long long) (s0 + i) * C + h * D;
    const float* di = dout + (long long) (s0 + i) * C + h * D;
    float m = -INFINITY;
    for (int j = lane; j < len; j += 32) {
        const float* kj = k + (long long) (s0 + j) * C + h * D;
        float s = 0.f;
        for (int e = 0; e < D; e++) s += qi[e] * kj[e];
        s *= scale;
        P[base + j] = s;
        m = fmaxf(m, s);
    }
    m = warp_max(m);
    float sum = 0.f;
    for (int j = lane; j < len; j += 32) { float e = expf(P[base + j] - m); P[base + j] = e; sum += e; }
    float inv = 1.f / warp_sum(sum);
    float dot = 0.f;
    for (int j = lane; j < len; j += 32) {
        const float* vj = v + (long long) (s0 + j) * C + h * D;
        float pj = P[base + j] * inv, dp = 0.f;
        for (int e = 0; e < D; e++) dp += di[e] * vj[e];
        P[base + j] = pj;
        dS[base + j] = dp;
        dot += pj * dp;
    }
    dot = warp_sum(dot);
    for (int j = lane; j < len; j += 32) dS[base + j] = P[base + j] * (dS[base + j] - dot) * scale;
}

// Attention backward, part 2: for token row t of (sequence b, head h), lanes over the head's
// dims e: dq_t = Σ_j dS_tj·k_j, dk_t = Σ_i dS_it·q_i, dv_t = Σ_i P_it·dO_i. Same grid as part 1.
extern "C" __global__ void attention_backward_grads(float* dq, float* dk, float* dv, const float* P, const float* dS,
                                                    const float* q, const float* k, const float* dout,
                                                    const int* layout, int B, int C, int D) {
    int b = blockIdx.z, h = blockIdx.y, lane = threadIdx.x & 31;
    int s0 = layout[b], len = layout[b + 1] - s0;
    int t = blockIdx.x * ATT_WARPS + (threadIdx.x >> 5);
    if (t >= len) return;
    long long base = (long long) gridDim.y * layout[B + 1 + b] + (long long) h * len * len; // (h, row 0, col 0)
    for (int e = lane; e < D; e += 32) {
        long long col = (long long) h * D + e;
        float gq = 0.f, gk = 0.f, gv = 0.f;
        for (int j = 0; j < len; j++) {
            long long rowJ = (long long) (s0 + j) * C + col;
            gq += dS[base + (long long) t * len + j] * k[rowJ];
            gk += dS[base + (long long) j * len + t] * q[rowJ];
            gv += P[base + (long long) j * len + t] * dout[rowJ];
        }
        long long at = (long long) (s0 + t) * C + col;
        dq[at] = gq;
        dk[at] = gk;
        dv[at] = gv;
    }
}
