"""A run killed with SIGKILL mid-epoch and started again with the same command ends exactly where an
uninterrupted run ends: same per-step training loss, same weights, same optimizer state (AdamW and 8-bit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from conftest import MERGED_DIR, ROOT, load_script

SCRIPT = ROOT / "ft_110M_enhi_demo.py"
STEPS = 10


def _argv(standin: Path, corpus: dict, exp_dir: Path, bnb: bool) -> list[str]:
    return [
        f"init_from_nemo_model={standin}",
        f"model.tokenizer.dir={MERGED_DIR}",
        f"bnb_optim={str(bnb).lower()}",
        f"model.train_ds.manifests=[{{path: {corpus['en_train']}, lang: en}}, {{path: {corpus['hi_train']}, lang: hi}}]",
        f"model.validation_ds.sets=[{{name: en, path: {corpus['en_val']}, lang: en}}]",
        "model.train_ds.batch_duration=12",
        "model.train_ds.num_buckets=2",
        "model.optim.sched.warmup_steps=2",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        f"exp_manager.exp_dir={exp_dir}",
        "exp_manager.name=run",
    ]


def _losses(run_dir: Path) -> dict[int, float]:
    """train_loss per step from TensorBoard; a step logged twice (before the kill and after resume) keeps the
    later value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for f in run_dir.rglob("events.out.tfevents*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        if "train_loss" in acc.Tags()["scalars"]:
            events += acc.Scalars("train_loss")
    return {e.step: e.value for e in sorted(events, key=lambda e: e.wall_time)}


def _nemo_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (nemo,) = list(run_dir.rglob("*.nemo"))
    return _weights(nemo)


def _weights(nemo: Path) -> dict[str, torch.Tensor]:
    with tarfile.open(nemo) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        return torch.load(tar.extractfile(member), map_location="cpu")


def _last_ckpt(run_dir: Path) -> dict:
    (path,) = list(run_dir.rglob("*last.ckpt"))
    return torch.load(path, map_location="cpu", weights_only=False)


def _flat(x, prefix=""):
    """Every tensor and number in a nested optimizer state, by path."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flat(v, f"{prefix}/{k}")
    elif isinstance(x, list | tuple):
        for i, v in enumerate(x):
            yield from _flat(v, f"{prefix}/{i}")
    else:
        yield prefix, x


@pytest.mark.parametrize("bnb", [False, True], ids=["adamw", "adamw8bit"])
def test_sigkill_and_same_command_matches_uninterrupted_run(bnb, standin_nemo, small_corpus, tmp_path):
    main = load_script(SCRIPT).main
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    main(_argv(standin_nemo, small_corpus, whole, bnb))

    # The same command in a subprocess, killed with SIGKILL as soon as its first checkpoint is on disk.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same float reductions as in-process
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *_argv(standin_nemo, small_corpus, killed, bnb)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 600
    while not list(killed.rglob("*last.ckpt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]  # killed, not finished
    assert not list(killed.rglob("*.nemo"))
    k = _last_ckpt(killed)["global_step"]
    assert 2 <= k < STEPS

    main(_argv(standin_nemo, small_corpus, killed, bnb))  # started again: resumes from last.ckpt

    a, b = _losses(whole), _losses(killed)
    assert sorted(a) == sorted(b) == list(range(STEPS))
    assert all(torch.isfinite(torch.tensor(list(a.values()))))
    assert [a[s] for s in range(k, STEPS)] == [b[s] for s in range(k, STEPS)]  # the steps after the kill

    wa, wb = _nemo_weights(whole), _nemo_weights(killed)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    start = _weights(standin_nemo)
    assert sum(not torch.equal(start[n], wa[n]) for n in start if n.startswith("encoder.")) > 10  # it trained

    ca, cb = _last_ckpt(whole), _last_ckpt(killed)
    assert ca["global_step"] == cb["global_step"] == STEPS
    sa, sb = dict(_flat(ca["optimizer_states"])), dict(_flat(cb["optimizer_states"]))
    assert sa.keys() == sb.keys()
    for key in sa:
        x, y = sa[key], sb[key]
        assert torch.equal(x, y) if torch.is_tensor(x) else x == y, key
    if bnb:  # the 8-bit state really is 8-bit
        assert any(torch.is_tensor(v) and v.dtype == torch.uint8 for v in sa.values())
    assert ca["lr_schedulers"][0]["last_epoch"] == cb["lr_schedulers"][0]["last_epoch"] == STEPS
