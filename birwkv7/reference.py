"""Naive step-by-step WKV-7 recurrence: the ground truth the faster backends are tested against.

Per batch, head and step t (state S is (N, N) indexed [value, key]):

    d_t = exp(-exp(w_t))
    S_t = S_{t-1} diag(d_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T
    y_t = S_t r_t
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64 (for gradcheck), everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def wkv7_reference(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over time. Inputs (B, T, H, N); state (B, H, N, N). Returns (y in the input dtype, state in fp32/fp64)."""
    B, T, H, N = r.shape
    in_dtype = r.dtype
    cdt = compute_dtype(in_dtype)
    r, w, k, v, a, b = (x.to(cdt) for x in (r, w, k, v, a, b))
    decay = torch.exp(-torch.exp(w))
    if initial_state is None:
        state = r.new_zeros(B, H, N, N)
    else:
        state = initial_state.to(cdt)
    ys = []
    for t in range(T):
        sa = torch.einsum("bhij,bhj->bhi", state, a[:, t])  # S_{t-1} a_t  (value-indexed)
        state = (
            state * decay[:, t, :, None, :]
            + sa[..., :, None] * b[:, t, :, None, :]
            + v[:, t, :, :, None] * k[:, t, :, None, :]
        )
        ys.append(torch.einsum("bhij,bhj->bhi", state, r[:, t]))
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(in_dtype), state
