// WKV-7 forward and backward CUDA kernels (bf16 or fp32 inputs, fp32 state and math).
//
// Recurrence, per batch b, head h, step t; state S is (N, N) indexed [value i, key j]:
//     d_t = exp(-exp(w_t))
//     S_t = S_{t-1} diag(d_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T
//     y_t = S_t r_t
//
// Column ownership.  A thread owns C = 16 (or 32) of the N entries of a row or column, in float4 groups
// interleaved across the R = N / C lanes that share the row: lane q owns j = ((c / 4) * R + q) * 4 + c % 4.
// Neighbouring lanes then read neighbouring float4s of a broadcast vector (no shared-memory bank conflicts),
// and a row sum is C products plus log2(R) butterfly shuffles, so a step's dependency chain is short.
//
// Forward.  Row i of S evolves on its own (S_{t-1} a_t only reads row i), so a block is one warp holding
// 32 / R rows of one head, and a head is spread over N * R / 32 blocks: long sequences with small B*H still
// fill the GPU.  Every 8 steps the block moves the next 8 steps' r, d, k, a, b (and its rows of v) from
// registers, where they were loaded during the previous 8 steps, to shared memory with one pair of barriers;
// the steps themselves run with no barrier at all.  For the backward it
// saves S_{t-1} a_t of every step (fp32, B*T*H*N) and the state entering every chunk, transposed.
//
// Backward.  With G = dL/dS_t (everything flowing back from later steps plus dy_t r_t^T):
//     dv_i  = sum_j G[i,j] k_j         dsa_i = sum_j G[i,j] b_j                 (rows of G)
//     dk_i  = sum_j G[j,i] v_j         db_i  = sum_j G[j,i] sa_j                (columns of G)
//     dd_i  = sum_j G[j,i] S_{t-1}[j,i]  da_i = sum_j S_{t-1}[j,i] dsa_j  dr_i = sum_j S_t[j,i] dy_j
//     dw_i  = dd_i * d_i * (-exp(w_i))      dL/dS_{t-1} = G diag(d_t) + dsa a_t^T
// One block per (b, h), R lanes per index i.  Thread (i, q) keeps row i and column i of G in registers
// (two copies of the same numbers, updated with identical float operations, so they never drift apart);
// every sum above is then local plus a butterfly, and the only exchange is the dsa vector (one barrier per
// step).  Column i of S_{t-1} is needed in reverse time.  Inverting a step divides by d_t, which is
// unstable for strong decay, so it is replayed instead: from the chunk's saved entry state, column i
// evolves alone given the saved sa vectors (S_t[j,i] = S_{t-1}[j,i] d_i + sa_j b_i + v_j k_i), and the
// SUB + 1 states of one sub-chunk are kept in a thread-private slice of shared memory (global memory,
// which stays in L2, when N = 128 makes them too big), then walked backwards.  Replay costs one extra
// state update per step (1.5 on average with SUB = CHUNK / 2), against the ~15 of the walk itself.
//
// Any T is accepted (a short last chunk); T = 0 copies the state through.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace birwkv7 {

constexpr int CHUNK = 16;  // steps per saved state (forward) and per shared-memory staging round
constexpr int SUB = 8;     // steps per replayed sub-chunk in the backward
static_assert(CHUNK % SUB == 0, "a chunk is a whole number of sub-chunks");

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Column owned by lane q (of R) in its c-th slot: float4 groups interleaved across lanes.
template <int R>
__device__ __forceinline__ int col_of(int q, int c) {
    return ((c >> 2) * R + q) * 4 + (c & 3);
}

// Sum over the R consecutive lanes that share an index (R divides 32); every lane gets the total.
template <int R>
__device__ __forceinline__ float lane_sum(float x) {
#pragma unroll
    for (int m = R / 2; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

// Dot product of owned register entries with the owned entries of a shared vector.
template <int C, int R>
__device__ __forceinline__ float dot_owned(const float (&x)[C], const float* __restrict__ vec, int q) {
    float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;
#pragma unroll
    for (int c4 = 0; c4 < C / 4; ++c4) {
        const float4 u = *reinterpret_cast<const float4*>(vec + (c4 * R + q) * 4);
        acc0 = fmaf(x[4 * c4 + 0], u.x, acc0);
        acc1 = fmaf(x[4 * c4 + 1], u.y, acc1);
        acc2 = fmaf(x[4 * c4 + 2], u.z, acc2);
        acc3 = fmaf(x[4 * c4 + 3], u.w, acc3);
    }
    return (acc0 + acc1) + (acc2 + acc3);
}

template <int C, int R>
__device__ __forceinline__ void load_owned(float (&x)[C], const float* __restrict__ vec, int q) {
#pragma unroll
    for (int c4 = 0; c4 < C / 4; ++c4) {
        const float4 u = *reinterpret_cast<const float4*>(vec + (c4 * R + q) * 4);
        x[4 * c4 + 0] = u.x;
        x[4 * c4 + 1] = u.y;
        x[4 * c4 + 2] = u.z;
        x[4 * c4 + 3] = u.w;
    }
}

template <int C, int R>
__device__ __forceinline__ void store_owned(float* __restrict__ vec, const float (&x)[C], int q) {
#pragma unroll
    for (int c4 = 0; c4 < C / 4; ++c4)
        *reinterpret_cast<float4*>(vec + (c4 * R + q) * 4) = make_float4(x[4 * c4], x[4 * c4 + 1], x[4 * c4 + 2], x[4 * c4 + 3]);
}

// ------------------------------------------------------------------------------------------------ forward

template <int N>
struct ForwardShape {
    static constexpr int C = 16;
    static constexpr int R = N / C;
    static constexpr int ROWS = 32 / R;  // rows per block: one warp
    static constexpr int BLOCKS_PER_HEAD = N / ROWS;
    static constexpr int STAGE = 8;                   // steps staged in shared memory per barrier pair
    static constexpr int PER = STAGE * N / 32;        // staged elements per lane per vector
    static constexpr int PER_V = STAGE * ROWS / 32;   // staged v elements per lane
    static constexpr int SMEM_FLOATS = STAGE * (5 * N + ROWS);
    static_assert(CHUNK % STAGE == 0 && PER * 32 == STAGE * N && PER_V * 32 == STAGE * ROWS, "staging shape");
};

template <int N, typename T>
__global__ void __launch_bounds__(32) wkv7_forward_kernel(
    const int Tlen, const int H, const T* __restrict__ r_, const T* __restrict__ w_, const T* __restrict__ k_,
    const T* __restrict__ v_, const T* __restrict__ a_, const T* __restrict__ b_, const float* __restrict__ s0_,
    T* __restrict__ y_, float* __restrict__ sT_, float* __restrict__ snap_, float* __restrict__ sa_out_) {
    using S = ForwardShape<N>;
    constexpr int C = S::C, R = S::R, ROWS = S::ROWS, STAGE = S::STAGE, PER = S::PER, PER_V = S::PER_V;
    const int bh = blockIdx.x / S::BLOCKS_PER_HEAD;
    const int row0 = (blockIdx.x % S::BLOCKS_PER_HEAD) * ROWS;
    const int bb = bh / H, hh = bh % H;
    const int lane = threadIdx.x;
    const int lr = lane / R, q = lane % R;
    const int i = row0 + lr;
    const int n_chunks = (Tlen + CHUNK - 1) / CHUNK;

    extern __shared__ float smem[];
    float* sr = smem;  // [STAGE][N] each
    float* sd = sr + STAGE * N;
    float* sk = sd + STAGE * N;
    float* sa = sk + STAGE * N;
    float* sb = sa + STAGE * N;
    float* sv = sb + STAGE * N;  // [STAGE][ROWS]: this block's rows of v

    float st[C];
    load_owned<C, R>(st, s0_ + ((int64_t)bh * N + i) * N, q);

    const int64_t step = (int64_t)H * N;
    const int64_t head = ((int64_t)bb * Tlen * H + hh) * N;  // element (b, t = 0, h, 0)

    // The next stage's inputs are loaded into registers while the current stage computes (fixed trip
    // counts, so every load of a stage is in flight at once), then moved to shared memory.
    T pr[PER], pw[PER], pk[PER], pa[PER], pb[PER], pv[PER_V];
    auto fetch = [&](int t0) {
#pragma unroll
        for (int it = 0; it < PER; ++it) {
            const int e = it * 32 + lane, t = t0 + e / N;
            const int64_t g = head + (int64_t)min(t, Tlen - 1) * step + e % N;  // clamped: a tail is never used
            pr[it] = r_[g];
            pw[it] = w_[g];
            pk[it] = k_[g];
            pa[it] = a_[g];
            pb[it] = b_[g];
        }
#pragma unroll
        for (int it = 0; it < PER_V; ++it) {
            const int e = it * 32 + lane, t = t0 + e / ROWS;
            pv[it] = v_[head + (int64_t)min(t, Tlen - 1) * step + row0 + e % ROWS];
        }
    };
    if (Tlen > 0) fetch(0);

    for (int t0 = 0; t0 < Tlen; t0 += STAGE) {
        const int len = min(STAGE, Tlen - t0);
        if (snap_ != nullptr && t0 % CHUNK == 0) {  // state entering the chunk, transposed: snap[.., j, i] = S[i, j]
            float* dst = snap_ + ((int64_t)bh * n_chunks + t0 / CHUNK) * N * N + i;
#pragma unroll
            for (int cc = 0; cc < C; ++cc) dst[(int64_t)col_of<R>(q, cc) * N] = st[cc];
        }
        __syncthreads();  // the previous stage's readers of the shared buffers are done
#pragma unroll
        for (int it = 0; it < PER; ++it) {
            const int e = it * 32 + lane;
            sr[e] = to_f(pr[it]);
            sd[e] = expf(-expf(to_f(pw[it])));
            sk[e] = to_f(pk[it]);
            sa[e] = to_f(pa[it]);
            sb[e] = to_f(pb[it]);
        }
#pragma unroll
        for (int it = 0; it < PER_V; ++it) sv[it * 32 + lane] = to_f(pv[it]);
        __syncthreads();
        if (t0 + STAGE < Tlen) fetch(t0 + STAGE);

        for (int s = 0; s < len; ++s) {
            const float* vr = sr + s * N;
            const float* vd = sd + s * N;
            const float* vk = sk + s * N;
            const float* vb = sb + s * N;
            const float sav = lane_sum<R>(dot_owned<C, R>(st, sa + s * N, q));
            const float vi = sv[s * ROWS + lr];
#pragma unroll
            for (int c4 = 0; c4 < C / 4; ++c4) {
                const int j = (c4 * R + q) * 4;
                const float4 d4 = *reinterpret_cast<const float4*>(vd + j);
                const float4 k4 = *reinterpret_cast<const float4*>(vk + j);
                const float4 b4 = *reinterpret_cast<const float4*>(vb + j);
                st[4 * c4 + 0] = fmaf(st[4 * c4 + 0], d4.x, fmaf(sav, b4.x, vi * k4.x));
                st[4 * c4 + 1] = fmaf(st[4 * c4 + 1], d4.y, fmaf(sav, b4.y, vi * k4.y));
                st[4 * c4 + 2] = fmaf(st[4 * c4 + 2], d4.z, fmaf(sav, b4.z, vi * k4.z));
                st[4 * c4 + 3] = fmaf(st[4 * c4 + 3], d4.w, fmaf(sav, b4.w, vi * k4.w));
            }
            const float yi = lane_sum<R>(dot_owned<C, R>(st, vr, q));
            if (q == 0) {
                const int64_t g = head + (int64_t)(t0 + s) * step + i;
                y_[g] = from_f<T>(yi);
                if (sa_out_ != nullptr) sa_out_[g] = sav;
            }
        }
    }
    store_owned<C, R>(sT_ + ((int64_t)bh * N + i) * N, st, q);
}

// ----------------------------------------------------------------------------------------------- backward

template <int N>
struct BackwardShape {
    static constexpr int C = N >= 128 ? 32 : 16;  // 32 keeps N = 128 at 512 threads (register budget)
    static constexpr int R = N / C;
    static constexpr int THREADS = N * R;
    static constexpr int STAGED = 9;  // r, d, exp(w), k, v, a, b, dy, sa
    static constexpr int STORE_FLOATS = (SUB + 1) * N * N;
    static constexpr bool STORE_IN_SMEM = STORE_FLOATS * 4 <= 160 * 1024;
    static constexpr int SMEM_FLOATS = STAGED * CHUNK * N + 2 * N + (STORE_IN_SMEM ? STORE_FLOATS : 0);
    static_assert((CHUNK * N) % THREADS == 0, "staging shape");
};

template <int N, typename T>
__global__ void __launch_bounds__(BackwardShape<N>::THREADS, 1) wkv7_backward_kernel(
    const int Tlen, const int H, const T* __restrict__ r_, const T* __restrict__ w_, const T* __restrict__ k_,
    const T* __restrict__ v_, const T* __restrict__ a_, const T* __restrict__ b_, const T* __restrict__ dy_,
    const float* __restrict__ dsT_, const float* __restrict__ snap_, const float* __restrict__ sa_saved_,
    float* __restrict__ scratch_, T* __restrict__ dr_, T* __restrict__ dw_, T* __restrict__ dk_,
    T* __restrict__ dv_, T* __restrict__ da_, T* __restrict__ db_, float* __restrict__ ds0_) {
    using S = BackwardShape<N>;
    constexpr int C = S::C, R = S::R, NT = S::THREADS;
    const int bh = blockIdx.x;
    const int bb = bh / H, hh = bh % H;
    const int tid = threadIdx.x;
    const int i = tid / R, q = tid % R;
    const int n_chunks = (Tlen + CHUNK - 1) / CHUNK;

    extern __shared__ float smem[];
    float* vr = smem;  // staged vectors, [CHUNK][N] each
    float* vd = vr + CHUNK * N;
    float* vew = vd + CHUNK * N;
    float* vk = vew + CHUNK * N;
    float* vv = vk + CHUNK * N;
    float* va = vv + CHUNK * N;
    float* vb = va + CHUNK * N;
    float* vdy = vb + CHUNK * N;
    float* vsa = vdy + CHUNK * N;
    float* dsa_x = vsa + CHUNK * N;  // [2][N]: dsa of this step, double-buffered
    // Thread-private replay states, element (slot, c) of thread tid at (slot * C + c) * NT + tid (float4-wise).
    float* store = S::STORE_IN_SMEM ? dsa_x + 2 * N : scratch_ + (int64_t)bh * S::STORE_FLOATS;

    float grow[C], gcol[C];
    {
        const float* src = dsT_ + (int64_t)bh * N * N;
        load_owned<C, R>(grow, src + (int64_t)i * N, q);
#pragma unroll
        for (int c = 0; c < C; ++c) gcol[c] = src[(int64_t)col_of<R>(q, c) * N + i];
    }

    const int64_t step = (int64_t)H * N;
    const int64_t head = ((int64_t)bb * Tlen * H + hh) * N;
    int parity = 0;

    auto slot_store = [&](int slot, const float(&x)[C]) {
#pragma unroll
        for (int c4 = 0; c4 < C / 4; ++c4)
            reinterpret_cast<float4*>(store)[(int64_t)(slot * (C / 4) + c4) * NT + tid] =
                make_float4(x[4 * c4], x[4 * c4 + 1], x[4 * c4 + 2], x[4 * c4 + 3]);
    };
    auto slot_load = [&](int slot, float(&x)[C]) {
#pragma unroll
        for (int c4 = 0; c4 < C / 4; ++c4) {
            const float4 u = reinterpret_cast<const float4*>(store)[(int64_t)(slot * (C / 4) + c4) * NT + tid];
            x[4 * c4] = u.x;
            x[4 * c4 + 1] = u.y;
            x[4 * c4 + 2] = u.z;
            x[4 * c4 + 3] = u.w;
        }
    };

    for (int ch = n_chunks - 1; ch >= 0; --ch) {
        const int t0 = ch * CHUNK;
        const int len = min(CHUNK, Tlen - t0);
        __syncthreads();  // everyone is done with the previous chunk's staged vectors
#pragma unroll
        for (int it = 0; it < CHUNK * N / NT; ++it) {  // fixed trip count: all of a chunk's loads in flight
            const int e = it * NT + tid;
            if (e / N >= len) continue;
            const int64_t g = head + (int64_t)(t0 + e / N) * step + e % N;
            const float ew = expf(to_f(w_[g]));
            vr[e] = to_f(r_[g]);
            vd[e] = expf(-ew);
            vew[e] = ew;
            vk[e] = to_f(k_[g]);
            vv[e] = to_f(v_[g]);
            va[e] = to_f(a_[g]);
            vb[e] = to_f(b_[g]);
            vdy[e] = to_f(dy_[g]);
            vsa[e] = sa_saved_[g];
        }
        __syncthreads();

        const float* entry = snap_ + ((int64_t)bh * n_chunks + ch) * N * N + (int64_t)i * N;  // column i of S
        for (int u0 = ((len - 1) / SUB) * SUB; u0 >= 0; u0 -= SUB) {
            const int u1 = min(u0 + SUB, len);
            // Replay column i from the chunk's entry state; keep the states before/after steps u0..u1-1.
            {
                float col[C];
                load_owned<C, R>(col, entry, q);
                for (int u = 0; u < u1; ++u) {
                    if (u == u0) slot_store(0, col);
                    const float di = vd[u * N + i], bi = vb[u * N + i], ki = vk[u * N + i];
#pragma unroll
                    for (int c = 0; c < C; ++c) {
                        const int j = col_of<R>(q, c);
                        col[c] = fmaf(col[c], di, fmaf(vsa[u * N + j], bi, vv[u * N + j] * ki));
                    }
                    if (u >= u0) slot_store(u - u0 + 1, col);
                }
            }
            // Walk the sub-chunk backwards.
            for (int u = u1 - 1; u >= u0; --u) {
                const int o = u * N;
                const float ri = vr[o + i], di = vd[o + i], ewi = vew[o + i], ai = va[o + i], dyi = vdy[o + i];
                float sp[C];
                slot_load(u - u0 + 1, sp);  // S_t column i
                const float dr = lane_sum<R>(dot_owned<C, R>(sp, vdy + o, q));
                slot_load(u - u0, sp);  // S_{t-1} column i
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    const int j = col_of<R>(q, c);
                    grow[c] = fmaf(dyi, vr[o + j], grow[c]);  // G[i, j] += dy_i r_j
                    gcol[c] = fmaf(vdy[o + j], ri, gcol[c]);  // G[j, i] += dy_j r_i
                }
                float dd = 0.f, dk = 0.f, db = 0.f, dv = 0.f, dsa = 0.f;
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    const int j = col_of<R>(q, c);
                    dd = fmaf(gcol[c], sp[c], dd);
                    dk = fmaf(gcol[c], vv[o + j], dk);
                    db = fmaf(gcol[c], vsa[o + j], db);
                    dv = fmaf(grow[c], vk[o + j], dv);
                    dsa = fmaf(grow[c], vb[o + j], dsa);
                }
                dd = lane_sum<R>(dd);
                dk = lane_sum<R>(dk);
                db = lane_sum<R>(db);
                dv = lane_sum<R>(dv);
                dsa = lane_sum<R>(dsa);
                float* dsa_all = dsa_x + parity * N;
                if (q == 0) dsa_all[i] = dsa;
                __syncthreads();  // dsa of every index is in shared memory
                const float da = lane_sum<R>(dot_owned<C, R>(sp, dsa_all, q));
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    const int j = col_of<R>(q, c);
                    grow[c] = fmaf(grow[c], vd[o + j], dsa * va[o + j]);  // G[i, j] d_j + dsa_i a_j
                    gcol[c] = fmaf(gcol[c], di, dsa_all[j] * ai);      // G[j, i] d_i + dsa_j a_i
                }
                parity ^= 1;  // the next step writes the other buffer, so no second barrier is needed
                if (q == 0) {
                    const int64_t g = head + (int64_t)(t0 + u) * step + i;
                    dr_[g] = from_f<T>(dr);
                    dw_[g] = from_f<T>(-dd * di * ewi);
                    dk_[g] = from_f<T>(dk);
                    dv_[g] = from_f<T>(dv);
                    da_[g] = from_f<T>(da);
                    db_[g] = from_f<T>(db);
                }
            }
        }
    }
    store_owned<C, R>(ds0_ + ((int64_t)bh * N + i) * N, grow, q);
}

// ------------------------------------------------------------------------------------------------ launchers

template <typename K>
cudaError_t allow_smem(K kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return cudaSuccess;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

template <int N, typename T>
cudaError_t launch_forward(int B, int Tlen, int H, const void* r, const void* w, const void* k, const void* v,
                           const void* a, const void* b, const float* s0, void* y, float* sT, float* snap,
                           float* sa_out, cudaStream_t stream) {
    using S = ForwardShape<N>;
    constexpr size_t smem = sizeof(float) * S::SMEM_FLOATS;
    auto kernel = wkv7_forward_kernel<N, T>;
    const cudaError_t err = allow_smem(kernel, smem);
    if (err != cudaSuccess) return err;
    kernel<<<B * H * S::BLOCKS_PER_HEAD, 32, smem, stream>>>(
        Tlen, H, static_cast<const T*>(r), static_cast<const T*>(w), static_cast<const T*>(k),
        static_cast<const T*>(v), static_cast<const T*>(a), static_cast<const T*>(b), s0, static_cast<T*>(y), sT,
        snap, sa_out);
    return cudaGetLastError();
}

template <int N, typename T>
cudaError_t launch_backward(int B, int Tlen, int H, const void* r, const void* w, const void* k, const void* v,
                            const void* a, const void* b, const void* dy, const float* dsT, const float* snap,
                            const float* sa_saved, float* scratch, void* dr, void* dw, void* dk, void* dv, void* da,
                            void* db, float* ds0, cudaStream_t stream) {
    using S = BackwardShape<N>;
    constexpr size_t smem = sizeof(float) * S::SMEM_FLOATS;
    auto kernel = wkv7_backward_kernel<N, T>;
    const cudaError_t err = allow_smem(kernel, smem);
    if (err != cudaSuccess) return err;
    if (!S::STORE_IN_SMEM && scratch == nullptr) return cudaErrorInvalidValue;
    kernel<<<B * H, S::THREADS, smem, stream>>>(
        Tlen, H, static_cast<const T*>(r), static_cast<const T*>(w), static_cast<const T*>(k),
        static_cast<const T*>(v), static_cast<const T*>(a), static_cast<const T*>(b), static_cast<const T*>(dy), dsT,
        snap, sa_saved, scratch, static_cast<T*>(dr), static_cast<T*>(dw), static_cast<T*>(dk), static_cast<T*>(dv),
        static_cast<T*>(da), static_cast<T*>(db), ds0);
    return cudaGetLastError();
}

template <int N>
int64_t scratch_floats(int B, int H) {
    using S = BackwardShape<N>;
    return S::STORE_IN_SMEM ? 0 : (int64_t)B * H * S::STORE_FLOATS;
}

}  // namespace birwkv7

// Plain-C entry points used by wkv7.cpp (kept free of torch headers so this file compiles fast, and callable
// from the CPU emulation in tests/).  is_bf16 selects the element type of r, w, k, v, a, b, y, dy and the
// input grads.  Buffers the caller allocates (fp32):
//   forward:  snap (B, H, ceil(T / chunk_len), N, N) and sa (B, T, H, N) when the backward will run, else null;
//   backward: scratch of birwkv7_backward_scratch_floats(B, H, N) floats (0 means none needed).

#define BIRWKV7_DISPATCH(N_, FN, ...)                                                              \
    switch (N_) {                                                                                   \
        case 32: return is_bf16 ? FN<32, __nv_bfloat16>(__VA_ARGS__) : FN<32, float>(__VA_ARGS__);   \
        case 64: return is_bf16 ? FN<64, __nv_bfloat16>(__VA_ARGS__) : FN<64, float>(__VA_ARGS__);   \
        case 128: return is_bf16 ? FN<128, __nv_bfloat16>(__VA_ARGS__) : FN<128, float>(__VA_ARGS__); \
        default: return cudaErrorInvalidValue;                                                      \
    }

extern "C" {

cudaError_t birwkv7_forward(bool is_bf16, int B, int Tlen, int H, int N, const void* r, const void* w,
                            const void* k, const void* v, const void* a, const void* b, const float* s0, void* y,
                            float* sT, float* snap, float* sa, cudaStream_t stream) {
    if ((snap == nullptr) != (sa == nullptr)) return cudaErrorInvalidValue;
    BIRWKV7_DISPATCH(N, birwkv7::launch_forward, B, Tlen, H, r, w, k, v, a, b, s0, y, sT, snap, sa, stream)
}

cudaError_t birwkv7_backward(bool is_bf16, int B, int Tlen, int H, int N, const void* r, const void* w,
                             const void* k, const void* v, const void* a, const void* b, const void* dy,
                             const float* dsT, const float* snap, const float* sa, float* scratch, void* dr,
                             void* dw, void* dk, void* dv, void* da, void* db, float* ds0, cudaStream_t stream) {
    BIRWKV7_DISPATCH(N, birwkv7::launch_backward, B, Tlen, H, r, w, k, v, a, b, dy, dsT, snap, sa, scratch, dr, dw,
                     dk, dv, da, db, ds0, stream)
}

int birwkv7_chunk_len() { return birwkv7::CHUNK; }

int64_t birwkv7_backward_scratch_floats(int B, int H, int N) {
    switch (N) {
        case 32: return birwkv7::scratch_floats<32>(B, H);
        case 64: return birwkv7::scratch_floats<64>(B, H);
        case 128: return birwkv7::scratch_floats<128>(B, H);
        default: return -1;
    }
}

}  // extern "C"
