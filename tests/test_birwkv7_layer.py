"""BiRWKV7TimeMix against a step-by-step RWKV-7 reference, padding invariance, the FastConformer swap with a
training step, and a save/restore round trip with identical transcripts (all on CPU, tiny sizes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from birwkv7.layer import BiRWKV7Context, BiRWKV7TimeMix, reverse_valid

ROOT = Path(__file__).resolve().parents[1]
HEAD = 16  # tiny model: d_model 32 -> 2 heads of 16 (the attention's own head size)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------------------
# Pure torch: the layer itself.


def _perturbed(m: BiRWKV7TimeMix, seed: int) -> BiRWKV7TimeMix:
    # The reference init zeroes the output projection and the LoRA inputs; perturb every parameter so no
    # term of the computation can hide behind a zero.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _naive_direction(m: BiRWKV7TimeMix, x: torch.Tensor, v_first: torch.Tensor | None):
    """One direction of the RWKV-7 time mix for a single sequence x (T, C), written step by step from the
    formulas (independent of BiRWKV7TimeMix.mix). Returns (pre-output y (T, C), v_first)."""
    T, C = x.shape
    H, N = m.n_heads, m.head_size

    def lin(layer: torch.nn.Linear, z: torch.Tensor) -> torch.Tensor:
        return z @ layer.weight.T + layer.bias

    prev = torch.cat([torch.zeros(1, C, dtype=x.dtype), x[:-1]])
    xx = prev - x
    xr, xw, xk, xv, xa, xg = (x + xx * c for c in (m.x_r, m.x_w, m.x_k, m.x_v, m.x_a, m.x_g))
    r = lin(m.receptance, xr)
    w = -F.softplus(-(m.w0 + torch.tanh(xw @ m.w1) @ m.w2)) - 0.5
    k = lin(m.key, xk)
    v = lin(m.value, xv)
    if v_first is None:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(m.v0 + (xv @ m.v1) @ m.v2)
    a = torch.sigmoid(m.a0 + (xa @ m.a1) @ m.a2)
    g = torch.sigmoid(xg @ m.g1) @ m.g2
    kk = k * m.k_k
    kk = torch.cat(
        [
            kk[:, h * N : (h + 1) * N] / kk[:, h * N : (h + 1) * N].norm(dim=1, keepdim=True).clamp_min(1e-12)
            for h in range(H)
        ],
        dim=1,
    )
    k = k * (1 + (a - 1) * m.k_a)

    y = torch.zeros(T, C, dtype=x.dtype)
    for h in range(H):
        sl = slice(h * N, (h + 1) * N)
        S = torch.zeros(N, N, dtype=x.dtype)  # [value, key]
        for t in range(T):
            decay = torch.exp(-torch.exp(w[t, sl]))
            S = (
                S * decay[None, :]
                + torch.outer(S @ (-kk[t, sl]), kk[t, sl] * a[t, sl])
                + torch.outer(v[t, sl], k[t, sl])
            )
            y[t, sl] = S @ r[t, sl]
        # GroupNorm over this head's channels, then the affine part.
        yh = y[:, sl]
        yh = (yh - yh.mean(dim=1, keepdim=True)) / torch.sqrt(
            yh.var(dim=1, unbiased=False, keepdim=True) + m.ln_x.eps
        )
        y[:, sl] = yh * m.ln_x.weight[sl] + m.ln_x.bias[sl]
        bonus = (r[:, sl] * k[:, sl] * m.r_k[h]).sum(dim=1, keepdim=True) * v[:, sl]
        y[:, sl] = y[:, sl] + bonus
    return y * g, v_first


def _naive_bidirectional(layers: list[BiRWKV7TimeMix], x: torch.Tensor) -> torch.Tensor:
    """Stack of time mixes (each added to the residual stream), both directions by hand, one sequence."""
    vf_fwd = vf_bwd = None
    for m in layers:
        y_f, vf_fwd = _naive_direction(m, x, vf_fwd)
        y_b, vf_bwd = _naive_direction(m, x.flip(0), vf_bwd)
        s = torch.sigmoid(m.dir_gate).repeat_interleave(m.head_size)
        merged = s * y_f + (1 - s) * y_b.flip(0)
        x = x + merged @ m.output.weight.T + m.output.bias
    return x


def _run_stack(layers: list[BiRWKV7TimeMix], x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    v_first = None
    for m in layers:
        out, v_first = m.mix(x, pad_mask=pad_mask, v_first=v_first)
        x = x + out
    return x


def _stack(
    d_model: int = 32, head: int = HEAD, n_layers: int = 2, dtype=torch.float32
) -> list[BiRWKV7TimeMix]:
    torch.manual_seed(0)
    return [_perturbed(BiRWKV7TimeMix(d_model, head, i, n_layers), seed=i).to(dtype) for i in range(n_layers)]


def test_reverse_valid_reverses_only_the_valid_prefix():
    x = torch.arange(6).view(1, 6).repeat(3, 1)
    got = reverse_valid(x, torch.tensor([6, 3, 0]))
    assert got.tolist() == [[5, 4, 3, 2, 1, 0], [2, 1, 0, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    y = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 2, 5])
    assert torch.equal(reverse_valid(reverse_valid(y, lengths), lengths), y)


def test_time_mix_matches_step_by_step_rwkv7_in_both_directions():
    # Two layers (so the value residual to layer 0 is exercised), float64 so only the algebra can differ.
    layers = _stack(dtype=torch.float64)
    x = torch.randn(1, 11, 32, dtype=torch.float64)
    got = _run_stack(layers, x, None)[0]
    want = _naive_bidirectional(layers, x[0])
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # The gate really weighs the directions: with it pinned to one side the result changes.
    with torch.no_grad():
        layers[0].dir_gate.fill_(30.0)
    assert (_run_stack(layers, x, None)[0] - got).abs().max() > 1e-3


def test_padding_never_reaches_valid_frames():
    # float64: any leak would show as an O(1) difference; fp32 chunked-scan rounding (~1e-4 with these
    # deliberately large perturbed weights) would only blur the comparison.
    layers = _stack(dtype=torch.float64)
    lengths = [17, 9, 4]
    T = max(lengths)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(L, 32, generator=g, dtype=torch.float64) for L in lengths]
    batch = torch.full(
        (len(lengths), T, 32), float("nan"), dtype=torch.float64
    )  # garbage, even nan, in the padding
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    pad_mask = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    batch.requires_grad_(True)
    out = _run_stack(layers, batch, pad_mask)
    for i, s in enumerate(seqs):
        alone = _run_stack(layers, s[None], None)[0]
        torch.testing.assert_close(out[i, : len(s)] - batch[i, : len(s)], alone - s, rtol=0, atol=1e-10)
    # Layer outputs at padded frames are exactly zero, so only the (nan) residual is left there.
    one, _ = layers[0].mix(batch, pad_mask=pad_mask)
    assert torch.all(one[pad_mask] == 0)
    # No gradient flows into padding either.
    torch.where(pad_mask[..., None], 0.0, out).sum().backward()
    assert torch.all(batch.grad[pad_mask] == 0)
    assert batch.grad[~pad_mask].abs().sum() > 0


def test_time_mix_at_inference_keeps_few_full_length_tensors(monkeypatch):
    # Hours of audio in one pass need the time mix to drop its full-length intermediates as soon as they are
    # used. The scan is replaced by what the CUDA op allocates at inference (its dtype casts and y), so the
    # count is the layer's own; the profiler's allocator events make it exact. Unit: one (2B, T, C) fp32
    # tensor, the size of every per-direction intermediate. Keeping them all alive until return cost 18.5.
    import birwkv7.layer as layer_module
    from enhi.long_audio import peak_memory_bytes

    def scan_allocations_only(r, w, k, v, a, b, backend):
        kernel_inputs = [t.to(torch.float32).contiguous() for t in (r, w, k, v, a, b)]
        return torch.zeros_like(kernel_inputs[0])

    monkeypatch.setattr(layer_module, "_wkv7", scan_allocations_only)
    C, T = 256, 2000
    mix = BiRWKV7TimeMix(C, head_size=64, layer_id=1, n_layers=4).eval()
    x, v_first = torch.randn(1, T, C), torch.randn(2, T, C)
    with torch.no_grad():
        peak = peak_memory_bytes(lambda: mix.mix(x, None, v_first))
    units = peak / (2 * T * C * 4)
    # r, w, k, v, -kk, kk*a, g and y are the irreducible eight (the scan's inputs, its gate and its output).
    assert 8.0 <= units <= 11.0, f"time mix peak is {units:.2f} full-length tensors"


def test_nemo_call_signature_uses_shared_context():
    layers = _stack()
    ctx = BiRWKV7Context()
    for m in layers:
        m.context = ctx
    x = torch.randn(2, 8, 32)
    pad_mask = torch.tensor([[False] * 8, [False] * 5 + [True] * 3])
    ctx.pad_mask = pad_mask
    h = x
    for m in layers:
        h = h + m(query=h, key=h, value=h, mask=None, pos_emb=None)
    torch.testing.assert_close(h, _run_stack(layers, x, pad_mask), rtol=0, atol=0)
    # Without a context, NeMo's (B, T, T) attention mask (True = blocked) gives the same padding.
    att_mask = ~((~pad_mask)[:, :, None] & (~pad_mask)[:, None, :])
    for m in layers:
        m.context = None
    single, _ = layers[0].mix(x, pad_mask=pad_mask)
    torch.testing.assert_close(layers[0](query=x, key=x, value=x, mask=att_mask), single, rtol=0, atol=0)
    with pytest.raises(NotImplementedError):
        layers[0](query=x, key=x, value=x, cache=torch.zeros(1))


# ---------------------------------------------------------------------------------------------------------
# NeMo: the swap, a training step, save/restore.


def _tiny(en_tok_dir: Path, seed: int = 0):
    from enhi.tiny_model import build_parakeet_model

    return build_parakeet_model(en_tok_dir, seed=seed, spec_augment=False)


def _audio(seconds: float, seed: int) -> np.ndarray:
    # Not speech, but with structure (a few tones and bursts) so encoder outputs vary over time.
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    sig = sum(
        np.sin(2 * math.pi * f * t) * (0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(0.2, 2) * t))
        for f in rng.uniform(150, 2500, 4)
    )
    return (0.1 * sig + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _transcribe(model, arrays: list[np.ndarray]) -> list[str]:
    from enhi.long_audio import transcribe_arrays

    return transcribe_arrays(model, arrays)


def test_convert_swaps_every_attention_keeps_other_weights_and_trains(en_tok_dir):
    from birwkv7.convert import convert_to_birwkv7
    from birwkv7.nemo_encoder import TARGET, BiRWKV7ConformerEncoder
    from enhi.transplant import install_cpu_tdt_loss

    model = _tiny(en_tok_dir)
    old_enc = model.encoder
    old_state = {k: v.clone() for k, v in old_enc.state_dict().items()}
    convert_to_birwkv7(model, head_size=HEAD, init="attention")

    enc = model.encoder
    assert isinstance(enc, BiRWKV7ConformerEncoder) and enc is not old_enc
    assert model.cfg.encoder._target_ == TARGET and model.cfg.encoder.self_attention_model == "birwkv7"
    assert (
        model.cfg.encoder.birwkv7.head_size == HEAD and model.cfg.encoder.birwkv7.converted_from == "rel_pos"
    )
    assert len(enc.layers) == 2
    for i, layer in enumerate(enc.layers):
        mix = layer.self_attn
        assert isinstance(mix, BiRWKV7TimeMix) and mix.context is enc._birwkv7_context
        for mine, theirs in (
            ("receptance", "linear_q"),
            ("key", "linear_k"),
            ("value", "linear_v"),
            ("output", "linear_out"),
        ):
            assert torch.equal(getattr(mix, mine).weight, old_state[f"layers.{i}.self_attn.{theirs}.weight"])
            assert torch.equal(getattr(mix, mine).bias, old_state[f"layers.{i}.self_attn.{theirs}.bias"])
    # Every non-attention weight carried over; no positional table, no attention parameter left.
    new_state = enc.state_dict()
    carried = [k for k in old_state if ".self_attn." not in k and not k.startswith("pos_enc.")]
    assert len(carried) > 40
    for k in carried:
        assert torch.equal(new_state[k], old_state[k]), k
    assert not any(k.startswith("pos_enc.") or "linear_pos" in k or "pos_bias" in k for k in new_state)
    # No (B, T, T) mask is ever built.
    pad_mask, att_mask = enc._create_masks([-1, -1], torch.tensor([5, 3]), 5, None, torch.device("cpu"))
    assert att_mask is None and pad_mask.tolist()[1] == [False, False, False, True, True]

    # Random initialisation instead: the output projection starts at zero (each layer an identity).
    rnd = convert_to_birwkv7(_tiny(en_tok_dir), head_size=HEAD, init="random")
    assert all(torch.count_nonzero(m.output.weight) == 0 for m in rnd.encoder.time_mixes)

    # One training step with the model's own losses (TDT via the project's CPU loss, plus aux CTC).
    install_cpu_tdt_loss(model)
    model.train()
    torch.manual_seed(0)
    audio = [_audio(2.0, 1), _audio(1.4, 2)]
    sig = torch.zeros(2, len(audio[0]))
    for i, a in enumerate(audio):
        sig[i, : len(a)] = torch.from_numpy(a)
    lens = torch.tensor([len(a) for a in audio])
    targets = torch.tensor([[5, 17, 99, 3], [42, 8, 0, 0]])
    target_len = torch.tensor([4, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.encoder.named_parameters() if ".self_attn." in n}

    def step() -> tuple[float, list[str]]:
        enc_out, enc_len = model.forward(input_signal=sig, input_signal_length=lens)
        dec, _, _ = model.decoder(targets=targets, target_length=target_len)
        joint = model.joint.joint(enc_out.transpose(1, 2), dec.transpose(1, 2))
        tdt = model.loss(log_probs=joint, targets=targets, input_lengths=enc_len, target_lengths=target_len)
        log_probs = model.ctc_decoder(encoder_output=enc_out)
        ctc = model.ctc_loss(
            log_probs=log_probs, targets=targets, input_lengths=enc_len, target_lengths=target_len
        )
        loss = 0.7 * tdt + 0.3 * ctc
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        silent = sorted(
            n.removeprefix("layers.")
            for n, p in model.encoder.named_parameters()
            if ".self_attn." in n and (p.grad is None or p.grad.abs().sum() == 0)
        )
        opt.step()
        return loss.item(), silent

    loss1, silent1 = step()
    assert math.isfinite(loss1) and loss1 > 0
    # RWKV-7's reference init zeroes the LoRA down-projections (w1, a1, g1, and v1), so on the first step the
    # up-projections (w2, a2, v2) and the lerp coefficients that only feed them (x_w, x_a, x_g) get no
    # gradient; layer 0 has no v0/v1/v2 (its values *are* v_first, as in the reference).
    assert not hasattr(model.encoder.layers[0].self_attn, "v0")
    assert silent1 == sorted(
        [f"0.self_attn.{p}" for p in ["a2", "w2", "x_a", "x_g", "x_w"]]
        + [f"1.self_attn.{p}" for p in ["a2", "v2", "w2", "x_a", "x_g", "x_w"]]
    )
    loss2, silent2 = step()
    assert math.isfinite(loss2)
    # From the second step on every time-mix parameter learns: none is unused (DDP requires that).
    assert silent2 == []
    changed = [
        n for n, p in model.encoder.named_parameters() if n in before and not torch.equal(p, before[n])
    ]
    assert len(changed) == len(before)
    # The context holds nothing after the forward (no graph kept alive between steps).
    assert model.encoder._birwkv7_context.v_first is None and model.encoder._birwkv7_context.pad_mask is None


def test_encoder_layers_are_padding_invariant(en_tok_dir):
    from birwkv7.convert import convert_to_birwkv7

    model = convert_to_birwkv7(_tiny(en_tok_dir), head_size=HEAD, init="attention")
    enc = model.encoder.eval()
    g = torch.Generator().manual_seed(3)
    long, short = torch.randn(1, 40, 32, generator=g), torch.randn(1, 23, 32, generator=g)
    batch = torch.cat([long, F.pad(short, (0, 0, 0, 17), value=7.0)])
    with torch.no_grad():
        out_b, len_b = enc(audio_signal=batch, length=torch.tensor([40, 23]), bypass_pre_encode=True)
        out_l, _ = enc(audio_signal=long, length=torch.tensor([40]), bypass_pre_encode=True)
        out_s, _ = enc(audio_signal=short, length=torch.tensor([23]), bypass_pre_encode=True)
    assert len_b.tolist() == [40, 23]
    torch.testing.assert_close(out_b[0], out_l[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_b[1, :, :23], out_s[0], rtol=0, atol=1e-5)


def test_save_restore_round_trip_transcribes_identically(en_tok_dir, tmp_path):
    from birwkv7.convert import convert_to_birwkv7, restore
    from birwkv7.nemo_encoder import BiRWKV7ConformerEncoder

    model = convert_to_birwkv7(_tiny(en_tok_dir, seed=1), head_size=HEAD, init="attention")
    # Make the time-mix weights distinguishable from any fresh initialisation.
    for m in model.encoder.time_mixes:
        _perturbed(m, seed=m.layer_id + 10)
    model.eval()
    audio = [_audio(3.0, 5), _audio(2.2, 6)]
    before = _transcribe(model, audio)
    assert any(len(t) > 0 for t in before)

    path = tmp_path / "birwkv7_tiny.nemo"
    model.save_to(str(path))
    # `restore` is ASRModel.restore_from after importing birwkv7.nemo_encoder (which lets NeMo instantiate
    # the encoder's _target_): the saved config alone rebuilds the same module tree.
    restored = restore(path).eval()
    assert isinstance(restored.encoder, BiRWKV7ConformerEncoder)
    assert restored.cfg.encoder.birwkv7.head_size == HEAD
    want, got = model.state_dict(), restored.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert _transcribe(restored, audio) == before


# ---------------------------------------------------------------------------------------------------------
# Mixed precision: what GPU training (bf16-mixed) and long-audio inference (bf16 autocast) run.


def _realistic_stack(C: int, device: str, backend: str) -> list[BiRWKV7TimeMix]:
    # Reference init zeroes the output projection and LoRA inputs; perturb at the scale trained weights have
    # (matrices ~ 1/sqrt(fan_in), vectors O(0.1)) so every term is live without blowing up activations.
    torch.manual_seed(0)
    layers = [BiRWKV7TimeMix(C, 64, i, 2, backend=backend) for i in range(2)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in layers:
            for p in m.parameters():
                scale = p.shape[0] ** -0.5 if p.dim() == 2 else 0.1
                p.add_(scale * torch.randn(p.shape, generator=g))
    return [m.to(device) for m in layers]


def _bf16_autocast_vs_fp32(
    device: str, backend: str, C: int = 128, lengths: tuple[int, ...] = (300, 170)
) -> dict[str, float]:
    """Relative errors of a 2-layer stack (heads of 64) on a padded batch under bf16 autocast with `backend`,
    against the same stack in fp32 on the torch backend: layer outputs, input grad, the worst single
    parameter's grad, and all parameter grads as one vector."""
    T = max(lengths)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(len(lengths), T, C, generator=g).to(device)
    gy = torch.randn(len(lengths), T, C, generator=g).to(device)
    pad_mask = torch.arange(T, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]

    def run(layers: list[BiRWKV7TimeMix], amp: bool):
        xi = x.clone().requires_grad_(True)
        outs, v_first, h = [], None, xi
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            for m in layers:
                out, v_first = m.mix(h, pad_mask=pad_mask, v_first=v_first)
                outs.append(out.float())
                h = h + out
        (h.float() * gy).sum().backward()
        grads = {f"{j}.{n}": p.grad for j, m in enumerate(layers) for n, p in m.named_parameters()}
        return torch.cat(outs), xi.grad, grads

    y32, gx32, gp32 = run(_realistic_stack(C, device, "torch"), amp=False)
    y16, gx16, gp16 = run(_realistic_stack(C, device, backend), amp=True)
    assert all(gp16[n].dtype == torch.float32 and torch.isfinite(gp16[n]).all() for n in gp16)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm()).item()

    names = sorted(gp32)
    return {
        "outputs": rel(y16, y32),
        "input grad": rel(gx16, gx32),
        # The merge gate's grad sums (y_fwd - y_bwd) * grad over every frame: a difference of two similar
        # quantities, so its rounding error is large relative to it (2-4% here). It counts in the vector below.
        "worst parameter grad": max(rel(gp16[n], gp32[n]) for n in names if not n.endswith("dir_gate")),
        "all parameter grads": rel(torch.cat([gp16[n].flatten() for n in names]), torch.cat([gp32[n].flatten() for n in names])),
    }


# bf16 keeps 8 significant bits (rounding 2^-9 per value). Measured here: outputs 1.0%, input grad 1.1%, worst
# parameter grad 1.8%, all parameter grads 1.1%; rounding the decay itself to bf16 (a kernel taking d instead
# of w) sends the decay parameters' grads to 5-9%. Kept to a small width on purpose: RWKV-7's per-head
# GroupNorm (eps 6.4e-4) blows up frames whose head output nearly cancels, so at width 1024 with random weights
# one such frame lets any bf16 rounding move a few parameter grads by 27% (attention under this test: 0.7%).
BF16_TOLERANCE = {"outputs": 0.03, "input grad": 0.03, "worst parameter grad": 0.035, "all parameter grads": 0.025}


def _assert_within_bf16_tolerance(errors: dict[str, float]) -> None:
    assert all(errors[name] < limit for name, limit in BF16_TOLERANCE.items()), errors


@pytest.mark.parametrize("scan_inputs", ["as autocast leaves them", "all bf16, as the CUDA backend casts them"])
def test_bf16_autocast_tracks_fp32_on_cpu(monkeypatch, scan_inputs):
    import birwkv7.layer as layer_module

    if scan_inputs.startswith("all bf16"):
        # Under autocast w, k, a, b arrive in fp32 and r in bf16; wkv7_cuda casts all six to kernel_dtype(r).
        from birwkv7.cuda_backend import kernel_dtype

        scan = layer_module._wkv7

        def bf16_scan(r, w, k, v, a, b, backend):
            assert r.dtype == torch.bfloat16 or not torch.is_autocast_enabled("cpu")
            return scan(*(t.to(kernel_dtype(r.dtype)) for t in (r, w, k, v, a, b)), backend)

        monkeypatch.setattr(layer_module, "_wkv7", bf16_scan)
    errors = _bf16_autocast_vs_fp32("cpu", "torch")
    _assert_within_bf16_tolerance(errors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs the wkv7 CUDA kernels")
def test_bf16_autocast_with_cuda_kernels_tracks_fp32():
    errors = _bf16_autocast_vs_fp32("cuda", "cuda")
    _assert_within_bf16_tolerance(errors)
