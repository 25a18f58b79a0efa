// A fake CUDA driver (libcuda.so.1) that runs our kernels on the CPU: the functions JCuda's
// driver library calls for the CUDA backend, device memory as host memory, kernels compiled
// from the .cu sources with emu.h and run block by block, thread by thread as fibers.
// A test tool for machines without a GPU (run-gpu-tests.sh); never a backend.
//
// Checks that a GPU would not make for us, so that bugs fail loudly here:
//   - every device allocation ends at a PROT_NONE page (a read or write past the end faults)
//     and starts after a canary (a write before the start is reported at the next sync);
//   - fresh allocations are filled with 0xFF bytes (NaN): reading memory never written shows;
//   - copies and cuBLAS calls must stay inside one allocation;
//   - launch limits: block a multiple of 32 and at most 1024 threads, grid y/z ≤ 65535,
//     at most 48 KiB of dynamic shared memory (filled with NaN at each block start);
//   - barriers that not every live thread of the block (warp) can reach abort with a message.
#include "emu.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum {
    CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_OUT_OF_MEMORY = 2, CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200, CUDA_ERROR_NOT_FOUND = 500, CUDA_ERROR_LAUNCH_FAILED = 719
};

// ------------------------------------------------------------------ fibers

extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

namespace emu {
dim3 thread_idx, block_idx, block_dim, grid_dim;

namespace {
enum State { RUNNABLE, AT_BLOCK, AT_WARP, DONE };
constexpr std::size_t STACK = 256 * 1024;

struct Fiber {
    void* sp = nullptr;
    State state = RUNNABLE;
    char* stack = nullptr;
};

std::vector<Fiber> fibers;
void* scheduler_sp;
int current;
const Launch* body;
void** body_params;
std::vector<float> dyn_shared;
float warp_slots[32][32];
const char* kernel_name = "?";

[[noreturn]] void die(const std::string& m) {
    std::fprintf(stderr, "rrj cuda-emu: %s (kernel %s)\n", m.c_str(), kernel_name);
    std::fflush(stderr);
    std::abort();
}

void set_thread(int t) {
    thread_idx.x = (unsigned) t % block_dim.x;
    thread_idx.y = (unsigned) t / block_dim.x % block_dim.y;
    thread_idx.z = (unsigned) t / (block_dim.x * block_dim.y);
}

void yield(State s) {
    fibers[current].state = s;
    emu_switch(&fibers[current].sp, scheduler_sp);
}

void trampoline() {
    (*body)(body_params);
    yield(DONE);
    die("a finished fiber was resumed");
}

void start_fiber(int i) {
    Fiber& f = fibers[i];
    if (!f.stack) f.stack = static_cast<char*>(std::malloc(STACK));
    auto top = reinterpret_cast<std::uintptr_t>(f.stack + STACK) & ~std::uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                    // alignment: rsp ≡ 8 (mod 16) at entry
    *--sp = reinterpret_cast<void*>(&trampoline);       // emu_switch's ret lands here
    for (int r = 0; r < 6; r++) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
    f.sp = sp;
    f.state = RUNNABLE;
}

void run_block(int threads) {
    for (int i = 0; i < threads; i++) start_fiber(i);
    for (;;) {
        bool ran = false;
        for (int i = 0; i < threads; i++) {
            if (fibers[i].state != RUNNABLE) continue;
            current = i;
            set_thread(i);
            emu_switch(&scheduler_sp, fibers[i].sp);
            ran = true;
        }
        if (ran) continue;
        // everyone is blocked or done: release what can be released
        bool released = false;
        int live = 0, at_block = 0;
        for (int w = 0; w * 32 < threads; w++) {
            int warp_live = 0, warp_at = 0, warp_block = 0;
            for (int l = 0; l < 32 && w * 32 + l < threads; l++) {
                State s = fibers[w * 32 + l].state;
                if (s != DONE) warp_live++;
                if (s == AT_WARP) warp_at++;
                if (s == AT_BLOCK) warp_block++;
            }
            live += warp_live;
            at_block += warp_block;
            if (warp_at > 0 && warp_at == warp_live) {
                for (int l = 0; l < 32 && w * 32 + l < threads; l++)
                    if (fibers[w * 32 + l].state == AT_WARP) fibers[w * 32 + l].state = RUNNABLE;
                released = true;
            } else if (warp_at > 0) {
                die("warp " + std::to_string(w) + ": " + std::to_string(warp_at) + " lanes wait in a shuffle, "
                    + std::to_string(warp_block) + " at __syncthreads (divergent warp)");
            }
        }
        if (released) continue;
        if (live == 0) return;
        if (at_block == live) {
            for (int i = 0; i < threads; i++) if (fibers[i].state == AT_BLOCK) fibers[i].state = RUNNABLE;
            continue;
        }
        die("deadlock: no thread can run");
    }
}
} // namespace

void* dynamic_shared() { return dyn_shared.data(); }

void sync_block() { yield(AT_BLOCK); }

float shuffle(float v, int src_lane) {
    int w = current / 32, l = current % 32;
    warp_slots[w][l] = v;
    yield(AT_WARP);
    float r = warp_slots[w][src_lane];
    yield(AT_WARP);      // nobody overwrites a slot before every lane has read
    return r;
}

std::map<std::string, Launch>& registry() {
    static std::map<std::string, Launch> r;
    return r;
}

void register_kernel(const char* name, Launch fn) { registry()[name] = std::move(fn); }
} // namespace emu

// ------------------------------------------------------------------ device memory

namespace {
constexpr std::size_t CANARY = 256;
const long PAGE = sysconf(_SC_PAGESIZE);

struct Alloc {
    char* map;          // mmap base
    std::size_t mapped; // bytes mapped (incl. the guard page)
    std::size_t bytes;  // usable
};
std::map<std::uintptr_t, Alloc> allocs; // by device address

void check_canaries(const char* when) {
    for (auto& [addr, a] : allocs) {
        auto* c = reinterpret_cast<unsigned char*>(addr) - CANARY;
        for (std::size_t i = 0; i < CANARY; i++)
            if (c[i] != 0xA5) {
                std::fprintf(stderr, "rrj cuda-emu: write before device allocation 0x%lx (%zu bytes) found at %s\n",
                             (unsigned long) addr, a.bytes, when);
                std::abort();
            }
    }
}

bool inside(std::uintptr_t p, std::size_t n) {
    auto it = allocs.upper_bound(p);
    if (it == allocs.begin()) return false;
    --it;
    return p >= it->first && p + n <= it->first + it->second.bytes;
}
} // namespace

extern "C" {
// Used by the fake cuBLAS to check its operands.
int emu_inside(std::uintptr_t p, std::size_t n) { return inside(p, n); }

CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return CUDA_SUCCESS; }
CUresult cuDeviceGet(CUdevice* d, int ordinal) { if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE; *d = 0; return CUDA_SUCCESS; }
CUresult cuDeviceGetName(char* name, int len, CUdevice) { std::snprintf(name, len, "rrj cuda-emu (CPU emulation, not a GPU)"); return CUDA_SUCCESS; }
CUresult cuDeviceTotalMem_v2(std::size_t* b, CUdevice) { *b = std::size_t(16) << 30; return CUDA_SUCCESS; }
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice) {
    *v = attr == 75 ? 8 : attr == 76 ? 0 : attr == 16 ? 1 : 0; // compute capability 8.0, 1 "SM"
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) { *ctx = reinterpret_cast<void*>(0x1); return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(void*) { return CUDA_SUCCESS; }
CUresult cuStreamCreate(void** s, unsigned) { *s = reinterpret_cast<void*>(0x2); return CUDA_SUCCESS; }
CUresult cuStreamDestroy_v2(void*) { return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(void*) { check_canaries("cuStreamSynchronize"); return CUDA_SUCCESS; }

CUresult cuModuleLoadData(void** m, const void* image) {
    const char* s = static_cast<const char*>(image);
    if (!std::strstr(s, ".version") || !std::strstr(s, ".entry")) return CUDA_ERROR_INVALID_IMAGE;
    *m = reinterpret_cast<void*>(0x3);
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(void*) { return CUDA_SUCCESS; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
    auto it = emu::registry().find(name);
    if (it == emu::registry().end()) return CUDA_ERROR_NOT_FOUND;
    *f = &*it;
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, std::size_t n) {
    if (n == 0) return CUDA_ERROR_INVALID_VALUE;
    std::size_t body = (n + 15) / 16 * 16;            // 16-byte aligned start, end at the guard page
    std::size_t mapped = (body + CANARY + PAGE - 1) / PAGE * PAGE + PAGE;
    void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    char* base = static_cast<char*>(m);
    mprotect(base + mapped - PAGE, PAGE, PROT_NONE);
    char* start = base + mapped - PAGE - body;
    std::memset(start - CANARY, 0xA5, CANARY);
    std::memset(start, 0xFF, body);                    // NaN everywhere until written
    allocs[reinterpret_cast<std::uintptr_t>(start)] = Alloc{base, mapped, n};
    *p = reinterpret_cast<CUdeviceptr>(start);
    return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    check_canaries("cuMemFree");
    auto it = allocs.find(p);
    if (it == allocs.end()) { std::fprintf(stderr, "rrj cuda-emu: cuMemFree of unknown pointer 0x%llx\n", p); return CUDA_ERROR_INVALID_VALUE; }
    munmap(it->second.map, it->second.mapped);
    allocs.erase(it);
    return CUDA_SUCCESS;
}

CUresult cuMemsetD32Async(CUdeviceptr p, unsigned v, std::size_t n, void*) {
    if (!inside(p, n * 4)) return CUDA_ERROR_INVALID_VALUE;
    auto* d = reinterpret_cast<unsigned*>(p);
    for (std::size_t i = 0; i < n; i++) d[i] = v;
    return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, std::size_t n) {
    if (!inside(dst, n)) { std::fprintf(stderr, "rrj cuda-emu: cuMemcpyHtoD outside an allocation\n"); return CUDA_ERROR_INVALID_VALUE; }
    std::memcpy(reinterpret_cast<void*>(dst), src, n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, std::size_t n) {
    check_canaries("cuMemcpyDtoH");
    if (!inside(src, n)) { std::fprintf(stderr, "rrj cuda-emu: cuMemcpyDtoH outside an allocation\n"); return CUDA_ERROR_INVALID_VALUE; }
    std::memcpy(dst, reinterpret_cast<void*>(src), n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, std::size_t n, void*) {
    if (!inside(dst, n) || !inside(src, n)) { std::fprintf(stderr, "rrj cuda-emu: cuMemcpyDtoD outside an allocation\n"); return CUDA_ERROR_INVALID_VALUE; }
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<void*>(src), n);
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void*, void** params, void** extra) {
    auto* entry = static_cast<std::pair<const std::string, emu::Launch>*>(f);
    emu::kernel_name = entry->first.c_str();
    unsigned threads = bx * by * bz;
    if (extra || threads == 0 || threads > 1024 || threads % 32 != 0 || gy > 65535 || gz > 65535 || gx == 0 || gy == 0 || gz == 0
        || shared > 48 * 1024) {
        std::fprintf(stderr, "rrj cuda-emu: bad launch of %s: grid %u×%u×%u, block %u×%u×%u, %u bytes shared\n",
                     emu::kernel_name, gx, gy, gz, bx, by, bz, shared);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (emu::fibers.size() < threads) emu::fibers.resize(threads);
    emu::block_dim = dim3{bx, by, bz};
    emu::grid_dim = dim3{gx, gy, gz};
    emu::body = &entry->second;
    emu::body_params = params;
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++) {
                emu::block_idx = dim3{x, y, z};
                emu::dyn_shared.assign((shared + 3) / 4, std::nanf(""));
                emu::run_block((int) threads);
            }
    check_canaries(emu::kernel_name);
    return CUDA_SUCCESS;
}
} // extern "C"
