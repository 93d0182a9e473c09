"""Checkpoints and .nemo files appear whole or not at all: a write that dies half-way leaves the previous file
as it was (or no file) and no temporary behind."""

from __future__ import annotations

import pytest
import torch

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
