// CPU emulation of the CUDA built-ins our kernels use, so that forward.cu, lora.cu and
// backward.cu compile with g++ into the fake driver of build.sh (a test tool for machines
// without a GPU; see run-gpu-tests.sh). Every thread of a block is a fiber; blocks run one
// after the other. __syncthreads and the warp shuffles are barriers that the scheduler in
// emu_runtime.cpp releases when every live thread of the block (or warp) has reached them,
// and it aborts on a barrier some threads can never reach (divergence).
//
// What it cannot show: timing, the memory model between blocks, warp-synchronous code that
// relies on lockstep without a barrier (our kernels have none), PTX/JIT problems.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <functional>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static   // one block runs at a time: a static is block-shared

struct dim3 { unsigned x = 1, y = 1, z = 1; };

namespace emu {
extern dim3 thread_idx, block_idx, block_dim, grid_dim;
void* dynamic_shared();                     // this block's dynamic shared memory
void sync_block();
float shuffle(float v, int src_lane);       // every live lane of the warp must call it

using Launch = std::function<void(void**)>;
void register_kernel(const char* name, Launch fn);

template <typename... A, std::size_t... I>
void call(void (*fn)(A...), void** p, std::index_sequence<I...>) {
    fn(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}

// A launcher that reads the kernel's arguments from cuLaunchKernel's kernelParams.
template <typename... A>
Launch adapt(void (*fn)(A...)) {
    return [fn](void** p) { call(fn, p, std::index_sequence_for<A...>{}); };
}
} // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim

inline void __syncthreads() { emu::sync_block(); }
inline float __shfl_sync(unsigned, float v, int lane) { return emu::shuffle(v, lane & 31); }
inline float __shfl_xor_sync(unsigned, float v, int mask) {
    return emu::shuffle(v, (int) ((emu::thread_idx.x & 31) ^ (unsigned) mask));
}
// a product the compiler may not contract into an FMA (the build contracts like nvcc)
inline float __fmul_rn(float a, float b) {
    float p = a * b;
    asm("" : "+x"(p));
    return p;
}
using std::max;
using std::min;

#define EMU_REGISTER(fn) static const int emu_reg_##fn = (emu::register_kernel(#fn, emu::adapt(fn)), 0);
