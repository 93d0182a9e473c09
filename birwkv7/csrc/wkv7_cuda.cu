// WKV-7 forward and backward CUDA kernels (bf16 or fp32 inputs, fp32 state).
//
// Recurrence, per batch b, head h, step t; state S is (N, N) indexed [value i, key j]:
//     d_t = exp(-exp(w_t))
//     S_t = S_{t-1} diag(d_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T
//     y_t = S_t r_t
//
// Layout: one thread block per (b, h), N threads; thread i owns value-row i of S.  Row i evolves on its
// own (sa_i = S[i,:].a only reads row i), so the forward needs the per-step key vectors broadcast through
// shared memory and nothing else.
//
// Backward.  With G = dL/dS_t (everything flowing back from later steps plus dy_t r_t^T):
//     dv_i  = sum_j G[i,j] k_j             dsa_i = sum_j G[i,j] b_j          (row reductions)
//     dk_j  = sum_i G[i,j] v_i             db_j  = sum_i G[i,j] sa_i         (column reductions)
//     dd_j  = sum_i G[i,j] S_{t-1}[i,j]    da_j  = sum_i S_{t-1}[i,j] dsa_i
//     dr_j  = sum_i S_t[i,j] dy_i          dw_j  = dd_j * d_j * (-exp(w_j))
//     dL/dS_{t-1} = G diag(d_t) + dsa a_t^T
// G lives in shared memory (row stride N+1 so both row and column walks are bank-conflict free).
// The backward needs S_{t-1} in reverse time.  Inverting the step (dividing by d_t) is unstable when a
// decay is close to 0, so instead the forward stores a snapshot of S every CHUNK steps, and the backward,
// for each chunk from the last to the first, replays the chunk forward from its snapshot into a per-block
// global scratch of CHUNK+1 states (small enough to stay in L2), then walks it backwards.
// Any T is accepted: the last chunk is just shorter.
//
// Performance notes (H100, bf16, B=8 H=8 N=64 T=4096: forward 4.3 ms, forward+backward 28.8 ms; see
// bench/RESULTS.md): parallelism is one block per (b, h), so small B*H leaves most SMs idle, and the
// backward's column pass reads the replayed states from L2 (two loads per element per step), which
// dominates its time.  Known ways to speed it up: keep S_t's column from the previous reverse step in
// registers (halves those loads), split value rows over several blocks (rows are independent in the
// recurrence; column sums would then need a cross-block reduction), or a chunked tensor-core form.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace birwkv7 {

constexpr int CHUNK = 16;

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Dot product of a register row with a shared (broadcast) vector, with 4 independent accumulators so the
// FMA chain is 4x shorter than a naive loop (this chain is the per-step latency of the recurrence).
template <int N>
__device__ __forceinline__ float dot_row(const float (&x)[N], const float* __restrict__ s) {
    float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;
#pragma unroll
    for (int j = 0; j < N; j += 4) {
        acc0 = fmaf(x[j + 0], s[j + 0], acc0);
        acc1 = fmaf(x[j + 1], s[j + 1], acc1);
        acc2 = fmaf(x[j + 2], s[j + 2], acc2);
        acc3 = fmaf(x[j + 3], s[j + 3], acc3);
    }
    return (acc0 + acc1) + (acc2 + acc3);
}

template <int N>
__device__ __forceinline__ void store_row(float* __restrict__ dst, const float (&x)[N]) {
    float4* d4 = reinterpret_cast<float4*>(dst);
#pragma unroll
    for (int j = 0; j < N / 4; ++j) d4[j] = make_float4(x[4 * j], x[4 * j + 1], x[4 * j + 2], x[4 * j + 3]);
}

template <int N>
__device__ __forceinline__ void load_row(float (&x)[N], const float* __restrict__ src) {
    const float4* s4 = reinterpret_cast<const float4*>(src);
#pragma unroll
    for (int j = 0; j < N / 4; ++j) {
        const float4 q = s4[j];
        x[4 * j] = q.x;
        x[4 * j + 1] = q.y;
        x[4 * j + 2] = q.z;
        x[4 * j + 3] = q.w;
    }
}

// ------------------------------------------------------------------------------------------------ forward

template <int N, typename T>
__global__ void __launch_bounds__(N) wkv7_forward_kernel(
    const int Tlen, const int H, const T* __restrict__ r_, const T* __restrict__ w_, const T* __restrict__ k_,
    const T* __restrict__ v_, const T* __restrict__ a_, const T* __restrict__ b_, const float* __restrict__ s0_,
    T* __restrict__ y_, float* __restrict__ sT_, float* __restrict__ snap_) {
    const int bh = blockIdx.x;
    const int bb = bh / H, hh = bh % H;
    const int i = threadIdx.x;
    const int n_chunks = (Tlen + CHUNK - 1) / CHUNK;

    __shared__ float sr[N], sd[N], sk[N], sa[N], sb[N];

    float st[N];
    load_row<N>(st, s0_ + (int64_t)bh * N * N + (int64_t)i * N);

    const int64_t step = (int64_t)H * N;
    const int64_t base = ((int64_t)bb * Tlen * H + hh) * N + i;

    // Software prefetch: the global loads of step t+1 are issued before the math of step t.
    float nr = 0.f, nw = 0.f, nk = 0.f, nv = 0.f, na = 0.f, nb = 0.f;
    if (Tlen > 0) {
        nr = to_f(r_[base]); nw = to_f(w_[base]); nk = to_f(k_[base]);
        nv = to_f(v_[base]); na = to_f(a_[base]); nb = to_f(b_[base]);
    }
    for (int t = 0; t < Tlen; ++t) {
        const int64_t idx = base + (int64_t)t * step;
        const float cr = nr, cw = nw, ck = nk, cv = nv, ca = na, cb = nb;
        if (t + 1 < Tlen) {
            const int64_t nidx = idx + step;
            nr = to_f(r_[nidx]); nw = to_f(w_[nidx]); nk = to_f(k_[nidx]);
            nv = to_f(v_[nidx]); na = to_f(a_[nidx]); nb = to_f(b_[nidx]);
        }
        if (snap_ != nullptr && t % CHUNK == 0) {
            store_row<N>(snap_ + ((int64_t)bh * n_chunks + t / CHUNK) * N * N + (int64_t)i * N, st);
        }
        __syncthreads();  // everyone is done reading the previous step's vectors
        sr[i] = cr;
        sd[i] = expf(-expf(cw));
        sk[i] = ck;
        sa[i] = ca;
        sb[i] = cb;
        __syncthreads();

        const float sav = dot_row<N>(st, sa);
#pragma unroll
        for (int j = 0; j < N; ++j) st[j] = fmaf(st[j], sd[j], fmaf(sav, sb[j], cv * sk[j]));
        y_[idx] = from_f<T>(dot_row<N>(st, sr));
    }
    store_row<N>(sT_ + (int64_t)bh * N * N + (int64_t)i * N, st);
}

// ----------------------------------------------------------------------------------------------- backward

template <int N>
constexpr int backward_smem_floats() {
    return N * (N + 1) + 8 * N + CHUNK * N;
}

template <int N, typename T>
__global__ void __launch_bounds__(N) wkv7_backward_kernel(
    const int Tlen, const int H, const T* __restrict__ r_, const T* __restrict__ w_, const T* __restrict__ k_,
    const T* __restrict__ v_, const T* __restrict__ a_, const T* __restrict__ b_, const T* __restrict__ dy_,
    const float* __restrict__ dsT_, const float* __restrict__ snap_, float* __restrict__ scratch_,
    T* __restrict__ dr_, T* __restrict__ dw_, T* __restrict__ dk_, T* __restrict__ dv_, T* __restrict__ da_,
    T* __restrict__ db_, float* __restrict__ ds0_) {
    const int bh = blockIdx.x;
    const int bb = bh / H, hh = bh % H;
    const int i = threadIdx.x;
    const int n_chunks = (Tlen + CHUNK - 1) / CHUNK;
    constexpr int GS = N + 1;  // padded row stride of G

    extern __shared__ float smem[];
    float* G = smem;
    float* sr = G + N * GS;
    float* sd = sr + N;
    float* sk = sd + N;
    float* sv = sk + N;
    float* sa = sv + N;
    float* sb = sa + N;
    float* sdy = sb + N;
    float* sdsa = sdy + N;
    float* ssa = sdsa + N;  // [CHUNK][N]: sa_t = S_{t-1} a_t for the chunk being walked

    {
        const float* src = dsT_ + (int64_t)bh * N * N + (int64_t)i * N;
#pragma unroll 8
        for (int j = 0; j < N; ++j) G[i * GS + j] = src[j];
    }

    float* scr = scratch_ + (int64_t)bh * (CHUNK + 1) * N * N;
    const int64_t step = (int64_t)H * N;
    const int64_t base = ((int64_t)bb * Tlen * H + hh) * N + i;

    for (int c = n_chunks - 1; c >= 0; --c) {
        const int t0 = c * CHUNK;
        const int len = min(CHUNK, Tlen - t0);

        // 1) Replay the chunk forward from its snapshot; keep every state (slot s = state after s steps).
        {
            float st[N];
            load_row<N>(st, snap_ + ((int64_t)bh * n_chunks + c) * N * N + (int64_t)i * N);
            store_row<N>(scr + (int64_t)i * N, st);
            const int64_t idx0 = base + (int64_t)t0 * step;
            float nw = to_f(w_[idx0]), nk = to_f(k_[idx0]), nv = to_f(v_[idx0]);
            float na = to_f(a_[idx0]), nb = to_f(b_[idx0]);
            for (int s = 0; s < len; ++s) {
                const float cw = nw, ck = nk, cv = nv, ca = na, cb = nb;
                if (s + 1 < len) {  // prefetch the next step while this one computes
                    const int64_t nidx = base + (int64_t)(t0 + s + 1) * step;
                    nw = to_f(w_[nidx]); nk = to_f(k_[nidx]); nv = to_f(v_[nidx]);
                    na = to_f(a_[nidx]); nb = to_f(b_[nidx]);
                }
                __syncthreads();
                sd[i] = expf(-expf(cw));
                sk[i] = ck;
                sa[i] = ca;
                sb[i] = cb;
                __syncthreads();
                const float sav = dot_row<N>(st, sa);
                ssa[s * N + i] = sav;
#pragma unroll
                for (int j = 0; j < N; ++j) st[j] = fmaf(st[j], sd[j], fmaf(sav, sb[j], cv * sk[j]));
                store_row<N>(scr + (int64_t)(s + 1) * N * N + (int64_t)i * N, st);
            }
        }
        __syncthreads();  // scratch (global) and ssa (shared) written by all rows are now visible

        // 2) Walk the chunk backwards.
        int64_t idx = base + (int64_t)(t0 + len - 1) * step;
        float nr = to_f(r_[idx]), nw = to_f(w_[idx]), nk = to_f(k_[idx]), nv = to_f(v_[idx]);
        float na = to_f(a_[idx]), nb = to_f(b_[idx]), ndy = to_f(dy_[idx]);
        for (int s = len - 1; s >= 0; --s) {
            const float ri = nr, wi = nw, ki = nk, vi = nv, ai = na, bi = nb, dyi = ndy;
            const int64_t cur = idx;
            if (s > 0) {  // prefetch the previous step while this one computes
                idx -= step;
                nr = to_f(r_[idx]); nw = to_f(w_[idx]); nk = to_f(k_[idx]); nv = to_f(v_[idx]);
                na = to_f(a_[idx]); nb = to_f(b_[idx]); ndy = to_f(dy_[idx]);
            }
            const float ewi = expf(wi);
            const float di = expf(-ewi);
            __syncthreads();  // previous step's readers of the shared vectors are done
            sr[i] = ri;
            sd[i] = di;
            sk[i] = ki;
            sv[i] = vi;
            sa[i] = ai;
            sb[i] = bi;
            sdy[i] = dyi;
            __syncthreads();

            // Row pass over G[i, :] (+ dy r^T of this step, folded in on the fly).
            float dv0 = 0.f, dv1 = 0.f, dsa0 = 0.f, dsa1 = 0.f;
#pragma unroll
            for (int j = 0; j < N; j += 2) {
                const float g0 = fmaf(dyi, sr[j], G[i * GS + j]);
                const float g1 = fmaf(dyi, sr[j + 1], G[i * GS + j + 1]);
                dv0 = fmaf(g0, sk[j], dv0);
                dv1 = fmaf(g1, sk[j + 1], dv1);
                dsa0 = fmaf(g0, sb[j], dsa0);
                dsa1 = fmaf(g1, sb[j + 1], dsa1);
            }
            const float dv = dv0 + dv1;
            const float dsa = dsa0 + dsa1;
            sdsa[i] = dsa;
            __syncthreads();

            // Column pass over G[:, i], S_{t-1}[:, i] and S_t[:, i] (coalesced across threads).
            const float* Sp = scr + (int64_t)s * N * N;
            const float* Sn = Sp + N * N;
            const float* sav = ssa + s * N;
            float dk = 0.f, db = 0.f, dd = 0.f, dr = 0.f, da = 0.f;
#pragma unroll 8
            for (int j = 0; j < N; ++j) {
                const float g = fmaf(sdy[j], ri, G[j * GS + i]);
                const float sp = Sp[j * N + i];
                const float sn = Sn[j * N + i];
                dk = fmaf(g, sv[j], dk);
                db = fmaf(g, sav[j], db);
                dd = fmaf(g, sp, dd);
                dr = fmaf(sn, sdy[j], dr);
                da = fmaf(sp, sdsa[j], da);
            }
            __syncthreads();  // all column reads of G are done before rows are overwritten

            // dL/dS_{t-1}[i, :] = (G + dy r^T)[i, :] * d + dsa_i a
#pragma unroll
            for (int j = 0; j < N; ++j) {
                G[i * GS + j] = fmaf(fmaf(dyi, sr[j], G[i * GS + j]), sd[j], dsa * sa[j]);
            }

            dr_[cur] = from_f<T>(dr);
            dw_[cur] = from_f<T>(-dd * di * ewi);
            dk_[cur] = from_f<T>(dk);
            dv_[cur] = from_f<T>(dv);
            da_[cur] = from_f<T>(da);
            db_[cur] = from_f<T>(db);
        }
        __syncthreads();  // the next chunk's replay overwrites the scratch and ssa
    }

    {
        float* dst = ds0_ + (int64_t)bh * N * N + (int64_t)i * N;
#pragma unroll 8
        for (int j = 0; j < N; ++j) dst[j] = G[i * GS + j];
    }
}

// ------------------------------------------------------------------------------------------------ launchers

template <int N, typename T>
cudaError_t launch_forward(int B, int Tlen, int H, const void* r, const void* w, const void* k, const void* v,
                           const void* a, const void* b, const float* s0, void* y, float* sT, float* snap,
                           cudaStream_t stream) {
    wkv7_forward_kernel<N, T><<<B * H, N, 0, stream>>>(
        Tlen, H, static_cast<const T*>(r), static_cast<const T*>(w), static_cast<const T*>(k),
        static_cast<const T*>(v), static_cast<const T*>(a), static_cast<const T*>(b), s0, static_cast<T*>(y), sT,
        snap);
    return cudaGetLastError();
}

template <int N, typename T>
cudaError_t launch_backward(int B, int Tlen, int H, const void* r, const void* w, const void* k, const void* v,
                            const void* a, const void* b, const void* dy, const float* dsT, const float* snap,
                            float* scratch, void* dr, void* dw, void* dk, void* dv, void* da, void* db, float* ds0,
                            cudaStream_t stream) {
    constexpr size_t smem = sizeof(float) * backward_smem_floats<N>();
    auto kernel = wkv7_backward_kernel<N, T>;
    if (smem > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err != cudaSuccess) return err;
    }
    kernel<<<B * H, N, smem, stream>>>(
        Tlen, H, static_cast<const T*>(r), static_cast<const T*>(w), static_cast<const T*>(k),
        static_cast<const T*>(v), static_cast<const T*>(a), static_cast<const T*>(b), static_cast<const T*>(dy), dsT,
        snap, scratch, static_cast<T*>(dr), static_cast<T*>(dw), static_cast<T*>(dk), static_cast<T*>(dv),
        static_cast<T*>(da), static_cast<T*>(db), ds0);
    return cudaGetLastError();
}

}  // namespace birwkv7

// Plain-C entry points used by wkv7.cpp (kept free of torch headers so this file compiles fast).
// is_bf16 selects the element type of r, w, k, v, a, b, y, dy and the input grads.

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
                            float* sT, float* snap, cudaStream_t stream) {
    BIRWKV7_DISPATCH(N, birwkv7::launch_forward, B, Tlen, H, r, w, k, v, a, b, s0, y, sT, snap, stream)
}

cudaError_t birwkv7_backward(bool is_bf16, int B, int Tlen, int H, int N, const void* r, const void* w,
                             const void* k, const void* v, const void* a, const void* b, const void* dy,
                             const float* dsT, const float* snap, float* scratch, void* dr, void* dw, void* dk,
                             void* dv, void* da, void* db, float* ds0, cudaStream_t stream) {
    BIRWKV7_DISPATCH(N, birwkv7::launch_backward, B, Tlen, H, r, w, k, v, a, b, dy, dsT, snap, scratch, dr, dw,
                     dk, dv, da, db, ds0, stream)
}

int birwkv7_chunk_len() { return birwkv7::CHUNK; }

}  // extern "C"
