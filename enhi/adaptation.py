"""Where fine-tuning updates go after the vocabulary change: faster new rows, an encoder held for a warm-up.

Both are Lightning callbacks that work with any optimizer (AdamW, 8-bit AdamW) and with resume:
- `NewRowsLrScale`: the new tokens' rows (joint and CTC output rows and biases, decoder-embedding rows) learn
  `scale` times faster than everything else. The transplant starts them several nats below the old logits
  (the step-0 guarantee); at the base learning rate an Adam update moves a bias by about `lr` per step, so
  climbing out takes thousands of steps: the "mute" stage. Adam's update is invariant to gradient scale, so
  scaling gradients would do nothing; instead the step's change to those rows is multiplied after the
  optimizer made it, which is exactly a `scale`x learning rate for them (weight decay included).
- `EncoderWarmupFreeze`: for the first `steps` optimizer steps the encoder gets no update (its gradients are
  dropped and it runs in eval mode, so BatchNorm statistics and dropout stay as pretrained) while the heads
  learn the new tokens; then it is released.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from enhi.transplant import VocabLayout


def new_token_rows(model) -> list[tuple[torch.nn.Parameter, slice]]:
    """(parameter, rows) of the tokens added by the vocabulary change, read from the model's transplant record."""
    layout = VocabLayout.of(model)
    old = int(model.cfg.vocab_transplant.old_vocab_size)
    rows = slice(old, layout.vocab_size)
    lin = model.joint.joint_net[-1]
    out = [(model.decoder.prediction["embed"].weight, rows), (lin.weight, rows), (lin.bias, rows)]
    if hasattr(model, "ctc_decoder"):
        conv = model.ctc_decoder.decoder_layers[-1]
        out += [(conv.weight, rows), (conv.bias, rows)]
    return out


class NewRowsLrScale(pl.Callback):
    """Multiply each optimizer step's change to the new tokens' rows by `scale` (see the module doc)."""

    def __init__(self, rows: list[tuple[torch.nn.Parameter, slice]], scale: float):
        self.rows, self.scale = rows, float(scale)
        self._before: list[torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._before = [p.detach()[r].clone() for p, r in self.rows]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is None:  # gradient accumulation: no optimizer step after this micro-batch
            return
        with torch.no_grad():
            for (p, r), before in zip(self.rows, self._before, strict=True):
                p[r] = before + self.scale * (p[r] - before)
        self._before = None


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


def adaptation_callbacks(model, cfg) -> list[pl.Callback]:
    """The callbacks `cfg.model.adaptation` asks for (none for a model whose vocabulary was not transplanted)."""
    a = cfg.model.adaptation
    out: list[pl.Callback] = []
    transplanted = model.cfg.get("vocab_transplant") is not None
    if transplanted and a.new_rows_lr_scale != 1.0:
        out.append(NewRowsLrScale(new_token_rows(model), a.new_rows_lr_scale))
    if a.freeze_encoder_steps > 0:
        out.append(EncoderWarmupFreeze(a.freeze_encoder_steps))
    return out
