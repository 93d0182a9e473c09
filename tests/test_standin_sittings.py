"""The stand-in's training is split over sittings: a sitting ends only at a checkpoint, so it resumes exactly."""

from __future__ import annotations

from types import SimpleNamespace

from demo import standin_free


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
