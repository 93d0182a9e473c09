"""The new tokens' rows, and the per-row rewrite of an optimizer step that the ways of placing updates share
(`enhi.adaptation`'s faster new rows, `enhi.adapters`' held pretrained rows; `enhi.forgetting` and
`enhi.reset` leave these rows free)."""

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


class EditStepOnRows(pl.Callback):
    """Rewrites each optimizer step's change to some rows of some parameters, after the optimizer made it
    (exact with any optimizer, weight decay included): `edit(now, before)` gives the rows' new values."""

    def __init__(self, rows: list[tuple[torch.nn.Parameter, slice]]):
        self.rows = rows
        self._before: list[torch.Tensor] | None = None

    def edit(self, now: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._before = [p.detach()[r].clone() for p, r in self.rows]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is None:  # gradient accumulation: no optimizer step after this micro-batch
            return
        with torch.no_grad():
            for (p, r), before in zip(self.rows, self._before, strict=True):
                p[r] = self.edit(p[r], before)
        self._before = None


def old_language_rows(transcript: torch.Tensor, transcript_len: torch.Tensor, n_old: int) -> torch.Tensor:
    """Indices of the utterances written only with old tokens (padding ignored)."""
    pos = torch.arange(transcript.shape[1], device=transcript.device)
    new = (transcript >= n_old) & (pos[None, :] < transcript_len[:, None])
    return torch.nonzero(~new.any(dim=1)).flatten()


def training_entries_by_language(cfg, model) -> tuple[list, list]:
    """The utterances of the plain training manifests (empty transcripts left out), in manifest order, split by
    their tokens: (written only with the pretrained model's tokens, the others)."""
    from enhi.config import train_manifests
    from enhi.manifest import read_manifest

    n_old = int(model.cfg.vocab_transplant.old_vocab_size)
    old, new = [], []
    for s in train_manifests(cfg):
        if s.type == "nemo":
            for e in read_manifest(s.path, check_audio=False):
                if e.text.strip():
                    (old if max(model.tokenizer.text_to_ids(e.text)) < n_old else new).append(e)
    return old, new
