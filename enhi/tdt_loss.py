"""Pure-PyTorch TDT (Token-and-Duration Transducer) loss with the exact semantics of NeMo's `TDTLossNumba`.

NeMo 3.0.0's TDT loss (`resolve_rnnt_loss('tdt', ...)` -> `TDTLossNumba`) only runs on CUDA, and its
`TDTLossPytorch` is a Python triple loop pinned to `.cuda()`. `TDTLossTorch` is a drop-in replacement for
the *inner* loss module (`RNNTLoss._loss`) that runs on any device and gets its gradients from autograd.

What is reproduced (paths are under `nemo/collections/asr/parts/numba/rnnt_loss/`):

* `rnnt_pytorch.py::TDTLossNumba.forward`: acts are split into the label part (V+1 logits, blank included)
  and the last `len(durations)` duration logits; log_softmax is taken over each part separately.
* `utils/cuda_utils/gpu_rnnt_kernel.py::compute_tdt_alphas_kernel`: every emission (blank and label) is
  scored `logp(token) - sigma + logp(duration)` (logit under-normalization); alpha(0, 0) = 0; blank needs
  a duration > 0 ("skip 0 since blank emission has to advance by at least one"); a label may use any
  duration, duration 0 staying in the same frame; a transition must land on a frame t + d < T, except the
  terminal one: log P = logsumexp over d > 0 of alpha(T-d, U) + logp(blank | T-d, U) - sigma + logp(d | T-d, U).
  A label landing on frame T, or anything landing past T, is not a complete path. Durations are assumed
  ascending (NeMo's loops `break` on the first too-large duration), which is checked here.
* `utils/cuda_utils/gpu_rnnt.py::GPUTDT.compute_cost_and_score`: `r = random.uniform(0, 1)` is drawn once
  per call (always, whatever omega is) and, if `r < omega`, the *whole batch* gets the plain RNN-T loss on
  the label part (`compute_alphas_kernel`: no sigma, no duration logits, zero duration gradients) instead
  of the TDT loss. So omega is a per-call Bernoulli switch, not a weighted sum; the same stdlib `random`
  stream is consumed, so with the same seed this module picks the same branch as NeMo. For a
  deterministic mixture use `tdt_log_likelihood` and `rnnt_log_likelihood` directly.
* `utils/rnnt_helper.py::compute_costs_data`: cost = -(1 + fastemit_lambda) * log P.
* `_TDTNumba.forward`: reduction 'sum' -> costs.sum() and 'mean' -> costs.sum() / B (shape (1,), NOT divided
  by target lengths); anything else (None, 'none', 'mean_batch', 'mean_volume') -> per-utterance costs
  (B,). NeMo's outer `RNNTLoss` sets `_loss.reduction = None` and applies 'mean_batch' etc. itself.
* fastemit_lambda > 0 (`compute_tdt_grad_kernel`): the gradient w.r.t. label logits becomes
  grad(-log P) + lambda * occ(t, u) * (softmax - onehot(label)), occ = posterior of emitting label u at
  (t, u); duration gradients are unchanged. Implemented faithfully (value and gradient).
* clamp > 0: the per-utterance gradient w.r.t. the label logits (not the duration logits) is clamped to
  [-clamp, clamp] before it is scaled by the incoming gradient. Implemented faithfully.
  With fastemit_lambda > 0 or clamp > 0 the gradient is computed eagerly inside forward (as NeMo does),
  so double backward is not supported on that path.

Acts of dtype float16/bfloat16 are upcast to float32 (NeMo's `RNNTLoss` forces float32 for 'tdt'); the
alpha recursion itself runs in float64 (see `_log_likelihood`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Finite stand-in for log(0). -inf would make logsumexp/logcumsumexp backward produce NaN
# (exp(-inf - -inf)); exp(-1e30 - x) is exactly 0 in float64, so the value is unaffected.
NEG = -1e30

_NO_REDUCTION = (None, "none", "mean_batch", "mean_volume")
_REDUCTIONS = (*_NO_REDUCTION, "mean", "sum")


def _check_durations(durations: Sequence[int]) -> list[int]:
    durs = [int(d) for d in durations]
    if not durs or any(d < 0 for d in durs) or any(a >= b for a, b in zip(durs, durs[1:], strict=False)):
        raise ValueError(
            f"durations must be non-negative and strictly ascending (as NeMo assumes), got {durs}"
        )
    if durs[-1] == 0:
        raise ValueError("durations need at least one value > 0 (blank must advance at least one frame)")
    return durs


class _JointLogProbs(torch.autograd.Function):
    """Gathers the log-probs the recursion needs, without materialising a (B, T, U+1, V+1) log_softmax.

    Returns blank_lp (B, T, U+1), emit_lp (B, T, U) (log-prob of the next label, minus sigma) and the
    duration log-probs (B, T, U+1, D), all float64. The backward writes one full-size gradient tensor,
    which at realistic shapes (V ~ 1000) is most of the loss's time and memory.
    """

    @staticmethod
    def forward(ctx, acts, labels, blank: int, num_durations: int, sigma: float):  # type: ignore[override]
        v1 = acts.shape[-1] - num_durations
        u = labels.shape[1]
        label_logits = acts[..., :v1]
        log_z = torch.logsumexp(label_logits, dim=-1)  # (B, T, U+1)
        idx = labels[:, None, :, None].expand(-1, acts.shape[1], -1, 1)  # (B, T, U, 1)
        blank_lp = label_logits[..., blank] - log_z - sigma
        emit_lp = label_logits[:, :, :u].gather(-1, idx).squeeze(-1) - log_z[:, :, :u] - sigma
        dur_lp = torch.log_softmax(acts[..., v1:], dim=-1)
        ctx.save_for_backward(acts, log_z, idx, dur_lp)
        ctx.blank, ctx.v1 = blank, v1
        return blank_lp.double(), emit_lp.double(), dur_lp.double()

    @staticmethod
    def backward(ctx, g_blank, g_emit, g_dur):  # type: ignore[override]
        acts, log_z, idx, dur_lp = ctx.saved_tensors
        v1, u = ctx.v1, idx.shape[2]
        g_blank, g_emit, g_dur = g_blank.to(acts.dtype), g_emit.to(acts.dtype), g_dur.to(acts.dtype)
        grad = torch.empty_like(acts)
        gl = grad[..., :v1]
        # d logp_k / dz_v = [v == k] - softmax_v, summed over the (blank, label) log-probs used per cell.
        g_cell = g_blank.clone()
        g_cell[:, :, :u] += g_emit
        torch.sub(acts[..., :v1], log_z[..., None], out=gl)
        gl.exp_().mul_(-g_cell[..., None])
        gl[..., ctx.blank] += g_blank
        gl[:, :, :u].scatter_add_(-1, idx, g_emit[..., None])
        grad[..., v1:] = g_dur - dur_lp.exp() * g_dur.sum(-1, keepdim=True)
        return grad, None, None, None, None


def _log_likelihood(
    blank_terms: dict[int, torch.Tensor],
    emit_terms: dict[int, torch.Tensor],
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
) -> torch.Tensor:
    """Generic transducer forward algorithm, log P per utterance (B,).

    blank_terms[d] (B, T, U+1): log-weight of blank with duration d > 0 from (t, u) to (t+d, u).
    emit_terms[d] (B, T, U): log-weight of emitting label u with duration d from (t, u) to (t+d, u+1).
    Paths end by a blank landing exactly on frame act_lens[b] at row label_lens[b].

    Loop over frames t, batched over B and U. Cross-frame arrivals (d > 0) are one logsumexp over a
    (B, 2 * num_lags, U+1) window. Duration-0 labels chain cells within a frame:
    alpha(t, u) = logaddexp(inc(u), alpha(t, u-1) + e(u-1)), a linear recurrence in log space whose
    closed form is alpha(t, u) = C(u) + logcumsumexp_k<=u(inc(k) - C(k)), C(u) = sum_{j<u} e(j).
    C(u) grows like -U * |log p|, so C(u) + (inc - C) cancels catastrophically in float32; we run the
    recursion in float64 (it is only O(B*T*U*D) numbers; the V-sized work stays in the input dtype).
    """
    any_term = next(iter(blank_terms.values()))
    b, t_max, u1 = any_term.shape
    dev, dt = any_term.device, any_term.dtype
    lags = sorted(set(blank_terms) | {d for d in emit_terms if d > 0})
    neg_plane = torch.full((b, t_max, u1), NEG, device=dev, dtype=dt)
    wb, we = [], []
    for lag in lags:
        # Re-index by the *destination* frame: row t holds the weight of arriving at t from t - lag.
        wb.append(
            F.pad(blank_terms[lag], (0, 0, lag, 0), value=NEG)[:, :t_max] if lag in blank_terms else neg_plane
        )
        we.append(
            F.pad(emit_terms[lag], (1, 0, lag, 0), value=NEG)[:, :t_max] if lag in emit_terms else neg_plane
        )
    # unbind (not weights[:, t]) so backward stacks the per-frame grads once instead of materialising a
    # full (B, T, 2L, U+1) zero tensor per frame, which would be O(T^2) work.
    weights = torch.stack(wb + we, dim=2).unbind(1)  # T x (B, 2L, U+1)

    e0 = emit_terms.get(0)
    prefix = (
        F.pad(torch.cumsum(e0, dim=-1), (1, 0)).unbind(1) if e0 is not None else None
    )  # C(u), T x (B, U+1)

    neg_row = torch.full((b, u1), NEG, device=dev, dtype=dt)
    start = neg_row.clone()
    start[:, 0] = 0.0  # alpha(0, 0) = 0
    alphas: list[torch.Tensor] = []
    for t in range(t_max):
        if t == 0:
            inc = start
        else:
            win = torch.stack([alphas[t - lag] if t >= lag else neg_row for lag in lags], dim=1)
            x = torch.cat([win, F.pad(win[..., :-1], (1, 0), value=NEG)], dim=1)
            inc = torch.logsumexp(x + weights[t], dim=1)
        if prefix is not None:
            c = prefix[t]
            inc = c + torch.logcumsumexp(inc - c, dim=-1)
        alphas.append(inc)
    alpha = torch.stack(alphas, dim=1)  # (B, T, U+1)

    bidx = torch.arange(b, device=dev)
    ends = []
    for d, w in blank_terms.items():
        src = act_lens - d
        s = src.clamp(min=0)
        val = alpha[bidx, s, label_lens] + w[bidx, s, label_lens]
        ends.append(torch.where(src >= 0, val, torch.full_like(val, NEG)))
    return torch.logsumexp(torch.stack(ends), dim=0)


def _prepare(
    acts: torch.Tensor,
    labels: torch.Tensor,
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
    blank: int,
    nd: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if acts.dim() != 4:
        raise ValueError(f"acts must be (B, T, U+1, V+1+D), got shape {tuple(acts.shape)}")
    b, t_max, u1, width = acts.shape
    if labels.dim() != 2 or act_lens.shape != (b,) or label_lens.shape != (b,):
        raise ValueError("labels must be (B, U); act_lens and label_lens must be (B,)")
    if not 0 <= blank < width - nd:
        raise ValueError(f"blank={blank} is outside the label part (size {width - nd}) of acts")
    act_lens = act_lens.long().to(acts.device)
    label_lens = label_lens.long().to(acts.device)
    if bool(
        (act_lens < 1).any() | (act_lens > t_max).any() | (label_lens < 0).any() | (label_lens > u1 - 1).any()
    ):
        raise ValueError("need 1 <= act_lens <= acts.shape[1] and 0 <= label_lens <= acts.shape[2] - 1")
    if acts.dtype in (torch.float16, torch.bfloat16):
        acts = acts.float()
    labels = labels.long().to(acts.device)[:, : u1 - 1]
    labels = F.pad(labels, (0, u1 - 1 - labels.shape[1]), value=blank)
    # Padding labels may be anything (e.g. -1); they are never on a path, but must be valid gather indices.
    pos = torch.arange(u1 - 1, device=acts.device)
    labels = torch.where(pos[None, :] < label_lens[:, None], labels, blank)
    if bool(((labels < 0) | (labels >= width - nd)).any()):
        raise ValueError("labels must lie in [0, V] (the label part of acts)")
    return acts, labels, act_lens, label_lens


def _tdt_terms(
    acts: torch.Tensor, labels: torch.Tensor, blank: int, durations: list[int], sigma: float
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    blank_lp, emit_lp, dur_lp = _JointLogProbs.apply(acts, labels, blank, len(durations), float(sigma))
    u = labels.shape[1]
    blank_terms = {d: blank_lp + dur_lp[..., i] for i, d in enumerate(durations) if d > 0}
    emit_terms = {d: emit_lp + dur_lp[:, :, :u, i] for i, d in enumerate(durations)}
    return blank_terms, emit_terms, emit_lp


def _rnnt_terms(
    acts: torch.Tensor, labels: torch.Tensor, blank: int, num_durations: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    # Same label log_softmax as the TDT branch; NeMo's compute_alphas_kernel uses no sigma and no durations.
    blank_lp, emit_lp, _ = _JointLogProbs.apply(acts, labels, blank, num_durations, 0.0)
    return {1: blank_lp}, {0: emit_lp}, emit_lp


def tdt_log_likelihood(
    acts: torch.Tensor,
    labels: torch.Tensor,
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
    blank: int,
    durations: Sequence[int],
    sigma: float = 0.0,
) -> torch.Tensor:
    """log P_TDT(labels | acts) per utterance (B,), float64; NeMo's TDT branch (omega never fires)."""
    durs = _check_durations(durations)
    acts, labels, act_lens, label_lens = _prepare(acts, labels, act_lens, label_lens, blank, len(durs))
    bt, et, _ = _tdt_terms(acts, labels, blank, durs, sigma)
    return _log_likelihood(bt, et, act_lens, label_lens)


def rnnt_log_likelihood(
    acts: torch.Tensor,
    labels: torch.Tensor,
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
    blank: int,
    num_durations: int = 0,
) -> torch.Tensor:
    """log P_RNNT per utterance (B,), float64, on the label part of acts (last num_durations entries ignored).

    This is NeMo's omega branch of the TDT loss.
    """
    acts, labels, act_lens, label_lens = _prepare(acts, labels, act_lens, label_lens, blank, num_durations)
    bt, et, _ = _rnnt_terms(acts, labels, blank, num_durations)
    return _log_likelihood(bt, et, act_lens, label_lens)


class _EagerGrad(torch.autograd.Function):
    """Computes per-utterance costs and their (NeMo-modified) gradient in forward, like the numba kernel.

    Needed for clamp (clamping acts on each utterance's own gradient, before the incoming gradient scales
    it) and FastEmit (a gradient that is not the gradient of the returned value).
    """

    @staticmethod
    def forward(
        ctx, acts, closure: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], v1: int, clamp: float
    ):  # type: ignore[override]
        with torch.enable_grad():
            leaf = acts.detach().requires_grad_(True)
            costs, surrogate = closure(leaf)
            (grad,) = torch.autograd.grad(surrogate, leaf)
        if clamp > 0:
            grad[..., :v1].clamp_(-clamp, clamp)  # label logits only; duration grads are not clamped
        ctx.save_for_backward(grad)
        return costs.detach()

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype).view(-1, 1, 1, 1), None, None, None


class TDTLossTorch(torch.nn.Module):
    """Drop-in, device-agnostic replacement for NeMo's `TDTLossNumba` (same inputs, outputs, gradients).

    Args:
        blank: index of blank in the label part of acts (= V, NeMo's `RNNTLoss(num_classes=V)`).
        durations: ascending durations, e.g. [0, 1, 2, 3, 4].
        reduction: 'sum' or 'mean' (= sum / B, shape (1,)); None, 'none', 'mean_batch', 'mean_volume'
            return per-utterance costs (B,), exactly like the inner NeMo module.
        sigma: logit under-normalization, subtracted from every emission's label log-prob (TDT branch).
        omega: per-call probability (stdlib `random`, one draw per call) of using the plain RNN-T loss on
            the label part for the whole batch instead of the TDT loss.
        fastemit_lambda: FastEmit regularization, implemented as in NeMo's TDT kernel (cost scaled by
            1 + lambda, gradient as in the module docstring).
        clamp: if > 0, per-utterance gradient w.r.t. label logits clamped to [-clamp, clamp].
    """

    def __init__(
        self,
        blank: int,
        durations: list[int],
        reduction: str | None = "none",
        sigma: float = 0.0,
        omega: float = 0.0,
        fastemit_lambda: float = 0.0,
        clamp: float = -1.0,
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if fastemit_lambda < 0:
            raise ValueError("fastemit_lambda must be >= 0")
        self.blank = blank
        self.durations = _check_durations(durations)
        self.reduction = reduction
        self.sigma = float(sigma)
        self.omega = float(omega)
        self.fastemit_lambda = float(fastemit_lambda)
        self.clamp = float(clamp) if clamp > 0 else 0.0  # NeMo: clamp <= 0 means off

    def forward(
        self, acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor
    ) -> torch.Tensor:
        """Costs -log P (float32, or float64 for float64 acts), reduced per `self.reduction`."""
        if self.reduction not in _REDUCTIONS:  # RNNTLoss sets this attribute directly
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {self.reduction!r}")
        nd = len(self.durations)
        acts, labels, act_lens, label_lens = _prepare(acts, labels, act_lens, label_lens, self.blank, nd)
        out_dtype = torch.float64 if acts.dtype == torch.float64 else torch.float32
        use_rnnt = random.uniform(0, 1) < self.omega  # NeMo draws exactly once per call, omega or not
        lam = self.fastemit_lambda

        def costs_and_surrogate(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if use_rnnt:
                bt, et, emit_lp = _rnnt_terms(a, labels, self.blank, nd)
            else:
                bt, et, emit_lp = _tdt_terms(a, labels, self.blank, self.durations, self.sigma)
            ll = _log_likelihood(bt, et, act_lens, label_lens)
            costs = -ll
            surrogate = costs.sum()
            if lam > 0 and a.requires_grad:
                # occ(t, u) = d log P / d emit_lp(t, u) = posterior of emitting label u at (t, u).
                (occ,) = torch.autograd.grad(ll.sum(), emit_lp, retain_graph=True)
                surrogate = surrogate - lam * (occ.detach() * emit_lp).sum()
            return costs * (1.0 + lam), surrogate

        if (self.clamp > 0 or lam > 0) and acts.requires_grad and torch.is_grad_enabled():
            v1 = acts.shape[-1] - nd
            costs = _EagerGrad.apply(acts, costs_and_surrogate, v1, self.clamp)
        else:
            costs = costs_and_surrogate(acts)[0]
        costs = costs.to(out_dtype)

        if self.reduction in ("sum", "mean"):
            costs = costs.sum().unsqueeze(-1)
            if self.reduction == "mean":
                costs = costs / acts.shape[0]
        return costs
