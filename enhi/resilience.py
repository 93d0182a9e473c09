"""What lets a days-long run survive kills, bad batches and several processes.

- `AtomicCheckpointIO`: Lightning checkpoints written beside their destination and renamed (Lightning's own
  transaction writes to the system temp folder and then *copies* when that is another filesystem, so a kill
  during the copy leaves a truncated `last.ckpt`).
- `AtomicSaveRestoreConnector`: the same for every `.nemo` NeMo writes (`save_to`, exp_manager's final model),
  whose config is also made portable (`enhi.portable`: stock NeMo transcribes it from file paths, and it
  names no folder of the machine that wrote it).
- `ResumeState`: the data position and RNG state saved in each checkpoint, so a run killed and started again
  with the same command trains on the same batches with the same dropout/spec-augment draws as one that was
  never interrupted (Lightning restores weights, optimizer, scheduler and step counter itself).
- `NonFiniteGuard`: a step whose loss or gradients are not finite is skipped (no weight or optimizer update)
  and counted; `max_consecutive` of them in a row stop the run with a clear message.
- `RankAgreement`: under DDP, checks that every rank starts and ends with bit-identical weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector
from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint
from omegaconf import OmegaConf

from enhi.atomic import atomic_path, remove_temporaries
from enhi.errors import UserError
from enhi.portable import portable_model_config

PARTIAL_SUFFIX = ".partial"  # AtomicCheckpointIO's temporaries


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to a temporary file in the checkpoint's own folder, then an atomic rename.

    Two details keep NeMo's checkpoint callback from tripping over a job killed at the wrong moment:
    - NeMo marks a checkpoint "unfinished" before saving it and clears the mark only after the save returns, so a
      kill just after the rename would leave a complete last.ckpt that exp_manager refuses to resume from ("Last
      checkpoint is unfinished"). A file that only ever appears whole needs no mark: it is cleared just before
      the rename.
    - The temporary ends in `.partial`, not `.ckpt`: on resume NeMo reads every `*.ckpt` in the folder as a
      top-k candidate (a half-written one could become `best_model_path`). Partials a killed writer left behind
      (a full checkpoint's size each) are removed at the next save into that folder; only global rank 0 saves.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        remove_temporaries(Path(path).parent, PARTIAL_SUFFIX)
        with atomic_path(path, suffix=PARTIAL_SUFFIX) as tmp:
            torch.save(checkpoint, tmp)
            NeMoModelCheckpoint.format_checkpoint_unfinished_marker_path(path).unlink(missing_ok=True)


class AtomicSaveRestoreConnector(SaveRestoreConnector):
    """NeMo's connector, but a `.nemo` file appears whole or not at all, with a portable config inside."""

    def save_to(self, model, save_path: str) -> None:
        if not self.pack_nemo_file:  # an unpacked folder: NeMo's own behaviour
            return super().save_to(model, save_path)
        with atomic_path(save_path) as tmp:
            super().save_to(model, str(tmp))

    def _update_subconfigs(self, model, path2yaml_file) -> None:
        # NeMo's hook on the config file it is packing, before artifact paths become `nemo:` names; the live
        # model's config is left as it is (a run may still read its paths).
        super()._update_subconfigs(model, path2yaml_file)
        cfg = portable_model_config(OmegaConf.load(path2yaml_file))
        with open(path2yaml_file, "w", encoding="utf-8") as f:
            OmegaConf.save(cfg, f)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _lhotse_sampler(dataloader) -> Any | None:
    """The Lhotse sampler behind a NeMo training dataloader (map-style: `.sampler`; iterable: `.dataset.sampler`)."""
    from lhotse.dataset.sampling.base import CutSampler

    for s in (getattr(dataloader, "sampler", None), getattr(getattr(dataloader, "dataset", None), "sampler", None)):
        if isinstance(s, CutSampler):
            return s
    return None


class ResumeState(pl.Callback):
    """Saves, in every checkpoint, how many batches of the current epoch were trained and the RNG state at that
    point; on resume, fast-forwards the Lhotse sampler by those batches (reading only metadata, no audio) and
    restores the RNG just before the first resumed step.

    Counted here rather than taken from the sampler because the loader runs ahead of training (Lightning
    prefetches a batch, worker processes more). Exact wherever the sampler lives in the training process: plain
    manifests with any `num_workers`, sharded sources with `num_workers: 0`. With workers, a sharded source's
    sampler is copied into each worker, out of reach: only the step counter, weights, optimizer and scheduler
    resume, and the data stream is drawn anew (`enhi.training.train_ds_config`).
    """

    def __init__(self):
        self.epoch = 0
        self.batches = 0  # batches trained in `epoch`
        self._rng: dict[str, Any] | None = None
        self.logged_steps = 0
        self._restored = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epoch, self.batches = trainer.current_epoch, batch_idx + 1
        # The logger's step after this batch. Lightning saves its own counter before incrementing it, so a run
        # resumed from a mid-epoch checkpoint would log every later step one step early.
        loop = trainer.fit_loop.epoch_loop
        self.logged_steps = loop._batches_that_stepped + (0 if loop._should_accumulate() else 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # A sitting ended on request (a callback's `should_stop`) also ends Lightning's epoch, and the checkpoint
        # written then must hold the position reached, or the next sitting would start a fresh pass of the data.
        if trainer.should_stop and trainer.global_step < (trainer.max_steps or 0):
            return
        self.epoch, self.batches = trainer.current_epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "logged_steps": self.logged_steps, "rng": rng_state()}

    def setup(self, trainer, pl_module, stage: str) -> None:  # runs before the checkpoint is restored
        self._dataloader = getattr(pl_module, "_train_dl", None)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Called while restoring, before Lightning first iterates the training loader.
        self.epoch, self.batches, self._rng = state["epoch"], state["batches"], state["rng"]
        self.logged_steps, self._restored = state["logged_steps"], True
        dl = getattr(self, "_dataloader", None)
        sampler = _lhotse_sampler(dl) if dl is not None else None
        # A map-style loader's sampler is its own (`dl.sampler`); an iterable one's runs inside each worker.
        if sampler is None or (dl.num_workers > 0 and sampler is not dl.sampler):
            return
        sampler.set_epoch(self.epoch)
        sampler.allow_iter_to_reset_state()
        it = iter(sampler)
        for _ in range(self.batches):
            next(it)
        # Lhotse's flag for a restored sampler: the next iter() continues here instead of restarting the epoch.
        sampler._just_restored_state = True

    def on_train_start(self, trainer, pl_module) -> None:
        if self._restored:  # Lightning's loop state is restored by now; put its logging step right
            trainer.fit_loop.epoch_loop._batches_that_stepped = self.logged_steps
            self._restored = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._rng is not None:  # the first step after a resume draws what the uninterrupted run drew
            set_rng_state(self._rng)
            self._rng = None


class NonFiniteGuard(pl.Callback):
    """Skip optimizer steps whose loss or gradients are NaN/inf; stop after `max_consecutive` in a row.

    The decision is reduced over ranks (any rank bad = all skip), so DDP ranks stay identical. A skipped step
    drops the gradients before the optimizer sees them: no weight or moment update (the scheduler still
    advances, as with AMP's skipped steps). BatchNorm running statistics, which the forward pass itself updates
    (a NaN batch would poison them for every later inference), are put back as they were before the step.
    The running count is logged as `nonfinite_skipped`.
    """

    def __init__(self, max_consecutive: int = 10):
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._bad_loss = False
        self._norm_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._norm_stats is None:  # first micro-batch of this optimizer step
            self._norm_stats = [
                (b, b.detach().clone())
                for m in pl_module.modules()
                if isinstance(m, torch.nn.modules.batchnorm._NormBase)
                for b in m.buffers(recurse=False)
            ]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._bad_loss |= not bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = bool(torch.isfinite(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).all()) if grads else True
        bad = trainer.strategy.reduce_boolean_decision(self._bad_loss or not finite, all=False)
        saved, self._norm_stats, self._bad_loss = self._norm_stats or [], None, False
        if not bad:
            self.consecutive = 0
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        with torch.no_grad():
            for live, before in saved:
                live.copy_(before)
        self.skipped += 1
        self.consecutive += 1
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"step {trainer.global_step}: non-finite loss or gradients, step skipped ({self.skipped} so far)")
        if self.consecutive >= self.max_consecutive:
            raise UserError(
                f"training stopped at step {trainer.global_step}: {self.consecutive} steps in a row had non-finite "
                "loss or gradients (weights are those of the last good step; the last checkpoint is intact); "
                "lower model.optim.lr, check the data with check_data.py, or raise max_consecutive_nonfinite"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped, self.consecutive = state["skipped"], state["consecutive"]


def weights_digest(module: torch.nn.Module, buffers: bool = True) -> str:
    """SHA-256 over every parameter (and buffer), sorted by name: identical bits give identical digests,
    whatever order the modules were built or replaced in."""
    h = hashlib.sha256()
    tensors = dict(module.state_dict() if buffers else module.named_parameters())
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RankAgreement(pl.Callback):
    """Under DDP: every rank's parameters and buffers hash the same before wrapping (the transplant ran
    identically in each process, so DDP's broadcast from rank 0 changes nothing), and the parameters hash the
    same after training. (BatchNorm running statistics end up per rank: DDP broadcasts rank 0's before each
    forward, then each rank's own batch updates them; rank 0's are the ones saved.) A mismatch stops the run."""

    def __init__(self):
        self.digests: dict[str, str] = {}

    def _check(self, trainer, pl_module, when: str, buffers: bool) -> None:
        if trainer.world_size < 2 or not torch.distributed.is_initialized():
            return
        mine = weights_digest(pl_module, buffers)
        everyone: list[str] = [""] * trainer.world_size
        torch.distributed.all_gather_object(everyone, mine)
        if len(set(everyone)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights {when}: digests {everyone}")
        self.digests[when] = mine
        if trainer.is_global_zero:
            what = "parameters and buffers" if buffers else "parameters"
            # At start also the parameters alone: comparable with the end's, to show the ranks trained.
            params = f"; parameters {weights_digest(pl_module, False)[:16]}" if buffers else ""
            print(f"[ddp] {trainer.world_size} ranks hold identical {what} {when} (sha256 {mine[:16]}{params})",
                  flush=True)

    def setup(self, trainer, pl_module, stage: str) -> None:  # process group up, model not yet wrapped
        self._check(trainer, pl_module, "at start", buffers=True)

    def on_train_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module, "at end", buffers=False)


def make_saves_atomic(model) -> None:
    """Route every `.nemo` this model writes through `AtomicSaveRestoreConnector`."""
    old = getattr(model, "_save_restore_connector", None)
    if isinstance(old, AtomicSaveRestoreConnector):
        return
    new = AtomicSaveRestoreConnector()
    if old is not None:  # keep what restore_from recorded (e.g. an unpacked source folder)
        new.__dict__.update(old.__dict__)
    model._save_restore_connector = new


__all__ = [
    "AtomicCheckpointIO",
    "AtomicSaveRestoreConnector",
    "NonFiniteGuard",
    "RankAgreement",
    "ResumeState",
    "length_sync_off",
    "make_saves_atomic",
    "no_length_sync",
    "weights_digest",
]


def no_length_sync(encoder) -> None:
    if hasattr(encoder, "sync_max_audio_length"):
        encoder.sync_max_audio_length = False


@contextlib.contextmanager
def length_sync_off(encoder):
    """NeMo's Conformer all-reduces each forward's length across DDP ranks: off while one rank runs alone."""
    before = getattr(encoder, "sync_max_audio_length", None)
    no_length_sync(encoder)
    try:
        yield
    finally:
        if before is not None:
            encoder.sync_max_audio_length = before
