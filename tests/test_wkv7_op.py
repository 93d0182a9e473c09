"""Tests of the WKV-7 operator (birwkv7.wkv7): reference vs chunked vs CUDA, gradients, state carry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from birwkv7 import wkv7
from birwkv7.chunked import wkv7_chunked
from birwkv7.reference import wkv7_reference

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA GPU: the wkv7 CUDA kernels cannot run on CPU"
)


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    # CI machines are small and shared: cap intra-op threads for this module, restore afterwards.
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, 2))
    yield
    torch.set_num_threads(old)


def rwkv7_inputs(B, T, H, N, dtype=torch.float64, device="cpu", seed=0, w_shift=0.0):
    """Inputs in the value ranges RWKV-7 produces: decay in (0.545, 1), a = -kk, b = kk * iclr."""
    g = torch.Generator().manual_seed(seed)

    def rn():
        return torch.randn(B, T, H, N, generator=g, dtype=torch.float64)

    r, k, v = rn(), rn(), rn()
    w = -F.softplus(-rn()) - 0.5 + w_shift
    kk = F.normalize(rn(), dim=-1)
    iclr = torch.sigmoid(rn())
    return [x.to(dtype=dtype, device=device) for x in (r, w, k, v, -kk, kk * iclr)]


def random_state(B, H, N, dtype=torch.float64, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(B, H, N, N, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------ forward values


@pytest.mark.parametrize("chunk_size", [16, 5, 1])
def test_chunked_matches_reference_float64(chunk_size):
    x = rwkv7_inputs(2, 37, 3, 8)  # 37 is not a multiple of any tested chunk size > 1
    s0 = random_state(2, 3, 8)
    y_ref, s_ref = wkv7_reference(*x, s0)
    y, s = wkv7_chunked(*x, s0, chunk_size=chunk_size)
    assert y.dtype == torch.float64 and s.dtype == torch.float64
    assert y.shape == (2, 37, 3, 8) and s.shape == (2, 3, 8, 8)
    assert y_ref.abs().max() > 1.0  # the comparison below is not between two near-zero tensors
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-10)


def test_chunked_matches_reference_float32():
    x = rwkv7_inputs(1, 70, 2, 32, seed=3)
    s0 = random_state(1, 2, 32)
    y64, s64 = wkv7_reference(*x, s0)
    y, s = wkv7_chunked(*[t.float() for t in x], s0.float())
    assert y.dtype == torch.float32 and s.dtype == torch.float32
    scale = y64.abs().max().item()
    assert (y.double() - y64).abs().max().item() < 1e-5 * scale
    assert (s.double() - s64).abs().max().item() < 1e-5 * s64.abs().max().item()


def test_public_api_backends_agree_and_dtypes():
    x = rwkv7_inputs(1, 20, 2, 8)
    y_t, s_t = wkv7(*x, backend="torch")
    y_r, s_r = wkv7(*x, backend="torch_ref")
    y_a, s_a = wkv7(*x, backend="reference")
    y_auto, _ = wkv7(*x)  # CPU tensors: "auto" must resolve to the torch backend
    torch.testing.assert_close(y_t, y_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(s_t, s_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(y_a, y_r, rtol=0, atol=0)
    torch.testing.assert_close(y_auto, y_t, rtol=0, atol=0)
    # bf16 in -> bf16 y, fp32 state
    y_bf, s_bf = wkv7(*[t.bfloat16() for t in x], backend="torch")
    assert y_bf.dtype == torch.bfloat16 and s_bf.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown wkv7 backend"):
        wkv7(*x, backend="triton")
    with pytest.raises(ValueError, match="initial_state"):
        wkv7(*x, initial_state=torch.zeros(1, 2, 8, 7, dtype=torch.float64))


def test_strong_decay_is_stable_in_float32():
    # w = +6 gives log d = -400 per step: a factorised e^{+lam} e^{-lam} chunk form would overflow fp32.
    x = rwkv7_inputs(1, 40, 2, 8, w_shift=6.5)
    x[1][:, ::3] -= 7.0  # mix in ordinary decays so the state is not trivially zero
    y64, s64 = wkv7_reference(*x)
    y, s = wkv7_chunked(*[t.float() for t in x])
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    assert y64.abs().max() > 0.5
    assert (y.double() - y64).abs().max().item() < 1e-4 * y64.abs().max().item()


def _explicit_matrix_recurrence(r, w, k, v, a, b, s0):
    """Independent oracle: per-step matrices S_t = S_{t-1} (diag(d_t) + a_t b_t^T) + v_t k_t^T, y_t = S_t r_t."""
    B, T, H, N = r.shape
    y = torch.zeros(B, T, H, N, dtype=torch.float64)
    sT = torch.zeros(B, H, N, N, dtype=torch.float64)
    for bi in range(B):
        for h in range(H):
            S = s0[bi, h].clone()
            for t in range(T):
                d = torch.exp(-torch.exp(w[bi, t, h]))
                transition = torch.diag(d) + torch.outer(a[bi, t, h], b[bi, t, h])
                S = S @ transition + torch.outer(v[bi, t, h], k[bi, t, h])
                y[bi, t, h] = S @ r[bi, t, h]
            sT[bi, h] = S
    return y, sT


@pytest.mark.parametrize("backend", ["torch", "torch_ref", pytest.param("cuda", marks=needs_cuda)])
def test_matches_explicit_matrix_formula(backend):
    x = rwkv7_inputs(1, 5, 2, 3, seed=7) if backend != "cuda" else rwkv7_inputs(1, 5, 2, 32, seed=7)
    N = x[0].shape[-1]
    s0 = random_state(1, 2, N)
    y_oracle, s_oracle = _explicit_matrix_recurrence(*x, s0)
    if backend == "cuda":
        y, s = wkv7(*[t.float().cuda() for t in x], s0.float().cuda(), backend="cuda")
        y, s, tol = y.double().cpu(), s.double().cpu(), 1e-4
    else:
        y, s = wkv7(*x, s0, backend=backend)
        tol = 1e-12
    assert y_oracle.abs().max() > 0.5
    torch.testing.assert_close(y, y_oracle, rtol=0, atol=tol * max(1.0, y_oracle.abs().max().item()))
    torch.testing.assert_close(s, s_oracle, rtol=0, atol=tol * max(1.0, s_oracle.abs().max().item()))


def test_hand_computed_two_steps():
    # N = 1 makes every matrix a scalar, so the recurrence can be unrolled by hand:
    # s1 = s0 d1 + s0 a1 b1 + v1 k1,   s2 = s1 d2 + s1 a2 b2 + v2 k2,   y_t = s_t r_t.
    d1, d2 = 0.5, 0.25
    w = torch.log(-torch.log(torch.tensor([d1, d2], dtype=torch.float64))).reshape(1, 2, 1, 1)
    r = torch.tensor([2.0, -1.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    k = torch.tensor([1.0, 3.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    v = torch.tensor([4.0, 0.5], dtype=torch.float64).reshape(1, 2, 1, 1)
    a = torch.tensor([-1.0, -0.5], dtype=torch.float64).reshape(1, 2, 1, 1)
    b = torch.tensor([0.5, 0.2], dtype=torch.float64).reshape(1, 2, 1, 1)
    s0 = torch.tensor([[[[2.0]]]], dtype=torch.float64)
    s1 = 2.0 * 0.5 + 2.0 * (-1.0) * 0.5 + 4.0 * 1.0  # = 4.0
    s2 = s1 * 0.25 + s1 * (-0.5) * 0.2 + 0.5 * 3.0  # = 2.1
    expected_y = torch.tensor([s1 * 2.0, s2 * -1.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    for backend in ("torch", "torch_ref"):
        y, s = wkv7(r, w, k, v, a, b, s0, backend=backend)
        torch.testing.assert_close(y, expected_y, rtol=0, atol=1e-12)
        assert abs(s.item() - 2.1) < 1e-12


# ------------------------------------------------------------------------------------------- state carry


@pytest.mark.parametrize("backend", ["torch", "torch_ref"])
def test_state_carry_equals_full_run(backend):
    x = rwkv7_inputs(2, 41, 2, 8, seed=5)
    s0 = random_state(2, 2, 8)
    y_full, s_full = wkv7(*x, s0, backend=backend)
    cut = 23
    y1, s_mid = wkv7(*[t[:, :cut] for t in x], s0, backend=backend)
    y2, s_end = wkv7(*[t[:, cut:] for t in x], s_mid, backend=backend)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full, rtol=0, atol=1e-10)
    torch.testing.assert_close(s_end, s_full, rtol=0, atol=1e-10)
    # and the carried state matters: restarting from zeros gives a different second half
    y2_cold, _ = wkv7(*[t[:, cut:] for t in x], None, backend=backend)
    assert (y2_cold - y2).abs().max() > 1e-3


def test_zero_length_sequence_returns_initial_state():
    x = rwkv7_inputs(1, 0, 2, 4)
    s0 = random_state(1, 2, 4)
    for backend in ("torch", "torch_ref"):
        y, s = wkv7(*x, s0, backend=backend)
        assert y.shape == (1, 0, 2, 4)
        torch.testing.assert_close(s, s0)


# ----------------------------------------------------------------------------------------------- gradients


def _gradcheck(fn, T, H, fast_mode, chunk=None):
    x = [t.requires_grad_() for t in rwkv7_inputs(1, T, H, 3, seed=11)]
    s0 = random_state(1, H, 3).requires_grad_()

    def f(*args):
        if chunk is None:
            return fn(*args)
        return fn(*args, chunk_size=chunk)

    assert torch.autograd.gradcheck(f, (*x, s0), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast_mode)


def test_gradcheck_chunked():
    _gradcheck(wkv7_chunked, T=5, H=1, fast_mode=False, chunk=2)  # two full chunks and a remainder
    _gradcheck(wkv7_chunked, T=11, H=2, fast_mode=True, chunk=4)  # random-projection check, bigger case


def test_gradcheck_reference():
    _gradcheck(wkv7_reference, T=4, H=2, fast_mode=False)


def test_chunked_gradients_match_reference():
    x = rwkv7_inputs(2, 45, 2, 16, seed=13)
    s0 = random_state(2, 2, 16)
    g = torch.Generator().manual_seed(99)
    gy = torch.randn(2, 45, 2, 16, generator=g, dtype=torch.float64)
    gs = torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64)

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (*x, s0)]
        y, s = fn(*leaves)
        ((y * gy).sum() + (s * gs).sum()).backward()
        return [t.grad for t in leaves]

    for g_chunk, g_ref, name in zip(grads(wkv7_chunked), grads(wkv7_reference), "rwkvab", strict=False):
        assert g_ref.abs().max() > 1e-3, name
        torch.testing.assert_close(g_chunk, g_ref, rtol=0, atol=1e-9 * max(1.0, g_ref.abs().max().item()))


# ----------------------------------------------------------------------------------------------------- CUDA


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def _cuda_vs_torch(B, T, H, N, dtype, seed=0):
    x = rwkv7_inputs(B, T, H, N, dtype=torch.float32, device="cuda", seed=seed)
    x = [t.to(dtype) for t in x]  # the kernel and the oracle both see the same (rounded) inputs
    s0 = random_state(B, H, N, dtype=torch.float32, device="cuda", seed=seed + 1)
    g = torch.Generator(device="cuda").manual_seed(seed + 2)
    gy = torch.randn(B, T, H, N, generator=g, device="cuda")
    gs = torch.randn(B, H, N, N, generator=g, device="cuda")

    def run(backend, cast):
        leaves = [t.detach().to(cast).requires_grad_() for t in (*x, s0)]
        y, s = wkv7(*leaves, backend=backend)
        ((y.float() * gy).sum() + (s.float() * gs).sum()).backward()
        return y.float(), s.float(), [t.grad.float() for t in leaves]

    got = run("cuda", dtype)
    want = run("torch", torch.float32)  # chunked fp32 on the same GPU
    return got, want


@needs_cuda
@pytest.mark.parametrize("N", [64, 128])
def test_cuda_matches_torch_bf16(N):
    (y, s, gr), (y_ref, s_ref, gr_ref) = _cuda_vs_torch(B=2, T=1001, H=4, N=N, dtype=torch.bfloat16)
    assert y.abs().max() > 1.0
    errors = {"y": _rel_err(y, y_ref), "state": _rel_err(s, s_ref)}
    errors.update(
        {
            f"d{n}": _rel_err(a, b)
            for n, a, b in zip(["r", "w", "k", "v", "a", "b", "s0"], gr, gr_ref, strict=True)
        }
    )
    bad = {k: v for k, v in errors.items() if not v < 2e-2}
    assert not bad, f"relative errors too large at bf16: {bad} (all: {errors})"


@needs_cuda
@pytest.mark.parametrize("N", [32, 64, 128])
@pytest.mark.parametrize("T", [1, 17, 333])
def test_cuda_matches_torch_fp32(N, T):
    (y, s, gr), (y_ref, s_ref, gr_ref) = _cuda_vs_torch(B=1, T=T, H=2, N=N, dtype=torch.float32, seed=T)
    errors = {"y": _rel_err(y, y_ref), "state": _rel_err(s, s_ref)}
    errors.update(
        {
            f"d{n}": _rel_err(a, b)
            for n, a, b in zip(["r", "w", "k", "v", "a", "b", "s0"], gr, gr_ref, strict=True)
        }
    )
    bad = {k: v for k, v in errors.items() if not v < 1e-4}
    assert not bad, f"relative errors too large at fp32: {bad} (all: {errors})"


@needs_cuda
def test_cuda_state_carry_and_auto():
    x = rwkv7_inputs(1, 100, 2, 64, dtype=torch.float32, device="cuda", seed=4)
    y_full, s_full = wkv7(*x, backend="cuda")
    y1, s_mid = wkv7(*[t[:, :37] for t in x], backend="cuda")
    y2, s_end = wkv7(*[t[:, 37:] for t in x], s_mid, backend="cuda")
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s_end, s_full, rtol=1e-5, atol=1e-4)
    y_auto, _ = wkv7(*x)  # auto on CUDA with a supported head size: the same kernel
    torch.testing.assert_close(y_auto, y_full, rtol=0, atol=0)
