"""Tests for enhi.tdt_loss against an independent brute-force path enumeration and against NeMo."""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import sys
import types

import pytest
import torch

from enhi.tdt_loss import TDTLossTorch, rnnt_log_likelihood, tdt_log_likelihood

V = 3  # non-blank tokens; blank = V, label part has V + 1 logits


# ---------------------------------------------------------------------------------------------------------
# Brute force, straight from the TDT paper (arXiv 2304.06795): a path is a sequence of (token, duration)
# emissions starting at frame 0, row 0. Blank needs duration > 0; every emission must land on a frame < T,
# except the last one, which is a blank landing exactly on frame T after all U labels were emitted.
# P(path) = prod P(token | t, u) * exp(-sigma) * P(duration | t, u).
# Plain RNN-T (omega branch): blank moves one frame, a label stays in the frame, no durations, no sigma.
# ---------------------------------------------------------------------------------------------------------


def _enumerate_paths(t_len: int, u_len: int, labels: list[int], durations: list[int] | None):
    """All complete paths, each a list of steps (t, u, token, duration_index or None, is_label)."""
    moves = [(d, i) for i, d in enumerate(durations)] if durations is not None else None
    paths: list[list[tuple]] = []

    def walk(t: int, u: int, steps: list[tuple]) -> None:
        blank_moves = [(d, i) for d, i in moves if d > 0] if moves is not None else [(1, None)]
        label_moves = moves if moves is not None else [(0, None)]
        for d, i in blank_moves:
            step = (t, u, V, i, False)
            if t + d == t_len and u == u_len:
                paths.append([*steps, step])
            elif t + d < t_len:
                walk(t + d, u, [*steps, step])
        if u < u_len:
            for d, i in label_moves:
                if t + d < t_len:
                    walk(t + d, u + 1, [*steps, (t, u, labels[u], i, True)])

    walk(0, 0, [])
    return paths


def _brute_utt(acts_b, t_len, u_len, labels, durations, sigma, rnnt=False):
    """log P(labels) and the label-emission posterior occ (T, U+1) for one utterance, float64."""
    nd = len(durations)
    lp = torch.log_softmax(acts_b[..., : V + 1].double(), -1)
    lpd = torch.log_softmax(acts_b[..., V + 1 :].double(), -1)
    paths = _enumerate_paths(t_len, u_len, labels, None if rnnt else durations)
    assert paths
    scores = []
    for path in paths:
        s = acts_b.new_zeros((), dtype=torch.float64)
        for t, u, k, i, _ in path:
            s = s + lp[t, u, k] + (0.0 if rnnt else lpd[t, u, i] - sigma)
        scores.append(s)
    scores = torch.stack(scores)
    ll = torch.logsumexp(scores, 0)
    post = torch.softmax(scores.detach(), 0)
    occ = torch.zeros(acts_b.shape[0], acts_b.shape[1], dtype=torch.float64)
    for p, path in zip(post, paths, strict=True):
        for t, u, _, _, is_label in path:
            if is_label:
                occ[t, u] += p
    assert nd == acts_b.shape[-1] - V - 1
    return ll, occ


def _brute_batch(acts, labels, act_lens, label_lens, durations, sigma, rnnt=False):
    lls, occs = [], []
    for b in range(acts.shape[0]):
        t_len, u_len = int(act_lens[b]), int(label_lens[b])
        ll, occ = _brute_utt(acts[b], t_len, u_len, labels[b, :u_len].tolist(), durations, sigma, rnnt)
        lls.append(ll)
        occs.append(occ)
    return torch.stack(lls), torch.stack(occs)


def _batch(durations, seed=0, t_lens=(4, 3, 2), u_lens=(2, 1, 0), dtype=torch.float64, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    b, t_max, u_max = len(t_lens), max(t_lens), max(u_lens)
    acts = (scale * torch.randn(b, t_max, u_max + 1, V + 1 + len(durations), generator=g)).to(dtype)
    labels = torch.randint(0, V, (b, u_max), generator=g)
    for i, u in enumerate(u_lens):
        labels[i, u:] = -1  # padding may be garbage; the loss must never look at it
    return acts.requires_grad_(True), labels, torch.tensor(t_lens), torch.tensor(u_lens)


DURATION_SETS = [[0, 1, 2], [0, 1, 2, 3, 4], [1, 2]]


@pytest.mark.parametrize("durations", DURATION_SETS)
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_values_and_grads_match_bruteforce(durations, sigma):
    acts, labels, t_lens, u_lens = _batch(durations, seed=len(durations))
    loss = TDTLossTorch(V, durations, reduction="none", sigma=sigma)(acts, labels, t_lens, u_lens)
    (g_ours,) = torch.autograd.grad(loss.sum(), acts)
    ref_ll, _ = _brute_batch(acts, labels, t_lens, u_lens, durations, sigma)
    (g_ref,) = torch.autograd.grad(-ref_ll.sum(), acts)
    torch.testing.assert_close(loss, -ref_ll, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-10)
    # padded frames/rows and everything of a T=2, U=0 utterance beyond its lattice get exactly zero grad
    assert g_ours[2, 2:].abs().max() == 0 and g_ours[1, :, 2:].abs().max() == 0


def test_more_shapes_match_bruteforce():
    durations = [0, 1, 2, 3]
    acts, labels, t_lens, u_lens = _batch(
        durations, seed=7, t_lens=(1, 3, 4, 4), u_lens=(2, 2, 1, 2), scale=3.0
    )
    ours = tdt_log_likelihood(acts, labels, t_lens, u_lens, V, durations, sigma=0.1)
    ref, _ = _brute_batch(acts, labels, t_lens, u_lens, durations, 0.1)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_reductions():
    durations = [0, 1, 2]
    acts, labels, t_lens, u_lens = _batch(durations, seed=3)
    per_utt = TDTLossTorch(V, durations, reduction="none")(acts, labels, t_lens, u_lens)
    assert per_utt.shape == (3,)
    # Like TDTLossNumba: only 'sum'/'mean' reduce (to shape (1,), 'mean' = sum / B, not per token);
    # 'mean_batch'/'mean_volume' are the outer RNNTLoss's job and leave the inner costs unreduced.
    for red in (None, "none", "mean_batch", "mean_volume"):
        torch.testing.assert_close(
            TDTLossTorch(V, durations, reduction=red)(acts, labels, t_lens, u_lens), per_utt
        )
    total = TDTLossTorch(V, durations, reduction="sum")(acts, labels, t_lens, u_lens)
    mean = TDTLossTorch(V, durations, reduction="mean")(acts, labels, t_lens, u_lens)
    assert total.shape == (1,) and mean.shape == (1,)
    torch.testing.assert_close(total, per_utt.sum().unsqueeze(0))
    torch.testing.assert_close(mean, per_utt.sum().unsqueeze(0) / 3)
    with pytest.raises(ValueError):
        TDTLossTorch(V, durations, reduction="bogus")


@pytest.mark.parametrize("omega", [0.0, 1.0])
def test_gradcheck(omega):
    durations = [0, 1, 2]
    acts, labels, t_lens, u_lens = _batch(durations, seed=11, t_lens=(3, 2), u_lens=(2, 1))
    loss = TDTLossTorch(V, durations, sigma=0.05, omega=omega)
    assert torch.autograd.gradcheck(lambda a: loss(a, labels, t_lens, u_lens), (acts,))


def _load_nemo_rnnt_numba():
    """NeMo's numba RNN-T loss module without `import nemo.collections.asr` (20-50 s on this box).

    The package __init__s pull in all of NeMo ASR; the loss only needs torch + numba. We stub the three
    parent packages, import the real files, then drop everything from sys.modules again so that later
    real imports of nemo.collections.asr are unaffected.
    """
    base = "nemo.collections.asr"
    if base in sys.modules:  # already paid for
        return importlib.import_module(base + ".parts.numba.rnnt_loss.rnnt_pytorch")
    root = os.path.join(os.path.dirname(importlib.util.find_spec("nemo.collections").origin), "asr")
    before = set(sys.modules)
    try:
        for name, path in [
            (base, root),
            (base + ".parts", root + "/parts"),
            (base + ".parts.numba", root + "/parts/numba"),
        ]:
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
        return importlib.import_module(base + ".parts.numba.rnnt_loss.rnnt_pytorch")
    finally:
        for k in set(sys.modules) - before:
            if k.startswith(base):
                del sys.modules[k]


@pytest.mark.parametrize(("fastemit", "clamp"), [(0.0, -1.0), (0.3, 0.02)])
def test_omega_one_is_nemo_cpu_rnnt(fastemit, clamp):
    # gpu_rnnt.py: `if r < self.omega:` (r = random.uniform(0, 1) < 1 always) runs compute_alphas_kernel,
    # i.e. plain RNN-T on the label part, no sigma, duration grads zero. NeMo's warprnnt_numba runs on CPU.
    # RNNTLossNumba(reduction='none', ...) is exactly what resolve_rnnt_loss('warprnnt_numba', ...) builds.
    nemo_numba = _load_nemo_rnnt_numba()
    durations = [0, 1, 2, 3, 4]
    acts, labels, t_lens, u_lens = _batch(
        durations, seed=5, t_lens=(4, 4, 3), u_lens=(2, 1, 2), dtype=torch.float32
    )
    labels = labels.clamp(min=0)
    ours = TDTLossTorch(V, durations, sigma=0.05, omega=1.0, fastemit_lambda=fastemit, clamp=clamp)
    value = ours(acts, labels, t_lens, u_lens)
    (g_ours,) = torch.autograd.grad(value.sum(), acts)

    label_acts = acts.detach()[..., : V + 1].clone().requires_grad_(True)
    ref_loss = nemo_numba.RNNTLossNumba(blank=V, reduction="none", fastemit_lambda=fastemit, clamp=clamp)
    ref = ref_loss(label_acts, labels, t_lens, u_lens)
    ref.sum().backward()
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours[..., : V + 1], label_acts.grad, rtol=1e-5, atol=1e-6)
    assert g_ours[..., V + 1 :].abs().max() == 0
    if fastemit == 0:
        brute, _ = _brute_batch(acts, labels, t_lens, u_lens, durations, 0.0, rnnt=True)
        torch.testing.assert_close(value.double(), -brute.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rnnt_log_likelihood(acts, labels, t_lens, u_lens, V, 5).float(), -value)


def test_omega_draws_like_nemo():
    # NeMo draws r = random.uniform(0, 1) once per call, whatever omega is, and uses RNN-T iff r < omega.
    durations = [0, 1, 2]
    acts, labels, t_lens, u_lens = _batch(durations, seed=9)
    tdt = -tdt_log_likelihood(acts, labels, t_lens, u_lens, V, durations, sigma=0.02)
    rnnt = -rnnt_log_likelihood(acts, labels, t_lens, u_lens, V, len(durations))
    assert (tdt - rnnt).abs().min() > 1e-3
    loss = TDTLossTorch(V, durations, sigma=0.02, omega=0.4)
    random.seed(1234)
    got = [loss(acts, labels, t_lens, u_lens).detach() for _ in range(12)]
    random.seed(1234)
    expected = [rnnt if random.uniform(0, 1) < 0.4 else tdt for _ in range(12)]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e.detach())
    assert 0 < sum(torch.equal(g, rnnt.detach()) for g in got) < 12
    random.seed(99)
    TDTLossTorch(V, durations, omega=0.0)(acts, labels, t_lens, u_lens)
    after = random.random()
    random.seed(99)
    random.random()
    assert random.random() == after


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_fastemit_and_clamp_tdt_vs_bruteforce(reduction):
    # FastEmit (compute_tdt_grad_kernel): label-logit grad += lambda * occ(t, u) * (softmax - onehot(label)),
    # cost *= 1 + lambda. clamp: per-utterance label-logit grad clamped, before the reduction's 1/B.
    durations, lam, clamp, sigma = [0, 1, 2], 0.25, 0.03, 0.05
    acts, labels, t_lens, u_lens = _batch(durations, seed=13)
    loss = TDTLossTorch(V, durations, reduction=reduction, sigma=sigma, fastemit_lambda=lam, clamp=clamp)
    value = loss(acts, labels, t_lens, u_lens)
    (g_ours,) = torch.autograd.grad(value.sum(), acts)

    ref_ll, occ = _brute_batch(acts, labels, t_lens, u_lens, durations, sigma)
    (g_ref,) = torch.autograd.grad(-ref_ll.sum(), acts)
    p = torch.softmax(acts.detach()[..., : V + 1], -1)
    onehot = torch.zeros_like(p)
    lab = labels.clamp(min=0)
    onehot[:, :, :-1].scatter_(-1, lab[:, None, :, None].expand(-1, p.shape[1], -1, 1), 1.0)
    g_ref[..., : V + 1] += lam * occ[..., None] * (p - onehot)
    g_ref[..., : V + 1].clamp_(-clamp, clamp)
    ref_costs = -(1 + lam) * ref_ll.detach()
    if reduction == "mean":
        ref_costs, g_ref = ref_costs.mean().unsqueeze(0), g_ref / 3
    torch.testing.assert_close(value, ref_costs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-10)
    assert (
        g_ref[..., : V + 1].abs() >= clamp / (3 if reduction == "mean" else 1) - 1e-12
    ).any()  # clamp bites


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    durations = [0, 1, 2]
    acts, labels, t_lens, u_lens = _batch(durations, seed=17, dtype=dtype)
    loss = TDTLossTorch(V, durations, sigma=0.02)
    value = loss(acts, labels, t_lens, u_lens)
    (g,) = torch.autograd.grad(value.sum(), acts)
    assert value.dtype == torch.float32 and g.dtype == dtype
    acts32 = acts.detach().float().requires_grad_(True)
    value32 = loss(acts32, labels, t_lens, u_lens)
    (g32,) = torch.autograd.grad(value32.sum(), acts32)
    torch.testing.assert_close(value, value32)
    torch.testing.assert_close(g.float(), g32.to(dtype).float())


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ascending"):
        TDTLossTorch(V, [0, 2, 1])
    with pytest.raises(ValueError, match="> 0"):
        TDTLossTorch(V, [0])
    acts, labels, t_lens, u_lens = _batch([0, 1, 2])
    with pytest.raises(ValueError, match="act_lens"):
        TDTLossTorch(V, [0, 1, 2])(acts, labels, t_lens + 1, u_lens)


# ---------------------------------------------------------------------------------------------------------
# NeMo's own TDT loss (numba CUDA kernels).
# ---------------------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="NeMo's TDTLossNumba only runs on CUDA and no GPU is visible"
)


def _run_both(nemo_loss, ours, acts, labels, t_lens, u_lens, seed):
    """Values and per-utterance grads (grad of sum_b w_b * cost_b, divided by w_b) for NeMo, ours, ours64."""
    w = torch.arange(1, acts.shape[0] + 1, device=acts.device, dtype=torch.float64)
    out = []
    for fn, a0 in ((nemo_loss, acts), (ours, acts), (ours, acts.double())):
        a = a0.clone().requires_grad_(True)
        random.seed(seed)  # both draw r = random.uniform(0, 1) once: same omega branch
        v = fn(acts=a, labels=labels, act_lens=t_lens, label_lens=u_lens)
        (g,) = torch.autograd.grad((v * w.to(v.dtype)).sum(), a)
        out.append((v.detach().double(), g.double() / w.view(-1, 1, 1, 1)))
    return out


def _seed_per_branch(omega: float) -> dict[bool, int]:
    seeds: dict[bool, int] = {}
    for s in range(1000):
        random.seed(s)
        seeds.setdefault(random.uniform(0, 1) < omega, s)
    return seeds


@needs_cuda
@pytest.mark.parametrize(("fastemit", "clamp"), [(0.0, -1.0), (0.01, 0.005)])
def test_matches_nemo_tdt_numba_cuda(fastemit, clamp):
    from nemo.collections.asr.losses.rnnt import resolve_rnnt_loss

    durations = [0, 1, 2, 3, 4]
    kwargs = {"sigma": 0.02, "omega": 0.1, "fastemit_lambda": fastemit, "clamp": clamp}
    g = torch.Generator(device="cuda").manual_seed(0)
    cases = [  # (B, T, U, V+1, act_lens, label_lens, grad atol vs NeMo)
        (2, 5, 2, 4, [5, 3], [2, 1], 1e-6),
        # NeMo keeps alpha/beta/log P (~ -400 here) in float32, so its grads carry ~|log P| * 2^-24 absolute
        # error per transition (measured up to 4e-4 on the RNN-T branch); ours stays within 1e-5 of float64.
        (4, 200, 40, 1025, [200, 180, 150, 120], [40, 33, 40, 20], 1e-3),
    ]
    for b, t_max, u_max, v1, t_lens, u_lens, atol in cases:
        blank = v1 - 1
        nemo_loss = resolve_rnnt_loss("tdt", blank_idx=blank, loss_kwargs={"durations": durations, **kwargs})
        ours = TDTLossTorch(blank, durations, reduction="none", **kwargs)
        acts = torch.randn(b, t_max, u_max + 1, v1 + len(durations), device="cuda", generator=g)
        labels = torch.randint(0, blank, (b, u_max), device="cuda", generator=g)
        t_lens, u_lens = torch.tensor(t_lens, device="cuda"), torch.tensor(u_lens, device="cuda")
        for rnnt_branch, seed in _seed_per_branch(kwargs["omega"]).items():
            msg = f"B={b} T={t_max} rnnt_branch={rnnt_branch}"
            (v_nemo, g_nemo), (v_ours, g_ours), (v_64, g_64) = _run_both(
                nemo_loss, ours, acts, labels, t_lens, u_lens, seed
            )
            torch.testing.assert_close(v_ours, v_nemo, rtol=2e-6, atol=1e-5, msg=msg)
            torch.testing.assert_close(g_ours, g_nemo, rtol=0, atol=atol, msg=msg)
            torch.testing.assert_close(v_ours, v_64, rtol=1e-6, atol=1e-5, msg=msg)
            torch.testing.assert_close(g_ours, g_64, rtol=0, atol=1e-5, msg=msg)


def test_bf16_autocast_leaves_the_loss_in_fp32():
    """Under bf16-mixed training the joint reaches the loss as fp32 (NeMo's RNNTLoss upcasts it); the loss must
    then not drop back to bf16 inside autocast."""
    durations = [0, 1, 2]
    acts, labels, t_lens, u_lens = _batch(durations, dtype=torch.float32)
    loss = TDTLossTorch(V, durations, reduction="none", sigma=0.02)
    plain = loss(acts, labels, t_lens, u_lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(acts, labels, t_lens, u_lens)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=1e-6, atol=1e-6)
