"""The English stand-in, stage 2 (issue 22): the template stand-in taught free English, the model the demo adapts.

    uv run python -m demo.standin_free                  # train it (or go on from its last checkpoint)
    uv run python -m demo.standin_free --stop-at 6000   # end this sitting at step 6000's checkpoint
    touch demo_cache/runs/<run>/STOP                    # end the running sitting at its next checkpoint

Stage 1 (`demo.standin`, shipped as `assets/standin/standin_templates.nemo`, trained first when missing) has
learned to align and spell on template sentences in eight clean voices. This stage trains it on
`demo.standin_corpus` (free text over a large lexicon with held-out words, multi-sentence segments up to 20 s,
43 voices, noise and rooms) with the template corpus mixed in, so the template skill is kept while English
beyond the templates is learned. Validated on the demo's template set, free sentences and 10-20 s recordings.
Each run of the command continues exactly from the last checkpoint (the recipe's own resume) and appends a line
to `sittings.jsonl` in its run folder; the record beside the written .nemo lists the sittings, the curve, the
scores per set and the worst transcripts of each.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from demo import standin
from demo.common import CACHE, DEMO_SETTINGS, HISTORY_FILE, ROOT, cpu_name, history_path, run_config
from enhi.atomic import atomic_file
from enhi.config import ManifestSpec, NamedSet

SIZES = standin.SIZES  # stage 1's model, trained on
EVERY = 1000  # validation and checkpoint interval
BATCH_DURATION = 30  # seconds of audio per step
SPEC_AUGMENT = standin.SPEC_AUGMENT
CTC_WEIGHT = standin.CTC_WEIGHT
COMMAND = "uv run python -m demo.standin_free"


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    warmup: int


# From stage 1's weights the model aligns from the first step, so a third of stage 1's peak rate suffices; the
# steps are what one sitting affords on a 2-core CPU (57 minutes on 2026-12-04; this workplace keeps no cache
# between sessions, so a stage that needs several of them is lost with the machine).
STAGE = Stage("free", 8000, 1e-3, 300)
# Sampling weights of the two training corpora: the free corpus (itself 30% template sentences, but in other
# voices, noise and rooms) and stage 1's clean template corpus, there to keep the template skill (it kept part of
# it: template WER 0.163 after this stage against stage 1's 0.066).
MIX = {"free": 0.8, "templates": 0.2}


def run_name(stage: Stage, plan_sha256: str, before: str = "") -> str:
    """The stage's run folder: its name, steps and a digest of every setting, the corpus plans and the model it
    starts from, so a run is only ever resumed by the command that started it (a changed learning rate would
    otherwise continue an old schedule)."""
    key = json.dumps([SIZES, BATCH_DURATION, SPEC_AUGMENT, CTC_WEIGHT, MIX, stage, plan_sha256, before],
                     sort_keys=True, default=str)
    return f"standin_{stage.name}__{stage.steps}steps__{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def free_corpus(progress: bool = True) -> dict:
    """The stand-in's own training corpus (free text, segments, rooms and noise) and its three validation sets."""
    from demo.standin_corpus import build

    return build(CACHE / "standin_free_corpus", seed=0, progress=progress)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stop_at(step: int | None, every: int, stop_file: Path):
    """A callback that ends a sitting at the first checkpoint at or after `step`, or at the first checkpoint after
    `stop_file` appears (it is then removed); the next sitting resumes there, so a sitting ended either way is
    recorded whole."""
    import lightning.pytorch as pl

    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer, *_args) -> None:
            if trainer.global_step % every:
                return
            if stop_file.is_file():
                stop_file.unlink()
                trainer.should_stop = True
            if step is not None and trainer.global_step >= step:
                trainer.should_stop = True

    return StopAt()


def sittings(run_dir: Path) -> list[dict]:
    path = run_dir / "curves" / "sittings.jsonl"  # beside the curve, out of exp_manager's way
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def train_stage(cfg: DictConfig, stage: Stage, name: str, train: list[ManifestSpec], val: list[NamedSet], model,
                stop_at: int | None):
    """Train `model` through `stage` in run folder `name` (or go on from that folder's last checkpoint, which then
    replaces the weights `model` came with); returns (model, run folder, finished). Each sitting that trains is
    appended to the folder's sittings.jsonl. Also the joint-training reference's stages (bench_joint_reference)."""
    from enhi.training import configure_model, fit
    from enhi.transplant import install_cpu_tdt_loss

    t0 = time.time()
    c = run_config(cfg, name, stage.steps, EVERY, BATCH_DURATION)
    c.exp_manager.resume_if_exists = True  # started again, it continues from its last checkpoint
    c.exp_manager.checkpoint_callback_params.save_nemo_on_train_end = False
    c.model.train_ds.manifests = train
    c.model.validation_ds.sets = val
    c.model.optim.lr = stage.lr
    c.model.optim.sched.warmup_steps = stage.warmup
    c.model.spec_augment = SPEC_AUGMENT
    c.model.ctc_loss_weight = CTC_WEIGHT
    install_cpu_tdt_loss(model)
    configure_model(model, c, bnb_optim=False)
    run_dir = Path(c.exp_manager.exp_dir) / c.exp_manager.name
    trainer, _, timer = fit(model, c, history_path=history_path(c, fresh=False), eval_at_start=False,
                            callbacks=[_stop_at(stop_at, EVERY, run_dir / "STOP")])
    before = sittings(run_dir)
    sitting = {"from_step": before[-1]["to_step"] if before else 0, "to_step": trainer.global_step,
               "minutes": round((time.time() - t0) / 60, 1),
               "median_step_s": sorted(timer.times)[len(timer.times) // 2] if timer.times else None,
               "cpu": cpu_name(), "date": standin.now_utc()}
    if sitting["to_step"] > sitting["from_step"]:  # a run started again after its last step trains nothing
        with open(run_dir / "curves" / "sittings.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(sitting) + "\n")
    return model, run_dir, trainer.global_step >= stage.steps


def worst(predictions: list[dict], n: int = 4) -> list[dict]:
    """The `n` transcripts with the most word errors: where the stand-in still fails, for its record."""
    from enhi.evaluate import edit_distance

    def errors(p: dict) -> int:
        return edit_distance(p["text"].split(), p["pred_text"].split())

    return [{"ref": p["text"], "tdt": p["pred_text"], "ctc": p["pred_text_ctc"], "word_errors": errors(p)}
            for p in sorted(predictions, key=errors, reverse=True)[:n]]


def train(cfg: DictConfig, out: Path = standin.SHIPPED, first: Path = standin.TEMPLATES,
          stop_at: int | None = None) -> Path | None:
    """Train `first` (stage 1; trained by demo.standin when missing) through `STAGE` (or go on from its last
    checkpoint) and write `out` (.nemo) and its record (.json) beside it. With `stop_at`, the sitting ends at
    that step's checkpoint and nothing is written."""
    from enhi.evaluate import evaluate_sets
    from enhi.training import eval_sets, load_nemo_file, save_model

    if not first.is_file():
        standin.train(cfg, out=first)
    free, templates = free_corpus(), standin.corpus()
    val = {n: free["manifests"][n] for n in ("en_val", "en_free", "en_long")}
    plans = {"free": free["params"]["plan_sha256"], "templates": templates["params"]["plan_sha256"]}
    first_sha = file_sha256(first)
    name = run_name(STAGE, json.dumps(plans, sort_keys=True), first_sha)
    train_sets = [ManifestSpec(free["manifests"]["en_train"], "en", MIX["free"]),
                  ManifestSpec(templates["manifests"]["en_train"], "en", MIX["templates"])]
    val_sets = [NamedSet(n, path, "en") for n, path in val.items()]
    model, run_dir, finished = train_stage(cfg, STAGE, name, train_sets, val_sets, load_nemo_file(first), stop_at)
    if not finished:
        print(f"stand-in: stopped at step {sittings(run_dir)[-1]['to_step']} of {STAGE.steps}; the same command "
              "continues from there")
        return None
    history = [json.loads(line) for line in (run_dir / HISTORY_FILE).read_text().splitlines() if line]
    model.eval()
    scores = evaluate_sets(model, eval_sets(OmegaConf.create({"sets": [
        {"name": n, "path": p, "lang": "en"} for n, p in val.items()]})), 16)
    save_model(model, out)
    first_rel = first.relative_to(ROOT) if first.is_relative_to(ROOT) else Path(first.name)
    record = {
        **standin.model_fields(model, COMMAND, SIZES),
        "first_stage": {"model": str(first_rel), "sha256": first_sha, "command": standin.COMMAND},
        "stage": STAGE.__dict__,
        "mix": MIX,
        "batch_duration_s": BATCH_DURATION,
        "spec_augment": SPEC_AUGMENT,
        "ctc_loss_weight": CTC_WEIGHT,
        "run": name,
        "corpus_plan_sha256": plans,
        "corpus": {"params": free["params"], "counts": free["counts"], "hours": free["hours"], "voices": free["voices"]},
        "val_history": sorted({h["step"]: h for h in history}.values(), key=lambda h: h["step"]),
        "sittings": sittings(run_dir),
        "scores": {n: {k: r[k] for k in ("wer", "cer", "ctc_wer", "ctc_cer", "n")} for n, r in scores.items()},
        "worst": {n: worst(r["predictions"]) for n, r in scores.items()},
        **standin.versions_and_date(),
    }
    with atomic_file(out.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
    print("stand-in written to " + str(out) + ": " + ", ".join(
        f"{n} WER {r['wer']:.3f} (CTC CER {r['ctc_cer']:.3f})" for n, r in scores.items()))
    return out


def ensure(cfg: DictConfig, retrain: bool = False) -> Path:
    """The shipped stand-in, or a freshly trained one (both stages, in demo_cache/) when asked or when it is
    missing."""
    if standin.SHIPPED.is_file() and not retrain:
        return standin.SHIPPED
    first = standin.train(cfg, out=CACHE / standin.TEMPLATES.name)
    return train(cfg, out=CACHE / standin.SHIPPED.name, first=first)


def main(argv: list[str]) -> None:
    """`python -m demo.standin_free [--stop-at STEP] [yaml overrides]`: train (or continue) the stand-in."""
    from enhi.config import load_run_config

    stop_at = None
    if argv[:1] == ["--stop-at"]:
        stop_at, argv = int(argv[1]), argv[2:]
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + argv)
    train(cfg, stop_at=stop_at)


if __name__ == "__main__":
    main(sys.argv[1:])
