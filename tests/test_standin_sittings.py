"""The stand-in's training is split over sittings: a sitting ends only at a checkpoint, so it resumes exactly."""

from __future__ import annotations

from types import SimpleNamespace

from demo import standin_free
from demo.common import DEMO_SETTINGS


def _ends(callback, step: int) -> bool:
    trainer = SimpleNamespace(global_step=step, should_stop=False)
    callback.on_train_batch_end(trainer)
    return trainer.should_stop


def test_stop_at_ends_the_sitting_at_the_first_checkpoint_at_or_after_the_step(tmp_path):
    cb = standin_free._stop_at(2500, 1000, tmp_path / "STOP")
    assert [_ends(cb, s) for s in (999, 1000, 2000, 2500, 2999, 3000, 4000)] == [
        False, False, False, False, False, True, True]


def test_a_stop_file_ends_the_sitting_at_the_next_checkpoint_and_is_used_once(tmp_path):
    stop = tmp_path / "STOP"
    cb = standin_free._stop_at(None, 1000, stop)
    assert not _ends(cb, 1000)
    stop.touch()
    assert not _ends(cb, 1999) and stop.is_file()  # between checkpoints: nothing to resume from yet
    assert _ends(cb, 2000) and not stop.exists()
    assert not _ends(cb, 3000)  # the next sitting is not ended by the same request


def test_a_sitting_ended_at_a_checkpoint_then_the_same_command_ends_where_one_sitting_ends(
        standin_nemo, small_corpus, tmp_path, monkeypatch):
    # Lightning closes its epoch when a callback stops the fit; the checkpoint written then must still hold the
    # data position and RNG of the step reached (it held "next epoch, batch 0" once: a new pass of the data).
    import torch
    from conftest import ROOT

    from demo import common
    from enhi.config import ManifestSpec, NamedSet, load_run_config
    from enhi.training import load_nemo_file

    monkeypatch.setattr(common, "CACHE", tmp_path)  # run folders under tmp_path/runs
    monkeypatch.setattr(standin_free, "EVERY", 2)
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS)
    stage = standin_free.Stage("t", 6, 1e-3, 2)
    train = [ManifestSpec(str(small_corpus["en_train"]), "en", 0.7), ManifestSpec(str(small_corpus["en_val"]), "en", 0.3)]
    val = [NamedSet("en", str(small_corpus["en_val"]), "en")]

    def sitting(name: str, stop_at: int | None):
        return standin_free.train_stage(cfg, stage, name, train, val, load_nemo_file(standin_nemo), stop_at)

    _, split_dir, finished = sitting("split", 2)
    assert not finished
    split, _, finished = sitting("split", None)
    whole, whole_dir, _ = sitting("whole", None)
    assert finished
    assert [(s["from_step"], s["to_step"]) for s in standin_free.sittings(split_dir)] == [(0, 2), (2, 6)]
    assert [(s["from_step"], s["to_step"]) for s in standin_free.sittings(whole_dir)] == [(0, 6)]
    a, b = split.state_dict(), whole.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert a["joint.joint_net.2.weight"].ne(load_nemo_file(standin_nemo).state_dict()["joint.joint_net.2.weight"]).any()
