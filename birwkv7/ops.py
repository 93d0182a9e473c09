"""Public entry point of the WKV-7 operator: ``wkv7(r, w, k, v, a, b, initial_state, backend)``.

Backends:
  * ``"cuda"``      - CUDA kernels with a hand-written backward (:mod:`birwkv7.cuda_backend`).
  * ``"torch"``     - chunked pure-PyTorch form, fast on CPU (:mod:`birwkv7.chunked`).
  * ``"torch_ref"`` - naive per-step loop (:mod:`birwkv7.reference`); ``"reference"`` is an alias.
  * ``"auto"``      - ``"cuda"`` for CUDA tensors with a supported head size when the kernel builds, else
    ``"torch"``; the choice is logged once per distinct reason.
All backends are differentiable w.r.t. r, w, k, v, a, b and initial_state.
"""

from __future__ import annotations

import logging

import torch

from . import cuda_backend
from .chunked import wkv7_chunked
from .reference import wkv7_reference

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cuda", "torch", "torch_ref", "reference")
_announced: set[str] = set()


def _announce(msg: str) -> None:
    if msg not in _announced:
        _announced.add(msg)
        log.info(msg)


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Concrete backends usable for tensors on ``device`` (tries to build the CUDA kernel for CUDA devices)."""
    names = ["torch", "torch_ref"]
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        try:
            cuda_backend.load_extension()
            names.insert(0, "cuda")
        except RuntimeError:
            pass
    return names


def _resolve(backend: str, r: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown wkv7 backend {backend!r}; choose one of {BACKENDS}")
    if backend == "reference":
        return "torch_ref"
    if backend != "auto":
        return backend
    ok, why = cuda_backend.cuda_supported(r)
    if ok and r.shape[0] * r.shape[1] * r.shape[2] > 0:
        try:
            cuda_backend.load_extension()
        except RuntimeError as exc:
            _announce(f"wkv7 backend 'auto': using 'torch' ({exc})")
            return "torch"
        _announce("wkv7 backend 'auto': using 'cuda'")
        return "cuda"
    _announce(f"wkv7 backend 'auto': using 'torch' ({why or 'empty input'})")
    return "torch"


def wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """RWKV-7 "WKV" linear recurrence with a diagonal-plus-rank-one state transition.

    Args:
        r, w, k, v, a, b: (B, T, H, N). Per head and step t, with d_t = exp(-exp(w_t)):
            S_t = S_{t-1} diag(d_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T,   y_t = S_t r_t.
            (RWKV-7 uses a = -kk, b = kk * iclr; this op takes a and b as given.)
        initial_state: (B, H, N, N) indexed [value, key]; zeros when None.
        backend: "auto", "cuda", "torch" (chunked), "torch_ref"/"reference" (naive loop).

    Returns:
        y: (B, T, H, N) in the dtype of r.
        final_state: (B, H, N, N), float32 (float64 when the inputs are float64 on a torch backend).
    """
    if r.dim() != 4:
        raise ValueError(f"r must be (B, T, H, N), got shape {tuple(r.shape)}")
    for name, x in (("w", w), ("k", k), ("v", v), ("a", a), ("b", b)):
        if x.shape != r.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(r.shape)}")
    B, _, H, N = r.shape
    if initial_state is not None and initial_state.shape != (B, H, N, N):
        raise ValueError(f"initial_state must be {(B, H, N, N)}, got {tuple(initial_state.shape)}")

    name = _resolve(backend, r)
    if name == "cuda":
        if r.shape[1] == 0 or B * H == 0:  # nothing for a kernel to do; keep the semantics simple
            return wkv7_chunked(r, w, k, v, a, b, initial_state)
        return cuda_backend.wkv7_cuda(r, w, k, v, a, b, initial_state)
    if name == "torch":
        return wkv7_chunked(r, w, k, v, a, b, initial_state)
    return wkv7_reference(r, w, k, v, a, b, initial_state)
