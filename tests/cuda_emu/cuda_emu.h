// CPU emulation of the small part of CUDA that birwkv7/csrc/wkv7_cuda.cu uses, so that the real kernel source
// compiles with g++ and runs in CI machines without a GPU (tests/test_wkv7_cuda_emulated.py).
//
// Model: the blocks of a launch run one after another; the threads of a block run at the same time, one
// std::thread each, so a missing __syncthreads shows up as a race instead of being hidden by lock-step
// execution.  __syncthreads is a barrier over the block, warp shuffles a barrier over the 32 lanes.
// __shared__ arrays become function statics (one copy, shared by the block's threads; safe because blocks
// do not overlap).  The test rewrites the two constructs C++ cannot parse: `kernel<<<g, b, smem, s>>>(...)`
// becomes `cuda_emu::launch(kernel, g, b, smem, s)(...)` and `extern __shared__ T x[];` becomes a pointer
// to the launch's dynamic shared memory.  A launch that asks for more dynamic shared memory than CUDA
// would grant (48 KiB, or the cudaFuncSetAttribute value up to 227 KiB) or more than 1024 threads fails
// as it would on a GPU.  Not modelled: registers, speed, memory coalescing, warp divergence.
#pragma once

#include <math.h>

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::max;
using std::min;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

struct alignas(8) float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }

// ---------------------------------------------------------------------------------------------- bfloat16

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = uint32_t(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return __nv_bfloat16{uint16_t(u >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

// ------------------------------------------------------------------------------------------------ runtime

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef struct CUstream_st* cudaStream_t;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuda_emu {

constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;

struct Warp {
    explicit Warp(int lanes) : bar(lanes) {}
    std::barrier<> bar;
    uint64_t slots[2][32] = {};
};

struct Block {
    explicit Block(int threads, size_t smem_bytes) : bar(threads), smem((smem_bytes + 15) / 16 + 1) {
        for (int w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>(std::min(32, threads - 32 * w)));
    }
    std::barrier<> bar;
    std::vector<std::unique_ptr<Warp>> warps;
    std::vector<float4> smem;  // float4 elements: 16-byte aligned, as CUDA's dynamic shared memory
};

inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_shuffle_parity = 0;
inline thread_local cudaError_t tl_last_error = cudaSuccess;
inline std::map<const void*, size_t>& smem_limits() {
    static std::map<const void*, size_t> m;
    return m;
}

inline unsigned linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

template <typename T>
T* dynamic_smem() {
    return reinterpret_cast<T*>(tl_block->smem.data());
}

template <typename T>
T shuffle(T var, unsigned src_of_lane(unsigned, int, int), int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    Warp& w = *tl_block->warps[linear_tid() / 32];
    const unsigned lane = linear_tid() % 32;
    // Double-buffered slots: a lane can only reuse a buffer after the next barrier, which every lane
    // reaches only after reading this shuffle's result.
    const unsigned p = (tl_shuffle_parity ^= 1u);
    std::memcpy(&w.slots[p][lane], &var, sizeof(T));
    w.bar.arrive_and_wait();
    T out;
    std::memcpy(&out, &w.slots[p][src_of_lane(lane, arg, width)], sizeof(T));
    return out;
}

inline unsigned src_xor(unsigned lane, int mask, int width) {
    const unsigned base = lane & ~unsigned(width - 1);
    return base | ((lane ^ unsigned(mask)) & unsigned(width - 1));
}
inline unsigned src_idx(unsigned lane, int src, int width) {
    const unsigned base = lane & ~unsigned(width - 1);
    return base | (unsigned(src) & unsigned(width - 1));
}

template <typename... P>
struct Launch {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;

    template <typename... A>
    void operator()(A... args) const {
        const unsigned threads = block.x * block.y * block.z;
        const auto it = smem_limits().find(reinterpret_cast<const void*>(kernel));
        const size_t limit = it == smem_limits().end() ? kDefaultDynamicSmem : it->second;
        if (threads == 0 || threads > 1024 || smem > limit) {
            tl_last_error = cudaErrorInvalidConfiguration;
            return;
        }
        for (unsigned bz = 0; bz < grid.z; ++bz)
            for (unsigned by = 0; by < grid.y; ++by)
                for (unsigned bx = 0; bx < grid.x; ++bx) {
                    Block blk(int(threads), smem);
                    std::vector<std::thread> pool;
                    pool.reserve(threads);
                    for (unsigned t = 0; t < threads; ++t) {
                        pool.emplace_back([&, t] {
                            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                            blockIdx = dim3(bx, by, bz);
                            blockDim = block;
                            gridDim = grid;
                            tl_block = &blk;
                            tl_shuffle_parity = 0;
                            kernel(P(args)...);
                        });
                    }
                    for (auto& th : pool) th.join();
                }
    }
};

template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
    return Launch<P...>{kernel, grid, block, smem};
}

}  // namespace cuda_emu

inline void __syncthreads() { cuda_emu::tl_block->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) {
    cuda_emu::tl_block->warps[cuda_emu::linear_tid() / 32]->bar.arrive_and_wait();
}

template <typename T>
T __shfl_xor_sync(unsigned, T var, int lane_mask, int width = 32) {
    return cuda_emu::shuffle(var, cuda_emu::src_xor, lane_mask, width);
}
template <typename T>
T __shfl_sync(unsigned, T var, int src_lane, int width = 32) {
    return cuda_emu::shuffle(var, cuda_emu::src_idx, src_lane, width);
}

template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > cuda_emu::kMaxDynamicSmem)
        return cudaErrorInvalidValue;
    cuda_emu::smem_limits()[reinterpret_cast<const void*>(kernel)] = size_t(value);
    return cudaSuccess;
}

inline cudaError_t cudaGetLastError() {
    const cudaError_t e = cuda_emu::tl_last_error;
    cuda_emu::tl_last_error = cudaSuccess;
    return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument" : "invalid configuration argument";
}
