// Helpers shared by the kernels of forward.cu, lora.cu and backward.cu: warp and block
// reductions, exact GELU, and the LoRA dropout mask (bit-identical to rrj.engine.Lora#dropScale).
//
// Conventions of every kernel here: fp32, row-major, packed token rows (no padding); rows of
// one sequence b are [start[b], start[b+1]). Block sizes are multiples of 32 (the reductions
// assume whole warps). No fast-math: nvcc runs without --use_fast_math, so expf / erff / sqrtf
// are the accurate (≤ 2 ulp) library forms.
#pragma once

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the whole block; every thread gets the total. red: 32 floats of shared memory.
// The leading barrier lets a block call it twice in a row on the same scratch.
__device__ __forceinline__ float block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.f;
    return warp_sum(t);
}

// BERT's GELU, the exact erf form (HF "gelu"), not the tanh approximation.
__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}

// rrj.engine.Lora#dropScale: 0 (dropped) or 1/(1-p), from a splitmix64 hash of
// (seed, row, col). Same integer arithmetic as Java's long (wrapping), same double compare.
__device__ __forceinline__ float drop_scale(long long seed, int row, int col, float p) {
    if (p == 0.f) return 1.f;
    unsigned long long z = (unsigned long long) seed
            + (unsigned long long) (long long) row * 0x9E3779B97F4A7C15ull
            + (unsigned long long) (long long) col * 0xC2B2AE3D27D4EB4Full;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    double u = (double) (z >> 11) * 0x1.0p-53;
    return u < (double) p ? 0.f : 1.f / (1.f - p);
}
