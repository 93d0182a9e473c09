"""Where fine-tuning updates go after the vocabulary change: pretrained weights at their own rates, faster new
rows, an encoder held for a warm-up.

- `optimizer_param_groups`: NeMo's `optim_param_groups` for a transplanted model, the encoder at
  `encoder_lr_scale` x `model.optim.lr` and the prediction network, joint and CTC head at `heads_lr_scale` x
  lr (the schedule scales each group): a fine-tune at the pretraining rate moves the English weights about as
  far as pretraining did. What English loses first is measured in bench/bench_adaptation.py: new-language
  tokens creeping into English transcripts, which a slower pretrained model shows less of.
The others are Lightning callbacks that work with any optimizer (AdamW, 8-bit AdamW) and with resume:
- `NewRowsLrScale`: the new tokens' rows (joint and CTC output rows and biases, decoder-embedding rows) learn
  at `new_rows_lr_scale` x lr, whatever their group's rate. The transplant starts them several nats below the
  old logits (the step-0 guarantee); at the base learning rate an Adam update moves a bias by about `lr` per step, so
  climbing out takes thousands of steps: the "mute" stage. Adam's update is invariant to gradient scale, so
  scaling gradients would do nothing; instead the step's change to those rows is multiplied after the
  optimizer made it, which is exactly a `scale`x learning rate for them (weight decay included).
- `EncoderWarmupFreeze`: for the first `steps` optimizer steps the encoder gets no update (its gradients are
  dropped and it runs in eval mode, so BatchNorm statistics and dropout stay as pretrained) while the heads
  learn the new tokens; then it is released.
- `AverageWithPretrained`: at the last training step, every weight the pretrained model had is replaced by
  (1 - w) x fine-tuned + w x pretrained (weight averaging against forgetting, Vander Eeckt & Van hamme, arXiv
  2210.15282); the new tokens' rows keep their fine-tuned values, since their starting point is a construction
  of the transplant, not anything the pretrained model knew. It runs before the last validation and checkpoint,
  so both, and the final .nemo, are of the averaged model.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from enhi.errors import UserError
from enhi.forgetting import Anchor, Distillation
from enhi.rows import EditStepOnRows, new_token_rows


class NewRowsLrScale(EditStepOnRows):
    """Multiply each optimizer step's change to the new tokens' rows by `scale` (see the module doc)."""

    def __init__(self, rows: list[tuple[torch.nn.Parameter, slice]], scale: float):
        super().__init__(rows)
        self.scale = float(scale)

    def edit(self, now: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        return before + self.scale * (now - before)


class EncoderWarmupFreeze(pl.Callback):
    """No encoder update for the first `steps` optimizer steps (see the module doc)."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def _frozen(self, trainer) -> bool:
        return trainer.global_step < self.steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.encoder.train(not self._frozen(trainer))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._frozen(trainer):
            for p in pl_module.encoder.parameters():
                p.grad = None


class AverageWithPretrained(pl.Callback):
    """At step `max_steps`, average each pretrained weight with its value now (see the module doc)."""

    def __init__(self, model, weight: float, max_steps: int):
        if not 0.0 < weight < 1.0:
            raise ValueError(f"average_with_pretrained must be in (0, 1), got {weight}")
        self.weight, self.max_steps = float(weight), int(max_steps)
        # Taken before training, so before any checkpoint is restored: on resume this is still the adapted
        # pretrained model. Kept on the CPU: one copy of the weights, off the accelerator.
        self.pretrained = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
        self.new_rows = {id(p): r for p, r in new_token_rows(model)}
        self.done = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done or trainer.global_step < self.max_steps:
            return
        w = self.weight
        with torch.no_grad():
            for name, p in pl_module.named_parameters():
                old = self.pretrained[name].to(p.device, p.dtype)
                mixed = (1 - w) * p + w * old
                r = self.new_rows.get(id(p))
                if r is not None:
                    mixed[r] = p[r]
                p.copy_(mixed)
        self.done = True


HEADS = ("decoder", "joint", "ctc_decoder")  # the model's modules after the encoder (NeMo's attribute names)


def _transplanted(model) -> bool:
    return model.cfg.get("vocab_transplant") is not None


GATED_ADAPTER_DIM = 64  # the gated mode's adapter width when adapter_dim is 0 (bench arm gated)


def adapter_width(cfg) -> int:
    """The adapters' bottleneck: `adapter_dim`, or `GATED_ADAPTER_DIM` for the gated mode left at 0."""
    a = cfg.model.adaptation
    return int(a.adapter_dim) or (GATED_ADAPTER_DIM if a.gate_by_language else 0)


def new_language(cfg) -> str:
    """The one language the training manifests add to the base model's (the gated mode has one new path)."""
    from enhi.lang_hint import BASE_LANG

    langs = sorted({s.lang for s in cfg.model.train_ds.manifests} - {BASE_LANG})
    if len(langs) != 1:
        raise UserError(f"model.adaptation.gate_by_language gates {BASE_LANG!r} against one new language; the training "
                        f"manifests hold {langs or 'none'} besides it")
    return langs[0]


def _scales(cfg) -> tuple[float, float]:
    """(encoder, heads) learning-rate scales. In the gated mode they hold only adapters and new rows (English is
    safe by construction), so both are 1."""
    a = cfg.model.adaptation
    return (1.0, 1.0) if a.gate_by_language else (float(a.encoder_lr_scale), float(a.heads_lr_scale))


def optimizer_param_groups(model, cfg) -> dict[str, dict[str, float]] | None:
    """NeMo's `optim_param_groups` (module name -> {"lr": ...}) for a transplanted model; None, one group at
    `model.optim.lr`, for NeMo's plain vocabulary change, whose output layers are new and need the full rate."""
    if not _transplanted(model):
        return None
    lr = float(cfg.model.optim.lr)
    enc, heads = _scales(cfg)
    groups = {"encoder": {"lr": lr * enc}}
    groups.update({name: {"lr": lr * heads} for name in HEADS if hasattr(model, name)})
    return groups


def adaptation_callbacks(model, cfg) -> list[pl.Callback]:
    """The callbacks `cfg.model.adaptation` asks for (none for a model whose vocabulary was not transplanted)."""
    a = cfg.model.adaptation
    out: list[pl.Callback] = []
    # The new rows sit in the heads' group, which the optimizer already runs at heads_lr_scale x lr.
    row_scale = a.new_rows_lr_scale / _scales(cfg)[1]
    if _transplanted(model) and row_scale != 1.0:
        out.append(NewRowsLrScale(new_token_rows(model), row_scale))
    if a.freeze_encoder_steps > 0:
        out.append(EncoderWarmupFreeze(a.freeze_encoder_steps))
    if _transplanted(model) and adapter_width(cfg) > 0:
        from enhi.adapters import HoldPretrained

        out.append(HoldPretrained(model, new_token_rows(model)))
    if _transplanted(model) and a.gate_by_language:
        from enhi.language_gate import FitRouter, GateByLanguage

        out += [GateByLanguage(model), FitRouter(cfg, a.router_utterances)]
    if _transplanted(model) and a.distill_weight > 0:
        out.append(Distillation(model, a.distill_weight, a.distill_on))
    if _transplanted(model) and a.anchor_weight > 0:
        out.append(Anchor(model, a.anchor_weight, a.anchor_fisher, cfg, a.fisher_utterances))
    if _transplanted(model) and a.average_with_pretrained > 0:
        out.append(AverageWithPretrained(model, a.average_with_pretrained, cfg.trainer.max_steps))
    return out

