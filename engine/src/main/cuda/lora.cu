// LoRA kernels of the CUDA backend: SGMV (Punica, arXiv 2310.18547) over per-expert row
// segments, each a single launch for all segments of a linear, plus the two weight-gradient
// reductions training needs.
//
//   forward   v = x̃·Aₑᵀ              lora_shrink  (mode 0)            x̃ = x ⊙ dropout mask
//             y += sₑ·v·Bₑᵀ           lora_expand  (mode 2)
//   backward  u = sₑ·dy·Bₑ            lora_shrink  (mode 1|2)
//             dx += (u·Aₑ) ⊙ mask     lora_expand  (mode 1|4)
//             v = x̃·Aₑᵀ              lora_shrink  (mode 0)
//             dAₑ += uᵀ·x̃            lora_grad_a
//             dBₑ += sₑ·dyᵀ·v         lora_grad_b
//
// The segments arrive by value in a Segs struct (kernel parameter space; no upload per call).
// The host (LoraSegments.java) turns rrj.engine.Lora into non-overlapping row runs, first
// segment wins where segments overlap, at most MAX_SEGS per launch; runs cut from the same
// segment share a group, and only the first run of a group writes its gradients (summing
// over all runs of the group), so no two blocks write the same gradient element.
//
// A: [r, in] row-major (PEFT lora_A.weight), B: [out, r] (lora_B.weight); v, u: [rows, vld].
#include "common.cuh"

#define MAX_SEGS 32       // keep equal to LoraSegments.MAX_SEGS (PtxTest checks the struct size)
#define SHRINK_ROWS 16    // rows per block in lora_shrink (2 per warp)
#define SHRINK_K 8        // rank chunk a warp accumulates at once
#define EXPAND_ROWS 16    // rows per block in lora_expand (one accumulator each)

struct Segs {
    const float* a[MAX_SEGS];   // A of the run's segment [r, in]
    const float* b[MAX_SEGS];   // B [out, r]
    float* ga[MAX_SEGS];        // dA accumulator or null (no gradients)
    float* gb[MAX_SEGS];        // dB accumulator or null
    int rowStart[MAX_SEGS];     // run rows [rowStart, rowEnd)
    int rowEnd[MAX_SEGS];
    int rank[MAX_SEGS];
    int group[MAX_SEGS];        // runs writing the same gradient tensors share a group
    float scale[MAX_SEGS];
    int count;
};

// v[i, k] = Σ_j M(k, j)·x̃[i, j] (· sₑ if mode & 2) for the rows of run blockIdx.z.
// mode & 1: M = Bₑᵀ read from b (M(k, j) = B[j, k], x is dy of width out), else M = Aₑ.
// x̃ = x ⊙ dropout mask (p > 0 only in training). Grid (1, ⌈maxRunRows/SHRINK_ROWS⌉, count),
// 256 threads: each warp takes rows, lanes stride over j, SHRINK_K ranks at a time.
extern "C" __global__ void lora_shrink(float* v, const float* x, const Segs segs, int width, int vld,
                                       int mode, float p, long long seed) {
    int e = blockIdx.z;
    int r0 = segs.rowStart[e] + blockIdx.y * SHRINK_ROWS, r1 = min(segs.rowEnd[e], r0 + SHRINK_ROWS);
    if (r0 >= r1) return;
    int rank = segs.rank[e];
    bool bt = mode & 1;
    const float* m = bt ? segs.b[e] : segs.a[e];
    float sc = (mode & 2) ? segs.scale[e] : 1.f;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int i = r0 + warp; i < r1; i += warps) {
        const float* xr = x + (long long) i * width;
        for (int k0 = 0; k0 < rank; k0 += SHRINK_K) {
            float acc[SHRINK_K];
#pragma unroll
            for (int kk = 0; kk < SHRINK_K; kk++) acc[kk] = 0.f;
            for (int j = lane; j < width; j += 32) {
                float xv = xr[j] * drop_scale(seed, i, j, p);
#pragma unroll
                for (int kk = 0; kk < SHRINK_K; kk++) {
                    int k = k0 + kk;
                    if (k < rank) acc[kk] += (bt ? m[(long long) j * rank + k] : m[(long long) k * width + j]) * xv;
                }
            }
#pragma unroll
            for (int kk = 0; kk < SHRINK_K; kk++) {
                float s = warp_sum(acc[kk]);
                if (lane == 0 && k0 + kk < rank) v[(long long) i * vld + k0 + kk] = s * sc;
            }
        }
    }
}

// y[i, o] += Σ_k v[i, k]·M(o, k) (· sₑ if mode & 2) (⊙ dropout mask at (i, o) if mode & 4)
// for the rows of run blockIdx.z. mode & 1: M = Aₑᵀ (M(o, k) = A[k, o], y is dx of width in),
// else M = Bₑ (M(o, k) = B[o, k]). Grid (⌈width/256⌉, ⌈maxRunRows/EXPAND_ROWS⌉, count),
// 256 threads, one output column each over EXPAND_ROWS rows; the v rows sit in shared memory
// (dynamic: EXPAND_ROWS · maxRank floats).
extern "C" __global__ void lora_expand(float* y, const float* v, const Segs segs, int width, int vld,
                                       int mode, float p, long long seed) {
    extern __shared__ float vs[];
    int e = blockIdx.z;
    int r0 = segs.rowStart[e] + blockIdx.y * EXPAND_ROWS, n = min(segs.rowEnd[e] - r0, EXPAND_ROWS);
    if (n <= 0) return;                          // uniform for the block
    int rank = segs.rank[e];
    for (int idx = threadIdx.x; idx < EXPAND_ROWS * rank; idx += blockDim.x) {
        int rr = idx / rank, k = idx - rr * rank;
        vs[idx] = rr < n ? v[(long long) (r0 + rr) * vld + k] : 0.f;
    }
    __syncthreads();
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= width) return;
    bool at = mode & 1;
    const float* m = at ? segs.a[e] : segs.b[e];
    float acc[EXPAND_ROWS];
#pragma unroll
    for (int rr = 0; rr < EXPAND_ROWS; rr++) acc[rr] = 0.f;
    for (int k = 0; k < rank; k++) {
        float mk = at ? m[(long long) k * width + o] : m[(long long) o * rank + k];
#pragma unroll
        for (int rr = 0; rr < EXPAND_ROWS; rr++) acc[rr] += vs[rr * rank + k] * mk;
    }
    float sc = (mode & 2) ? segs.scale[e] : 1.f;
#pragma unroll
    for (int rr = 0; rr < EXPAND_ROWS; rr++) {
        if (rr < n) {
            int i = r0 + rr;
            float d = acc[rr] * sc;
            if (mode & 4) d *= drop_scale(seed, i, o, p);
            y[(long long) i * width + o] += d;
        }
    }
}

// True when an earlier run of this launch is in the same group (that one does the work).
__device__ __forceinline__ bool not_first_of_group(const Segs& segs, int e) {
    for (int f = 0; f < e; f++) if (segs.group[f] == segs.group[e]) return true;
    return false;
}

// dAₑ[k, j] += Σ_i u[i, k]·x̃[i, j] over the rows of every run of the group (u carries sₑ).
// Grid (⌈in/256⌉, maxRank, count).
extern "C" __global__ void lora_grad_a(const Segs segs, const float* u, const float* x, int width, int vld,
                                       float p, long long seed) {
    int e = blockIdx.z, k = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (segs.ga[e] == 0 || k >= segs.rank[e] || j >= width || not_first_of_group(segs, e)) return;
    float s = 0.f;
    for (int f = e; f < segs.count; f++) {
        if (segs.group[f] != segs.group[e]) continue;
        for (int i = segs.rowStart[f]; i < segs.rowEnd[f]; i++)
            s += u[(long long) i * vld + k] * x[(long long) i * width + j] * drop_scale(seed, i, j, p);
    }
    segs.ga[e][(long long) k * width + j] += s;
}

// dBₑ[o, k] += Σ_runs sₑ·Σ_i dy[i, o]·v[i, k] over the rows of every run of the group.
// Grid (⌈out/256⌉, maxRank, count).
extern "C" __global__ void lora_grad_b(const Segs segs, const float* dy, const float* v, int width, int vld) {
    int e = blockIdx.z, k = blockIdx.y, o = blockIdx.x * blockDim.x + threadIdx.x;
    int rank = segs.rank[e];
    if (segs.gb[e] == 0 || k >= rank || o >= width || not_first_of_group(segs, e)) return;
    float s = 0.f;
    for (int f = e; f < segs.count; f++) {
        if (segs.group[f] != segs.group[e]) continue;
        float part = 0.f;
        for (int i = segs.rowStart[f]; i < segs.rowEnd[f]; i++)
            part += dy[(long long) i * width + o] * v[(long long) i * vld + k];
        s += segs.scale[f] * part;
    }
    segs.gb[e][(long long) o * rank + k] += s;
}
