"""The next English stand-in (issue 22): a larger Parakeet-architecture model that hears English, not templates.

    uv run python -m demo.standin_free                  # train it (or go on from its last checkpoint)
    uv run python -m demo.standin_free --stop-at 6000   # end this sitting at step 6000's checkpoint

Trained on `demo.standin_corpus` (free text over a large lexicon with held-out words, multi-sentence segments up
to 20 s, 43 voices, noise and rooms) and validated on the demo's template set, free sentences and 10-20 s
recordings. The training takes several sittings on a 2-core CPU: each run of the command continues exactly from
the last checkpoint (the recipe's own resume) and appends a line to `sittings.jsonl` in its run folder; the
record beside the written .nemo lists them. It replaces `assets/standin/standin_en.nemo` (demo.standin) once
it is trained and measured.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from demo.common import CACHE, ROOT, english_tokenizer_dir, run_config
from demo.pipeline import HISTORY_FILE, history_path
from enhi.atomic import atomic_file
from enhi.config import ManifestSpec, NamedSet

OUT = CACHE / "standin_free" / "standin_en.nemo"
# ~4.6M parameters (18 MB): wide and deep enough to spell English it has not heard, small enough that the demo
# still fine-tunes it twice in 15 minutes on a 2-core CPU (issue 22).
SIZES = dict(d_model=160, n_layers=6, n_heads=4, pred_hidden=160, joint_hidden=160, subsampling_conv_channels=64)
STEPS = 16_000
EVERY = 1000  # validation and checkpoint interval
LR = 2e-3
WARMUP = 1000
BATCH_DURATION = 30  # seconds of audio per step
# Lighter SpecAugment than Parakeet's (10 time masks of up to 5%, 2 of 27 mel bins): a small model learning
# from scratch on short utterances cannot afford to lose that much of each one.
SPEC_AUGMENT = dict(freq_masks=2, freq_width=20, time_masks=4, time_width=0.05)
COMMAND = "uv run python -m demo.standin_free"
RUN_NAME = f"standin_en__{STEPS}steps"  # the step count in the name: a run of another length never resumes it


def free_corpus(progress: bool = True) -> dict:
    """The stand-in's own training corpus (free text, segments, rooms and noise) and its three validation sets."""
    from demo.standin_corpus import build

    return build(CACHE / "standin_free_corpus", seed=0, progress=progress)


def _stop_at(step: int, every: int):
    """A callback that ends a sitting at the first checkpoint at or after `step` (the next sitting resumes there)."""
    import lightning.pytorch as pl

    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer, *_args) -> None:
            if trainer.global_step >= step and trainer.global_step % every == 0:
                trainer.should_stop = True

    return StopAt()


def train(cfg: DictConfig, out: Path = OUT, steps: int = STEPS, stop_at: int | None = None) -> Path | None:
    """Train the stand-in from scratch (or on from its last checkpoint) and write `out` (.nemo) and its record
    (.json) beside it. With `stop_at`, the sitting ends at that step's checkpoint and nothing is written."""
    from enhi.evaluate import evaluate_sets
    from enhi.tiny_model import build_parakeet_model
    from enhi.training import configure_model, eval_sets, fit, save_model
    from enhi.transplant import install_cpu_tdt_loss

    t0 = time.time()
    info = free_corpus()
    man = info["manifests"]
    c = run_config(cfg, RUN_NAME if steps == STEPS else f"standin_en__{steps}steps", steps, EVERY, BATCH_DURATION)
    c.exp_manager.resume_if_exists = True  # started again, it continues from its last checkpoint
    c.exp_manager.checkpoint_callback_params.save_nemo_on_train_end = False
    c.model.train_ds.manifests = [ManifestSpec(man["en_train"], "en", 1.0)]
    c.model.validation_ds.sets = [NamedSet(n, man[n], "en") for n in ("en_val", "en_free", "en_long")]
    c.model.optim.lr = LR
    c.model.optim.sched.warmup_steps = WARMUP
    c.model.spec_augment = SPEC_AUGMENT
    model = build_parakeet_model(english_tokenizer_dir(), seed=cfg.seed, **SIZES)
    install_cpu_tdt_loss(model)
    configure_model(model, c, bnb_optim=False)
    run_dir = Path(c.exp_manager.exp_dir) / c.exp_manager.name
    stops = [_stop_at(stop_at, EVERY)] if stop_at else []
    trainer, _, timer = fit(model, c, history_path=history_path(c, fresh=False), eval_at_start=False,
                            callbacks=stops)
    sittings_file = run_dir / "curves" / "sittings.jsonl"  # beside the curve, out of exp_manager's way
    before = [json.loads(line) for line in sittings_file.read_text().splitlines()] if sittings_file.is_file() else []
    sitting = {"from_step": before[-1]["to_step"] if before else 0, "to_step": trainer.global_step, "minutes": round((time.time() - t0) / 60, 1),
               "median_step_s": sorted(timer.times)[len(timer.times) // 2] if timer.times else None,
               "cpu": _cpu(), "date": _now()}
    with open(sittings_file, "a", encoding="utf-8") as f:
        f.write(json.dumps(sitting) + "\n")
    if trainer.global_step < steps:
        print(f"stand-in: stopped at step {trainer.global_step} of {steps}; the same command continues from there")
        return None
    model.eval()
    sets = eval_sets(c.model.validation_ds)
    scores = evaluate_sets(model, sets, c.model.validation_ds.batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    import nemo
    import torch

    history = [json.loads(line) for line in (run_dir / HISTORY_FILE).read_text().splitlines() if line]
    sittings = [*before, sitting]
    record = {
        "command": COMMAND,
        "architecture": "EncDecHybridRNNTCTCBPEModel (parakeet-tdt_ctc-110m config, enhi/tiny_model.py)",
        "sizes": SIZES,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": "assets/tokenizers/en1024 (parakeet-tdt_ctc-110m's English tokenizer)",
        "steps": steps,
        "lr": LR,
        "warmup_steps": WARMUP,
        "batch_duration_s": BATCH_DURATION,
        "spec_augment": SPEC_AUGMENT,
        "corpus": {"params": info["params"], "counts": info["counts"], "hours": info["hours"],
                   "voices": info["voices"]},
        "scores": {name: {k: r[k] for k in ("wer", "cer", "ctc_wer", "ctc_cer", "n") if k in r}
                   for name, r in scores.items()},
        "val_history": {h["step"]: h for h in history},
        "sittings": sittings,
        "versions": {"torch": torch.__version__, "nemo": nemo.__version__, "python": platform.python_version()},
        "date": _now(),
    }
    record["val_history"] = [record["val_history"][k] for k in sorted(record["val_history"])]
    with atomic_file(out.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print("stand-in written to " + str(out) + ": " + ", ".join(
        f"{n} WER {r['wer']:.3f} (CTC CER {r['ctc_cer']:.3f})" for n, r in scores.items()))
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str]) -> None:
    """`python -m demo.standin_free [--stop-at STEP] [yaml overrides]`: train (or continue) the stand-in."""
    from enhi.config import load_run_config

    stop_at = None
    if argv[:1] == ["--stop-at"]:
        stop_at, argv = int(argv[1]), argv[2:]
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", argv)
    train(cfg, stop_at=stop_at)


if __name__ == "__main__":
    main(sys.argv[1:])
