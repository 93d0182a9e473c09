"""Chunked (parallel-in-chunk) WKV-7 in plain PyTorch: the fast CPU / fallback backend.

Same recurrence as :mod:`birwkv7.reference`.  Time is cut into chunks of ``L`` steps.  Inside a chunk
everything that does not depend on the incoming state is computed for all chunks at once with batched
tensor products (the WY/UT-transform view of the diagonal-plus-low-rank delta rule, as in
flash-linear-attention's ``generalized_delta_rule/dplr``); only an ``L``-times shorter loop over chunks
carries the state.

Notation inside one chunk (positions p = 0..L-1, S_0 = state entering the chunk, [value, key] layout):

    lam_p   = sum_{q<=p} log d_q          (inclusive log cumulative decay, relative to chunk start)
    lex_p   = lam_p - log d_p             (exclusive)
    u_p     = S_{p-1} a_p                  (the "removal" vector of the delta rule)
    u_p     = S_0 (a_p * e^{lex_p}) + sum_{m<p} v_m A_ak[p,m] + u_m A_ab[p,m]
    A_xy[p,m] = sum_j x_p[j] y_m[j] exp(lex_p[j] - lam_m[j])            (m < p)
    y_p     = S_0 (r_p * e^{lam_p}) + sum_{m<=p} v_m A_rk[p,m] + u_m A_rb[p,m]
    A_rx[p,m] = sum_j r_p[j] x_m[j] exp(lam_p[j] - lam_m[j])            (m <= p)

so U = (I - A_ab)^{-1} (G S_0^T + A_ak V) is one unit-lower-triangular solve per chunk.

Numerical stability (why the decay factors are formed pairwise): the usual factorisation
exp(lam_p - lam_m) = e^{lam_p} * e^{-lam_m} overflows as soon as the decay inside a chunk is strong
(e.g. w = 5 gives log d = -148 per step, e^{+148} is inf in fp32).  Here every factor is built from
the *difference* of log cumulative decays, masked to the causal triangle *before* ``exp``, so every
exponent is <= 0 and nothing can overflow for any w.  The price is an (L, L, N) tensor per chunk
instead of an (L, N) one, which is why the default chunk is small (16): the intra-chunk work is then
O(T*L*N) per head, same order as the recurrence itself, and the sequential loop is T/16 steps long.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import compute_dtype

DEFAULT_CHUNK = 16


def wkv7_chunked(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked WKV-7. Inputs (B, T, H, N); state (B, H, N, N) [value, key]. Differentiable (plain autograd)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, H, N = r.shape
    in_dtype = r.dtype
    cdt = compute_dtype(in_dtype)
    L = chunk_size
    if initial_state is None:
        state = torch.zeros(B, H, N, N, dtype=cdt, device=r.device)
    else:
        state = initial_state.to(cdt)
    if T == 0:
        return r.new_zeros(B, 0, H, N), state

    # (B, T, H, N) -> (B, H, T, N) in the compute dtype; log-decay log d = -exp(w).
    r, k, v, a, b = (x.to(cdt).transpose(1, 2) for x in (r, k, v, a, b))
    logd = -torch.exp(w.to(cdt)).transpose(1, 2)

    # Pad T up to a multiple of L with steps that do nothing: decay 1 (log d = 0) and k = v = a = b = 0,
    # so the state passes through unchanged and the padded outputs are simply dropped.
    pad = (-T) % L
    if pad:
        r, k, v, a, b, logd = (F.pad(x, (0, 0, 0, pad)) for x in (r, k, v, a, b, logd))
    C = (T + pad) // L
    r, k, v, a, b, logd = (x.reshape(B, H, C, L, N) for x in (r, k, v, a, b, logd))

    lam = logd.cumsum(dim=-2)  # inclusive, relative to the chunk start
    lex = lam - logd  # exclusive

    idx = torch.arange(L, device=r.device)
    incl = (idx[None, :] <= idx[:, None])[..., None]  # [p, m]: m <= p
    strict = (idx[None, :] < idx[:, None])[..., None]  # [p, m]: m < p
    neg_inf = torch.tensor(float("-inf"), dtype=cdt, device=r.device)
    # Pairwise decays, exponent masked before exp so it is always <= 0 (see module docstring).
    e_incl = torch.exp(torch.where(incl, lam[..., :, None, :] - lam[..., None, :, :], neg_inf))
    e_strict = torch.exp(torch.where(strict, lex[..., :, None, :] - lam[..., None, :, :], neg_inf))

    re = r[..., :, None, :] * e_incl  # (B,H,C,L,L,N)
    ae = a[..., :, None, :] * e_strict
    A_rk = torch.einsum("...pmj,...mj->...pm", re, k)
    A_rb = torch.einsum("...pmj,...mj->...pm", re, b)
    A_ak = torch.einsum("...pmj,...mj->...pm", ae, k)
    A_ab = torch.einsum("...pmj,...mj->...pm", ae, b)

    eye = torch.eye(L, dtype=cdt, device=r.device)
    T_mat = eye - A_ab  # unit lower triangular
    # U = Wg S0^T + U_intra, with Wg and U_intra solved once for every chunk in parallel.
    rhs = torch.cat([a * torch.exp(lex), A_ak @ v], dim=-1)  # (B,H,C,L,2N)
    sol = torch.linalg.solve_triangular(T_mat, rhs, upper=False, unitriangular=True)
    Wg, U_intra = sol[..., :N], sol[..., N:]

    Q = r * torch.exp(lam) + A_rb @ Wg  # y = Q S0^T + Y_intra
    Y_intra = A_rk @ v + A_rb @ U_intra
    tail = torch.exp(lam[..., -1:, :] - lam)  # decay from each position to the chunk end (<= 1)
    k_t, b_t = k * tail, b * tail
    g_end = torch.exp(lam[..., -1, :])  # (B,H,C,N) total decay of the chunk, per key
    S_add = v.transpose(-1, -2) @ k_t + U_intra.transpose(-1, -2) @ b_t  # (B,H,C,N,N)

    # Only this loop is sequential: S <- S diag(g_end) + (S Wg^T) b_t + S_add.
    starts = []
    for c in range(C):
        starts.append(state)
        state = (
            state * g_end[:, :, c, None, :]
            + (state @ Wg[:, :, c].transpose(-1, -2)) @ b_t[:, :, c]
            + S_add[:, :, c]
        )
    S0 = torch.stack(starts, dim=2)  # (B,H,C,N,N)
    y = Q @ S0.transpose(-1, -2) + Y_intra  # (B,H,C,L,N)
    y = y.reshape(B, H, C * L, N)[:, :, :T].transpose(1, 2)
    return y.to(in_dtype), state
