// Torch bindings for the WKV-7 CUDA kernels in wkv7_cuda.cu: argument checks, allocation, stream.

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cstdint>
#include <vector>

extern "C" {
cudaError_t birwkv7_forward(bool is_bf16, int B, int Tlen, int H, int N, const void* r, const void* w,
                            const void* k, const void* v, const void* a, const void* b, const float* s0, void* y,
                            float* sT, float* snap, float* sa, cudaStream_t stream);
cudaError_t birwkv7_backward(bool is_bf16, int B, int Tlen, int H, int N, const void* r, const void* w,
                             const void* k, const void* v, const void* a, const void* b, const void* dy,
                             const float* dsT, const float* snap, const float* sa, float* scratch, void* dr,
                             void* dw, void* dk, void* dv, void* da, void* db, float* ds0, cudaStream_t stream);
int birwkv7_chunk_len();
int64_t birwkv7_backward_scratch_floats(int B, int H, int N);
}

namespace {

void check_input(const torch::Tensor& x, const torch::Tensor& ref, const char* name) {
    TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(x.scalar_type() == ref.scalar_type(), name, " must have the dtype of r");
    TORCH_CHECK(x.sizes() == ref.sizes(), name, " must have the shape of r");
    TORCH_CHECK(x.device() == ref.device(), name, " must be on the device of r");
}

void check_state(const torch::Tensor& s, int64_t B, int64_t H, int64_t N, const torch::Tensor& ref,
                 const char* name) {
    TORCH_CHECK(s.is_cuda() && s.device() == ref.device(), name, " must be on the device of r");
    TORCH_CHECK(s.scalar_type() == torch::kFloat32, name, " must be float32");
    TORCH_CHECK(s.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(s.dim() == 4 && s.size(0) == B && s.size(1) == H && s.size(2) == N && s.size(3) == N, name,
                " must have shape (B, H, N, N)");
}

bool is_bf16_dtype(const torch::Tensor& r) {
    TORCH_CHECK(r.scalar_type() == torch::kBFloat16 || r.scalar_type() == torch::kFloat32,
                "wkv7 cuda: inputs must be bfloat16 or float32");
    return r.scalar_type() == torch::kBFloat16;
}

}  // namespace

// Returns (y, final_state, snapshots, sa); the last two (what the backward needs) are empty when
// save_for_backward is false.
std::vector<torch::Tensor> wkv7_forward(torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v,
                                        torch::Tensor a, torch::Tensor b, torch::Tensor s0, bool save_for_backward) {
    TORCH_CHECK(r.dim() == 4, "r must be (B, T, H, N)");
    check_input(r, r, "r");
    check_input(w, r, "w");
    check_input(k, r, "k");
    check_input(v, r, "v");
    check_input(a, r, "a");
    check_input(b, r, "b");
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
    check_state(s0, B, H, N, r, "initial_state");
    if (reinterpret_cast<uintptr_t>(s0.data_ptr()) % 16 != 0) s0 = s0.clone();  // kernels use float4 rows
    const bool bf16 = is_bf16_dtype(r);
    const c10::cuda::CUDAGuard guard(r.device());

    auto y = torch::empty_like(r);
    auto sT = torch::empty_like(s0);
    const int64_t n_chunks = (T + birwkv7_chunk_len() - 1) / birwkv7_chunk_len();
    const bool save = save_for_backward && T > 0;
    torch::Tensor snap = save ? torch::empty({B, H, n_chunks, N, N}, s0.options()) : torch::empty({0}, s0.options());
    torch::Tensor sa = save ? torch::empty({B, T, H, N}, s0.options()) : torch::empty({0}, s0.options());
    const cudaError_t err = birwkv7_forward(
        bf16, (int)B, (int)T, (int)H, (int)N, r.data_ptr(), w.data_ptr(), k.data_ptr(), v.data_ptr(), a.data_ptr(),
        b.data_ptr(), s0.data_ptr<float>(), y.data_ptr(), sT.data_ptr<float>(),
        save ? snap.data_ptr<float>() : nullptr, save ? sa.data_ptr<float>() : nullptr,
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "wkv7 cuda forward failed (head size ", N, "): ", cudaGetErrorString(err));
    return {y, sT, snap, sa};
}

// Returns (dr, dw, dk, dv, da, db, d_initial_state).
std::vector<torch::Tensor> wkv7_backward(torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v,
                                         torch::Tensor a, torch::Tensor b, torch::Tensor dy, torch::Tensor dsT,
                                         torch::Tensor snap, torch::Tensor sa) {
    check_input(r, r, "r");
    check_input(w, r, "w");
    check_input(k, r, "k");
    check_input(v, r, "v");
    check_input(a, r, "a");
    check_input(b, r, "b");
    check_input(dy, r, "dy");
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
    check_state(dsT, B, H, N, r, "grad of final_state");
    if (reinterpret_cast<uintptr_t>(dsT.data_ptr()) % 16 != 0) dsT = dsT.clone();
    const int64_t C = birwkv7_chunk_len();
    const int64_t n_chunks = (T + C - 1) / C;
    TORCH_CHECK(snap.is_contiguous() && snap.numel() == B * H * n_chunks * N * N, "bad snapshot tensor");
    TORCH_CHECK(sa.is_contiguous() && sa.numel() == B * T * H * N, "bad saved sa tensor");
    const bool bf16 = is_bf16_dtype(r);
    const c10::cuda::CUDAGuard guard(r.device());

    auto dr = torch::empty_like(r);
    auto dw = torch::empty_like(r);
    auto dk = torch::empty_like(r);
    auto dv = torch::empty_like(r);
    auto da = torch::empty_like(r);
    auto db = torch::empty_like(r);
    auto ds0 = torch::empty_like(dsT);
    // Replay states when they do not fit in shared memory (head size 128); L2-resident.
    auto scratch = torch::empty({birwkv7_backward_scratch_floats((int)B, (int)H, (int)N)}, dsT.options());
    const cudaError_t err = birwkv7_backward(
        bf16, (int)B, (int)T, (int)H, (int)N, r.data_ptr(), w.data_ptr(), k.data_ptr(), v.data_ptr(), a.data_ptr(),
        b.data_ptr(), dy.data_ptr(), dsT.data_ptr<float>(), T > 0 ? snap.data_ptr<float>() : nullptr,
        T > 0 ? sa.data_ptr<float>() : nullptr, scratch.numel() > 0 ? scratch.data_ptr<float>() : nullptr,
        dr.data_ptr(), dw.data_ptr(), dk.data_ptr(), dv.data_ptr(), da.data_ptr(), db.data_ptr(),
        ds0.data_ptr<float>(), c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "wkv7 cuda backward failed (head size ", N, "): ", cudaGetErrorString(err));
    return {dr, dw, dk, dv, da, db, ds0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &wkv7_forward, "WKV-7 forward (CUDA)");
    m.def("backward", &wkv7_backward, "WKV-7 backward (CUDA)");
    m.def("chunk_len", &birwkv7_chunk_len, "snapshot interval of the CUDA kernels");
}
