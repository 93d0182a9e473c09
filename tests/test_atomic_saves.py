"""Checkpoints and .nemo files appear whole or not at all: a write that fails half-way leaves the previous file
as it was (or no file) and no temporary behind; one SIGKILLed half-way leaves a temporary that NeMo never reads
as a checkpoint and the next save removes."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from enhi.resilience import AtomicCheckpointIO, make_saves_atomic


class Crash(Exception):
    pass


def test_checkpoint_write_that_dies_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.arange(4.0)}, path)

    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:  # what a kill mid-write leaves: a truncated file
            fh.truncate(10)
        raise Crash

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(Crash):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()

    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    ck = torch.load(path, weights_only=False)
    assert ck["global_step"] == 1 and torch.equal(ck["w"], torch.arange(4.0))


# A checkpoint write SIGKILLed half-way: torch.save has written part of the file when the process dies.
_KILLED_MID_WRITE = """
import os, signal, sys, torch
from enhi.resilience import AtomicCheckpointIO
real_save = torch.save
def save_half_then_die(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    with open(f, "r+b") as fh:
        fh.truncate(10)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_half_then_die
AtomicCheckpointIO().save_checkpoint({"global_step": 4}, sys.argv[1])
"""


def test_checkpoint_write_killed_half_way_is_invisible_to_nemo_and_cleaned_up(tmp_path):
    from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 2}, folder / "run--val_wer=0.5000-epoch=0.ckpt")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(folder / "run--val_wer=0.2500-epoch=0.ckpt")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (partial,) = [p for p in folder.iterdir() if p.name != "run--val_wer=0.5000-epoch=0.ckpt"]
    assert partial.stat().st_size == 10  # what the kill left

    # On resume NeMo's callback collects top-k candidates from every *.ckpt in the folder (parsing the score out
    # of the name): the half-written file must not be one of them, let alone the best.
    cb = NeMoModelCheckpoint(dirpath=str(folder), monitor="val_wer", mode="min", save_top_k=2, n_resume=True)
    assert list(cb.best_k_models) == [str(folder / "run--val_wer=0.5000-epoch=0.ckpt")]
    assert cb.best_model_path == str(folder / "run--val_wer=0.5000-epoch=0.ckpt")

    io.save_checkpoint({"global_step": 6}, folder / "run--val_wer=0.2000-epoch=0.ckpt")  # the next save tidies up
    assert sorted(p.name for p in folder.iterdir()) == ["run--val_wer=0.2000-epoch=0.ckpt", "run--val_wer=0.5000-epoch=0.ckpt"]


def test_nemo_write_that_dies_leaves_no_file(en_tok_dir, tmp_path, monkeypatch):
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    from enhi.tiny_model import build_parakeet_model

    model = build_parakeet_model(en_tok_dir, seed=0, d_model=32, n_layers=1, n_heads=2, pred_hidden=32, joint_hidden=32)
    make_saves_atomic(model)
    out = tmp_path / "models" / "m.nemo"
    real = SaveRestoreConnector._make_nemo_file_from_folder

    def dies_half_way(filename, source_dir):
        real(filename, source_dir)
        with open(filename, "r+b") as fh:
            fh.truncate(100)
        raise Crash

    monkeypatch.setattr(SaveRestoreConnector, "_make_nemo_file_from_folder", staticmethod(dies_half_way))
    with pytest.raises(Crash):
        model.save_to(str(out))
    assert list(out.parent.iterdir()) == []  # neither a truncated m.nemo nor a temporary

    monkeypatch.undo()
    model.save_to(str(out))  # and a write that completes lands under the real name
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.nemo"]
    restored = type(model).restore_from(str(out), map_location="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True))


def test_written_files_and_folders_get_the_usual_mode_not_a_private_temporarys(tmp_path):
    """A .nemo, prediction file or tokenizer folder the project writes is readable as a plain write would make
    it (mkstemp's temporaries are owner-only: a model copied to a server would be unreadable by its service)."""
    import os
    import stat

    from enhi.atomic import atomic_dir, atomic_file, atomic_path

    before = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "a.txt") as f:
            f.write("x")
        with atomic_path(tmp_path / "b.nemo") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "tok") as tmp:
            (tmp / "t.model").write_bytes(b"x")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.nemo").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "tok").stat().st_mode) == 0o755
