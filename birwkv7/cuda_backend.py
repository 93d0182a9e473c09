"""CUDA backend of WKV-7: JIT build of ``csrc/`` with ``torch.utils.cpp_extension.load`` and the autograd glue.

The extension is compiled on first use (needs nvcc and ninja) and cached.  Build directory, in order:
``$BIRWKV7_BUILD_DIR``, ``$TORCH_EXTENSIONS_DIR/birwkv7``, ``~/.cache/birwkv7``; a sub-folder per torch/CUDA
version keeps builds for different environments apart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SUPPORTED_HEAD_SIZES = (32, 64, 128)
_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = (_CSRC / "wkv7.cpp", _CSRC / "wkv7_cuda.cu")

_lock = threading.Lock()
_module: ModuleType | None = None
_load_error: str | None = None


def build_dir() -> Path:
    """Where the compiled extension is cached."""
    if os.environ.get("BIRWKV7_BUILD_DIR"):
        root = Path(os.environ["BIRWKV7_BUILD_DIR"])
    elif os.environ.get("TORCH_EXTENSIONS_DIR"):
        root = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "birwkv7"
    else:
        root = Path.home() / ".cache" / "birwkv7"
    tag = f"torch{torch.__version__}_cu{torch.version.cuda}".replace("+", "_").replace(".", "_")
    return root / tag


def _extension_name() -> str:
    # Name the module after a hash of the sources: an edited kernel never reuses a stale build.
    h = hashlib.sha1()
    for src in _SOURCES:
        h.update(src.read_bytes())
    return f"birwkv7_wkv7_{h.hexdigest()[:12]}"


def _cuda_root() -> Path | None:
    # torch derives CUDA_HOME from the nvcc on PATH without resolving links or wrapper scripts; when nvcc is
    # e.g. a /usr/local/bin/nvcc wrapper, the host compiler and linker then miss cuda_runtime_api.h and
    # libcudart.  Find the first toolkit folder that really has the headers and pass it on explicitly.
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_runtime_api.h").exists():
            return Path(root)
    return None


def load_extension(verbose: bool = False) -> ModuleType:
    """Compile (first call) or load the cached extension; raises RuntimeError if that is impossible."""
    global _module, _load_error
    with _lock:
        if _module is not None:
            return _module
        if _load_error is not None:
            raise RuntimeError(_load_error)
        try:
            from torch.utils.cpp_extension import load

            root = _cuda_root()
            directory = build_dir()
            directory.mkdir(parents=True, exist_ok=True)
            _module = load(
                name=_extension_name(),
                sources=[str(s) for s in _SOURCES],
                build_directory=str(directory),
                extra_include_paths=[str(root / "include")] if root else None,
                extra_ldflags=[f"-L{root / 'lib64'}"] if root and (root / "lib64").is_dir() else None,
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3", "-Xptxas", "-O3", "--extra-device-vectorization", "-lineinfo"],
                verbose=verbose,
            )
        except Exception as exc:  # any build/import failure: remember it so "auto" falls back quickly
            _load_error = f"building the wkv7 CUDA extension failed: {type(exc).__name__}: {exc}"
            raise RuntimeError(_load_error) from exc
        return _module


def cuda_supported(x: torch.Tensor) -> tuple[bool, str]:
    """Whether the CUDA backend can take this input (without trying to build the kernel)."""
    if not x.is_cuda:
        return False, "inputs are not on a CUDA device"
    if x.shape[-1] not in SUPPORTED_HEAD_SIZES:
        return False, f"head size {x.shape[-1]} not in {SUPPORTED_HEAD_SIZES}"
    return True, ""


def kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """The element type the kernels get r, w, k, v, a, b in: bf16 stays bf16, every other dtype runs in fp32."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


class _WKV7Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0, needs_grad):  # type: ignore[override]
        ext = load_extension()
        # What the backward replays from (the state entering every 16 steps, N^2 floats per head, and
        # S_{t-1} a_t of every step) is only kept when autograd will ask.
        y, sT, snap, sa = ext.forward(r, w, k, v, a, b, s0, needs_grad)
        if needs_grad:
            ctx.save_for_backward(r, w, k, v, a, b, snap, sa)
        return y, sT

    @staticmethod
    def backward(ctx, dy, dsT):  # type: ignore[override]
        r, w, k, v, a, b, snap, sa = ctx.saved_tensors
        B, _, H, N = r.shape
        dy = torch.zeros_like(r) if dy is None else dy.to(r.dtype).contiguous()
        if dsT is None:
            dsT = torch.zeros(B, H, N, N, dtype=torch.float32, device=r.device)
        else:
            dsT = dsT.float().contiguous()
        dr, dw, dk, dv, da, db, ds0 = load_extension().backward(r, w, k, v, a, b, dy, dsT, snap, sa)
        return dr, dw, dk, dv, da, db, ds0, None


def wkv7_cuda(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 on CUDA. bf16 inputs stay bf16 (y and input grads in bf16, state and math in fp32); every
    other float dtype runs in fp32 and y is cast back. Returns (y, final_state float32)."""
    ok, why = cuda_supported(r)
    if not ok:
        raise ValueError(f"wkv7 cuda backend: {why}")
    in_dtype = r.dtype
    kdt = kernel_dtype(in_dtype)
    B, T, H, N = r.shape
    r, w, k, v, a, b = (x.to(kdt).contiguous() for x in (r, w, k, v, a, b))
    if initial_state is None:
        s0 = torch.zeros(B, H, N, N, dtype=torch.float32, device=r.device)
    else:
        s0 = initial_state.to(torch.float32).contiguous()
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (r, w, k, v, a, b, s0))
    y, sT = _WKV7Function.apply(r, w, k, v, a, b, s0, needs_grad)
    return y.to(in_dtype), sT
