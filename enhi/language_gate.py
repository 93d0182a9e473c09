"""The language-gated mode: English output is the pretrained model's, exactly, whenever the language is known.

With `model.adaptation.gate_by_language: true` every pretrained weight is held (as in the adapters arm,
enhi/adapters.py) and the new language is learned only by new capacity: residual adapters in each encoder layer,
after the prediction network and in the joint, and the new tokens' rows. The gate switches that capacity per
utterance:

* the new-language path: adapters on, every token (what stock NeMo runs on the saved .nemo: its adapters are
  saved enabled);
* the base path (English): every adapter's output multiplied by 0 (x + 0 is x, bit for bit) and the new tokens'
  logits, in the joint and the CTC head, pushed `PENALTY` below the rest (exp(-1e4) is 0 in float32), so the
  model is the pretrained one and writes only the pretrained tokens.

In training the path of each utterance is read from its transcript (one written only with the pretrained
model's tokens is English: `enhi.rows.old_language_rows`), so mixed batches gate per utterance; English
utterances then train nothing (nothing they reach can move). Validation and `eval_nemo.py` decode each set on
its language's path; `language_path(model, lang)` does it for any code.

Without a language (`lang="auto"`), `route` picks the path per utterance: a logistic regression on the
pretrained encoder's time-averaged output. The encoder is held, so the router can be fit once, before training,
on training utterances of each language (`router_utterances` of them; rank 0 fits it into
`<run folder>/router.json`, which every rank and a resumed run reuse) and it stays valid for the whole run. It
travels in the .nemo's config (`language_gate.router`), which stock NeMo ignores.

The hooks are Python forward hooks on the model's own modules (`install`), added when the model is loaded or
configured by this project; a .nemo records the mode in `cfg.language_gate`.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

from enhi.errors import UserError
from enhi.lang_hint import BASE_LANG, PENALTY, allowed_token_ids, restricted_to
from enhi.rows import old_language_rows, training_entries_by_language

KEY = "language_gate"  # model.cfg key: {base, new, router}
ROUTER_FILE = "router.json"
AUTO = "auto"  # the language argument that asks the router
_ADAPTER = re.compile(r"\.adapter_layer\.[^.]+$")  # NeMo's LinearAdapter modules (one per adapted module)


def is_gated(model: Any) -> bool:
    return model.cfg.get(KEY) is not None


def mark(model: Any, new_lang: str) -> None:
    """Record the mode in the model's config (saved with the .nemo) and install the gate."""
    with open_dict(model.cfg):
        old = model.cfg.get(KEY) or {}
        model.cfg[KEY] = {"base": BASE_LANG, "new": new_lang, "router": old.get("router")}
    install(model)


class Gate:
    """The per-utterance switch (see the module doc). `rows`: None = new-language path everywhere (stock NeMo's
    behaviour), a bool = one path for the whole batch, a bool tensor (B,) = per utterance (True: new language)."""

    def __init__(self, model: Any):
        self.n_old = int(model.cfg.vocab_transplant.old_vocab_size)
        self.not_base = ~allowed_token_ids(model, BASE_LANG)  # the tokens the base path may not write
        self.rows: bool | torch.Tensor | None = None
        self._joint_rows: bool | torch.Tensor | None = None
        self._cursor, self._sub = 0, None
        self.handles = []
        for name, m in model.named_modules():
            if _ADAPTER.search(name):
                self.handles.append(m.register_forward_hook(self._gate_adapter_joint if name.startswith("joint.")
                                                            else self._gate_adapter))
        self.handles.append(model.joint.joint_net[-1].register_forward_hook(self._penalize_joint))
        if hasattr(model, "ctc_decoder"):
            self.handles.append(model.ctc_decoder.decoder_layers[-1].register_forward_hook(self._penalize_ctc))
        # NeMo's fused loss runs the joint on sub-batches, in order: the joint's rows follow a cursor over the batch.
        self.handles.append(model.joint.register_forward_pre_hook(self._reset_cursor))
        inner = model.joint.joint_after_projection

        def joint_after_projection(f: torch.Tensor, g: torch.Tensor):
            self._joint_rows = self._slice(f.shape[0])
            return inner(f, g)

        model.joint.joint_after_projection = joint_after_projection

    def _rows_for(self, n: int) -> bool | torch.Tensor | None:
        rows = self.rows
        if isinstance(rows, torch.Tensor) and rows.numel() != n:
            if self._sub is not None and self._sub.numel() == n:  # the fused loop's training WER decodes a sub-batch
                return self._sub
            raise RuntimeError(f"the language gate holds {rows.numel()} utterances, a module saw a batch of {n}")
        return rows

    def _slice(self, n: int) -> bool | torch.Tensor | None:
        """The rows of the joint's input: the whole batch, or in NeMo's fused loss loop the sub-batch in turn. There
        each sub-batch's loss joint (gradients on) comes first, then, every few steps, the decoding of the same
        sub-batch for the training WER (under no_grad), which keeps that sub-batch's rows."""
        rows = self.rows
        if not isinstance(rows, torch.Tensor) or rows.numel() == n:
            return rows
        if not torch.is_grad_enabled() and self._sub is not None and self._sub.numel() == n:
            return self._sub
        if self._cursor + n > rows.numel():
            raise RuntimeError(f"the joint's sub-batches exceed the gated batch of {rows.numel()}")
        self._sub = rows[self._cursor: self._cursor + n]
        self._cursor += n
        return self._sub

    def _reset_cursor(self, module, args) -> None:
        self._cursor, self._sub = 0, None

    @staticmethod
    def _scale(out: torch.Tensor, rows: bool | torch.Tensor | None) -> torch.Tensor | None:
        if rows is None or rows is True:
            return None
        if rows is False:
            return torch.zeros_like(out)
        return out * rows.to(out.device, out.dtype).view(-1, *([1] * (out.dim() - 1)))

    def _gate_adapter(self, module, args, out: torch.Tensor):
        return self._scale(out, self._rows_for(out.shape[0]))

    def _gate_adapter_joint(self, module, args, out: torch.Tensor):
        return self._scale(out, self._joint_rows)

    def _penalty(self, out: torch.Tensor, rows, dim: int) -> torch.Tensor | None:
        if rows is None or rows is True:
            return None
        cols = torch.zeros(out.shape[dim], dtype=out.dtype, device=out.device)
        cols[: self.not_base.numel()][self.not_base.to(out.device)] = PENALTY
        base = torch.ones(out.shape[0], dtype=out.dtype, device=out.device) if rows is False else \
            (~rows).to(out.device, out.dtype)
        shape = [1] * out.dim()
        shape[0], shape[dim] = -1, 1
        cshape = [1] * out.dim()
        cshape[dim] = -1
        return out - base.view(shape) * cols.view(cshape)

    def _penalize_joint(self, module, args, out: torch.Tensor):
        return self._penalty(out, self._joint_rows, out.dim() - 1)  # (B, T, U, tokens + blank + durations)

    def _penalize_ctc(self, module, args, out: torch.Tensor):
        return self._penalty(out, self._rows_for(out.shape[0]), 1)  # (B, tokens + blank, T)


def install(model: Any) -> Gate | None:
    """The model's gate, installed once (None for a model not in the mode)."""
    if not is_gated(model):
        return None
    gate = model.__dict__.get("_enhi_gate")
    if gate is None:
        gate = Gate(model)
        model.__dict__["_enhi_gate"] = gate  # not a submodule: nothing of it goes into state_dict
    return gate


def path_of(model: Any, lang: str) -> bool:
    """True for the new-language path, False for the base (pretrained) one."""
    c = model.cfg[KEY]
    if lang == c.base:
        return False
    if lang == c.new:
        return True
    raise UserError(f"this model is gated between {c.base!r} and {c.new!r}; there is no path for language {lang!r}")


@contextlib.contextmanager
def language_path(model: Any, lang: str | None) -> Iterator[None]:
    """Run `model` on `lang`'s path inside the block (no-op for an ungated model or `lang` None)."""
    gate = install(model)
    if gate is None or lang is None:
        yield
        return
    saved, gate.rows = gate.rows, path_of(model, lang)
    try:
        yield
    finally:
        gate.rows = saved


@contextlib.contextmanager
def static_path(model: Any, lang: str | None) -> Iterator[None]:
    """`lang`'s path as the model's own weights and modules, no hooks (for an export that traces the model):
    the base language's is the pretrained graph (adapters disabled, new tokens' biases `PENALTY` lower), the new
    language's the model as stock NeMo runs it."""
    if lang is None or install(model) is None or path_of(model, lang):
        yield
        return
    model.set_enabled_adapters(enabled=False)
    try:
        with restricted_to(model, lang):
            yield
    finally:
        model.set_enabled_adapters(enabled=True)


@contextlib.contextmanager
def rows_gated(model: Any, rows: torch.Tensor) -> Iterator[None]:
    """Per-utterance paths inside the block: `rows[b]` True = the new language."""
    gate = install(model)
    saved, gate.rows = gate.rows, rows.bool()
    try:
        yield
    finally:
        gate.rows = saved


class GateByLanguage(pl.Callback):
    """Training: each batch's utterances on their own paths (read from their transcripts)."""

    def __init__(self, model: Any):
        self.gate = install(model)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _, _, transcript, transcript_len = batch
        rows = torch.ones(transcript.shape[0], dtype=torch.bool, device=transcript.device)
        rows[old_language_rows(transcript, transcript_len, self.gate.n_old)] = False
        self.gate.rows = rows

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.gate.rows = None


# ---- routing without a language ----

@torch.no_grad()
def pooled_features(model: Any, audios: Sequence[np.ndarray], batch_size: int = 8) -> torch.Tensor:
    """The pretrained encoder's output averaged over each utterance's frames (N, d_model), on the base path."""
    from enhi.manifest import audio_batch

    was_training = model.training
    model.eval()
    out = []
    try:
        with language_path(model, model.cfg[KEY].base):
            for i in range(0, len(audios), batch_size):
                sig, lens = audio_batch(audios[i: i + batch_size], model.device)
                enc, enc_len = model.forward(input_signal=sig, input_signal_length=lens)  # (B, D, T)
                mask = (torch.arange(enc.shape[2], device=enc.device)[None, :] < enc_len[:, None]).to(enc.dtype)
                out.append(((enc * mask[:, None, :]).sum(2) / enc_len[:, None].to(enc.dtype)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).float()


def fit_router(features: torch.Tensor, is_new: torch.Tensor, l2: float = 1e-4) -> dict[str, list[float]]:
    """Logistic regression (standardized features, L2 `l2`, L-BFGS to convergence): P(new language | features)."""
    # A feature that hardly varies must not be blown up into a large weight on its rounding noise.
    mean, std = features.mean(0), features.std(0)
    std = std.clamp_min(1e-2 * float(std.mean()))
    x, y = (features - mean) / std, is_new.float()
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        v = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w**2).sum()
        v.backward()
        return v

    opt.step(loss)
    return {"mean": mean.tolist(), "std": std.tolist(), "weight": w.detach().tolist(), "bias": float(b)}


def route(model: Any, audios: Sequence[np.ndarray], batch_size: int = 8) -> list[str]:
    """The language of each utterance, by the model's router (see the module doc)."""
    if not is_gated(model):
        raise UserError("--lang auto routes between the paths of a model trained with "
                        "model.adaptation.gate_by_language: true; this model has one path")
    c = model.cfg[KEY]
    if c.get("router") is None:
        raise UserError("this gated model has no router (it is fit when training starts); give the language "
                        "(--lang) instead of auto")
    r = OmegaConf.to_container(c.router)
    x = (pooled_features(model, audios, batch_size) - torch.tensor(r["mean"])) / torch.tensor(r["std"])
    return [c.new if n else c.base for n in ((x @ torch.tensor(r["weight"]) + r["bias"]) > 0).tolist()]


@contextlib.contextmanager
def decoding_as(model: Any, lang: str | Sequence[str] | None, audios: Sequence[np.ndarray] = ()) -> Iterator[None]:
    """Decode the batch `audios` inside the block on `lang`'s path: one language for the batch, one per utterance,
    `AUTO` (each utterance on the path its router picks: one extra forward of the pretrained encoder), or None
    (the model as it is)."""
    if lang == AUTO:
        lang = route(model, audios, max(1, len(audios)))
    if lang is None or isinstance(lang, str):
        with language_path(model, lang):
            yield
        return
    with rows_gated(model, torch.tensor([path_of(model, x) for x in lang])):
        yield


def router_entries(cfg: Any, model: Any, n: int) -> tuple[list, list]:
    """Up to `n` utterances of each language from the plain training manifests, in an order fixed by `cfg.seed`:
    (base-language entries, new-language entries), told apart by their transcripts' tokens."""
    old, new = training_entries_by_language(cfg, model)
    if not old or not new:
        raise UserError("model.adaptation.gate_by_language fits its router on utterances of both languages from "
                        "the plain training manifests (model.train_ds.manifests, type nemo; weight 0 keeps one "
                        f"out of the mix); found {len(old)} English and {len(new)} new-language ones")
    for i, group in enumerate((old, new)):
        random.Random(f"{cfg.seed}:{i}").shuffle(group)
    return old[:n], new[:n]


class FitRouter(pl.Callback):
    """Fit the router once per run folder, before training (see the module doc)."""

    def __init__(self, cfg: Any, n: int):
        self.cfg, self.n = cfg, int(n)

    def setup(self, trainer, pl_module, stage: str) -> None:
        from enhi.atomic import atomic_file
        from enhi.manifest import load_audio
        from enhi.resilience import length_sync_off

        path = Path(trainer.default_root_dir) / ROUTER_FILE  # the run folder, as the Fisher (resume and DDP reuse it)
        if trainer.is_global_zero and not path.is_file():
            old, new = router_entries(self.cfg, pl_module, self.n)
            with length_sync_off(pl_module.encoder):  # rank 0 runs these forwards alone; the others wait below
                feats = pooled_features(pl_module, [load_audio(e.audio_filepath) for e in old + new])
            router = fit_router(feats, torch.tensor([False] * len(old) + [True] * len(new)))
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, "w", encoding="utf-8") as f:
                json.dump(router, f)
        trainer.strategy.barrier("router")
        with open_dict(pl_module.cfg):
            pl_module.cfg[KEY].router = json.loads(path.read_text(encoding="utf-8"))
