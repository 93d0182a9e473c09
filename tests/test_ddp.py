"""The recipe under Lightning DDP: two CPU processes with the gloo backend, launched by the user's own command.
Each process adapts the model itself before wrapping; both must hold bit-identical weights at the start and
after training, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import MERGED_DIR, ROOT
from omegaconf import OmegaConf

from demo.common import DEMO_SETTINGS, HISTORY_FILE

SCRIPT = ROOT / "ft_110M_enhi_demo.py"


def test_two_process_gloo_run_keeps_ranks_identical(standin_nemo, small_corpus, tmp_path):
    """With the BiRWKV7 switch on, the harder case: its new layers are drawn in each process (the attention-only
    run differs only in having none; one case, since each costs two NeMo processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    r = subprocess.run(
        [
            sys.executable, str(SCRIPT), "using_birwkv7=true",  # BiRWKV7 adds freshly drawn layers
            *DEMO_SETTINGS,  # CPU-sized training settings (the YAML's are a GPU run's)
            f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}",
            f"model.train_ds.manifests=[{{path: {small_corpus['en_train']}, lang: en}}, {{path: {small_corpus['hi_train']}, lang: hi}}]",
            f"model.validation_ds.sets=[{{name: en, path: {small_corpus['en_val']}, lang: en}}, {{name: hi, path: {small_corpus['hi_val']}, lang: hi}}]",
            "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
            "trainer.max_steps=2", "trainer.val_check_interval=2",
            # Distillation and EWC on: the Fisher is computed by rank 0 and read by both.
            "model.adaptation.distill_weight=1", "model.adaptation.anchor_weight=1",
            "model.adaptation.anchor_fisher=true", "model.adaptation.fisher_utterances=16",
            f"exp_manager.exp_dir={tmp_path}", "exp_manager.name=ddp",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    start = re.findall(r"\[ddp\] 2 ranks hold identical parameters and buffers at start \(sha256 \w+; parameters (\w+)\)",
                       r.stdout)
    end = re.findall(r"\[ddp\] 2 ranks hold identical parameters at end \(sha256 (\w+)\)", r.stdout)
    assert len(start) == 1 and len(end) == 1, r.stdout[-3000:]  # printed by rank 0 only
    from enhi.resilience import weights_digest
    from enhi.training import load_model

    # The same (adapted, converted) parameters at start and at end: the ranks trained, and stayed together.
    assert start[0] != end[0]

    # The .nemo rank 0 wrote holds exactly the parameters both ranks agreed on at the end.
    run = tmp_path / "ddp"
    (nemo,) = list(run.rglob("*.nemo"))
    model = load_model(OmegaConf.create({"init_from_nemo_model": str(nemo), "init_from_pretrained_model": None}))
    assert weights_digest(model, buffers=False)[:16] == end[0]

    # Validation was scored once per interval (each rank transcribed half, rank 0 wrote the history).
    history = [json.loads(line) for line in (run / HISTORY_FILE).read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2]
    assert (run / "fisher.pt").is_file()  # computed once, by rank 0
    names = [p.name for p in run.rglob("*")]
    assert not [n for n in names if re.search(r"rank-?1|rank_1", n)], names


class _Trainer:
    world_size, is_global_zero = 2, True


@pytest.mark.parametrize("other", ["same", "differs"])
def test_rank_agreement_stops_a_run_whose_ranks_differ(other, monkeypatch, capsys):
    """RankAgreement's check driven with a second rank's digest: equal passes and prints, different stops the run."""
    import torch

    from enhi.resilience import RankAgreement, weights_digest

    model = torch.nn.Linear(3, 2)
    mine = weights_digest(model, True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)

    def gather(out, obj):
        out[0], out[1] = obj, obj if other == "same" else "f" * 64

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    check = RankAgreement()
    if other == "same":
        check.setup(_Trainer(), model, "fit")
        assert f"2 ranks hold identical parameters and buffers at start (sha256 {mine[:16]}" in capsys.readouterr().out
    else:
        with pytest.raises(RuntimeError, match="DDP ranks hold different weights at start"):
            check.setup(_Trainer(), model, "fit")
