"""Where fine-tuning updates go: new rows at a higher learning rate (exactly), an encoder held for a warm-up, a
final average with the pretrained weights."""

from __future__ import annotations

import pytest
import torch
from conftest import MERGED_DIR, ROOT, assert_averaged

from demo.common import DEMO_SETTINGS
from enhi.adaptation import (
    AverageWithPretrained,
    EncoderWarmupFreeze,
    NewRowsLrScale,
    adaptation_callbacks,
    new_token_rows,
)
from enhi.config import load_run_config
from enhi.tiny_model import build_parakeet_model
from enhi.transplant import change_vocabulary


def _adapted(en_tok_dir, seed: int = 0):
    model = build_parakeet_model(en_tok_dir, seed=seed)
    change_vocabulary(model, str(MERGED_DIR), transplant=True)
    return model


def _step(model, opt, callbacks) -> None:
    """One optimizer step with the callbacks' hooks where Lightning calls them."""
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    for cb in callbacks:
        cb.on_before_optimizer_step(None, model, opt)
    opt.step()
    for cb in callbacks:
        cb.on_train_batch_end(None, model, None, None, 0)


def test_new_rows_move_scale_times_as_far_as_adamw_moves_them(en_tok_dir):
    """AdamW's first step is -lr * (g / (|g| + eps) + wd * p) per weight; the new rows' step is `scale` times that
    (weight decay included), every other weight's is exactly AdamW's."""
    model = _adapted(en_tok_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr, wd, eps, scale = 1e-3, 1e-2, 1e-8, 7.0
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, eps=eps)
    _step(model, opt, [NewRowsLrScale(new_token_rows(model), scale)])
    g = torch.Generator().manual_seed(1)
    rows = {id(p): r for p, r in new_token_rows(model)}
    assert len(rows) == 5  # embedding, joint weight and bias, CTC weight and bias
    for (name, p), grad in zip(model.named_parameters(), [torch.randn(p.shape, generator=g) for p in model.parameters()],
                               strict=True):
        p0 = before[name]
        adamw = -lr * (grad / (grad.abs() + eps) + wd * p0)
        want = p0 + adamw
        if id(p) in rows:
            r = rows[id(p)]
            want[r] = p0[r] + scale * adamw[r]
        assert torch.allclose(p.detach(), want, atol=1e-7, rtol=1e-5), name
    old = int(model.cfg.vocab_transplant.old_vocab_size)
    assert rows[id(model.joint.joint_net[-1].weight)] == slice(old, model.tokenizer.vocab_size)


def test_encoder_warmup_freeze_holds_weights_and_statistics_then_releases(en_tok_dir):
    model = _adapted(en_tok_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    freeze = EncoderWarmupFreeze(steps=2)

    class Trainer:
        global_step = 0

    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec_before = model.decoder.prediction["embed"].weight.detach().clone()
    for step in range(3):
        Trainer.global_step = step
        freeze.on_train_batch_start(Trainer, model, None, 0)
        assert model.encoder.training == (step >= 2)  # eval while held: BatchNorm statistics and dropout as pretrained
        if step < 2:  # a forward pass in the held state must not move BatchNorm statistics either
            model.encoder(audio_signal=torch.randn(2, 80, 64), length=torch.tensor([64, 50]))
        g = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        freeze.on_before_optimizer_step(Trainer, model, opt)
        opt.step()
        held = all(torch.equal(v, enc_before[k]) for k, v in model.encoder.state_dict().items())
        assert held == (step < 2), step
    assert not torch.equal(model.decoder.prediction["embed"].weight, dec_before)  # the heads learned meanwhile


def test_yaml_settings_attach_the_callbacks(en_tok_dir):
    model = _adapted(en_tok_dir)
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + ["model.adaptation.new_rows_lr_scale=4",
                                                             "model.adaptation.heads_lr_scale=0.5",
                                                             "model.adaptation.freeze_encoder_steps=5",
                                                             "model.adaptation.average_with_pretrained=0.4",
                                                             "trainer.max_steps=30"])
    cbs = adaptation_callbacks(model, cfg)
    assert [type(c).__name__ for c in cbs] == ["NewRowsLrScale", "EncoderWarmupFreeze", "AverageWithPretrained"]
    assert cbs[0].scale == 8.0 and cbs[1].steps == 5  # 4x lr, in a group that runs at 0.5x lr
    assert cbs[2].weight == 0.4 and cbs[2].max_steps == 30
    # Plain change_vocabulary has no transplanted rows to speed up.
    plain = build_parakeet_model(en_tok_dir)
    change_vocabulary(plain, str(MERGED_DIR), transplant=False)
    assert [type(c).__name__ for c in adaptation_callbacks(plain, cfg)] == ["EncoderWarmupFreeze"]
    _, off = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + ["model.adaptation.new_rows_lr_scale=1",
                                                             "model.adaptation.heads_lr_scale=1"])
    assert adaptation_callbacks(model, off) == []


def test_encoder_heads_and_new_rows_take_one_adamw_step_at_their_own_rates(en_tok_dir):
    """NeMo's optimizer and schedule, built from the YAML with encoder_lr_scale, heads_lr_scale and
    new_rows_lr_scale: AdamW's first step moves every weight by -lr x (its scale) x (g/|g| + wd p), the encoder's
    at 0.25, the heads' at 0.5, the new rows' at new_rows_lr_scale (10)."""
    from enhi.adaptation import HEADS
    from enhi.training import configure_model

    lr, wd = 1e-3, 1e-3
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [
        f"model.optim.lr={lr}", f"model.optim.weight_decay={wd}", "model.optim.sched.warmup_steps=0",
        "model.adaptation.encoder_lr_scale=0.25", "model.adaptation.heads_lr_scale=0.5",
        "model.adaptation.new_rows_lr_scale=10", "model.adaptation.freeze_encoder_steps=0", "trainer.max_steps=100"])
    model = _adapted(en_tok_dir)
    configure_model(model, cfg, bnb_optim=False)
    model.setup_optimization(optim_config=model.cfg.optim)
    opt = model._optimizer
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, opt, adaptation_callbacks(model, cfg))
    g = torch.Generator().manual_seed(1)
    grads = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    rows = {id(p): r for p, r in new_token_rows(model)}
    for name, p in model.named_parameters():
        unit = -lr * (grads[name] / (grads[name].abs() + 1e-8) + wd * before[name])  # AdamW's first step at lr
        want = torch.full_like(unit, 0.25 if name.startswith("encoder.") else 0.5 if name.split(".")[0] in HEADS
                               else 1.0)
        if id(p) in rows:
            want[rows[id(p)]] = 10.0
        assert torch.allclose(p.detach(), before[name] + want * unit, atol=1e-7, rtol=1e-5), name
    # NeMo's plain change keeps one group at the YAML's rate (its output layers are all new).
    plain = build_parakeet_model(en_tok_dir)
    change_vocabulary(plain, str(MERGED_DIR), transplant=False)
    configure_model(plain, cfg, bnb_optim=False)
    plain.setup_optimization(optim_config=plain.cfg.optim)
    assert [grp["lr"] for grp in plain._optimizer.param_groups] == [lr]


def test_average_with_pretrained_mixes_the_old_weights_at_the_last_step_and_keeps_the_new_rows(en_tok_dir):
    """Steps before `max_steps` are plain AdamW; at `max_steps` every weight becomes (1 - w) x trained + w x the
    adapted model's before training, except the new tokens' rows, which stay as trained."""
    from types import SimpleNamespace

    w = 0.3
    model, ref = _adapted(en_tok_dir), _adapted(en_tok_dir)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    avg = AverageWithPretrained(model, w, max_steps=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    trainer = SimpleNamespace(global_step=1)

    def step(m, o, cbs) -> None:
        g = torch.Generator().manual_seed(trainer.global_step)
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        o.step()
        for cb in cbs:
            cb.on_train_batch_end(trainer, m, None, None, 0)

    step(model, opt, [avg])
    step(ref, ref_opt, [])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True))  # not yet
    trainer.global_step = 2
    step(model, opt, [avg])
    step(ref, ref_opt, [])
    assert_averaged(model, ref, start, w, atol=1e-7, rtol=1e-6)
    # Every tensor has pretrained entries, so every one was mixed.
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True))
    trainer.global_step = 3  # once only: a later batch end (e.g. the same step seen again) changes nothing
    before = [p.detach().clone() for p in model.parameters()]
    avg.on_train_batch_end(trainer, model, None, None, 0)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("value, message", [("1.0", r"must be in \[0, 1\)"), ("-0.1", r"must be in \[0, 1\)")])
def test_average_with_pretrained_outside_0_1_is_a_one_line_error(value, message):
    from enhi.errors import UserError

    with pytest.raises(UserError, match=r"ft_110M_enhi.yaml: model.adaptation.average_with_pretrained=.*" + message):
        load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [f"model.adaptation.average_with_pretrained={value}"])
