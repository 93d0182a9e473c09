"""Joint-training reference: what a model of the stand-in's size holds of both languages at once (issue 25).

    uv run python bench/bench_joint_reference.py --seeds 0                 # about 2 h per seed on a 2-core CPU
    uv run python bench/bench_joint_reference.py --seeds 0 --stop-at 6000  # end this sitting at that checkpoint
    uv run python bench/bench_joint_reference.py --report-only             # the table from the stored records

The shipped stand-in's two stages (`demo.standin`, then `demo.standin_free`) run again from scratch with the
merged vocabulary and the fine-tune's Hindi training set in half of every batch (half of each batch's utterances
from each language, as the fine-tune mixes them): stage 1 on the template corpus with stage 1's steps, rate and
warm-up; stage 2 from stage 1's weights on stage 2's English mix with stage 2's rate and warm-up, for stage 2's
steps plus the fine-tune's. Sizes, batch, augmentation and CTC share are the stand-in's. So the reference has run
as many steps as the recipe's model has (the stand-in's, then the fine-tune's). Validation: the demo's English and
Hindi sets (sentences and voices no training used), every 1000 steps. If the reference ends with English above
the recipe's target (the stand-in's WER + 0.01), the target asks more than the model's size holds beside Hindi in
these steps, and the recipe's distance to the reference is the measure.

Long: each stage continues exactly from its last checkpoint when the command is started again (the stand-in's
own resume, `demo.standin_free.train_stage`; `touch demo_cache/runs/<run>/STOP` ends a sitting at its next
checkpoint). Each finished seed is kept in bench/joint_reference/seed<k>.json with its settings and sittings;
the table goes to bench/RESULTS.md. The previous stand-in's reference (template-only, 6000 steps) is kept in
bench/joint_reference/template_standin/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402
from demo.common import DEMO_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "bench" / "joint_reference"
ADAPTATION = ROOT / "bench" / "adaptation"
HINDI_SHARE = 0.5  # of each batch's utterances, as the fine-tune's mix


def stages() -> list[dict]:
    """The stand-in's two stages as the reference runs them, with the fine-tune's steps added to the second."""
    from demo import pipeline, standin, standin_free

    s2 = standin_free.STAGE
    english = 1.0 - HINDI_SHARE
    return [
        {"name": "templates", "steps": standin.STEPS, "lr": standin.LR, "warmup": standin.WARMUP,
         "english": {"templates": english}},
        {"name": s2.name, "steps": s2.steps + pipeline.FINETUNE_STEPS, "lr": s2.lr, "warmup": s2.warmup,
         "english": {k: round(english * w, 6) for k, w in standin_free.MIX.items()}},
    ]


def settings(seed: int) -> dict:
    """What a seed runs with; a stored record is reused, and a run folder resumed, only if these match."""
    from demo import pipeline, standin, standin_free

    return {
        "seed": seed,
        "stages": stages(),
        "hindi": {"set": f"demo corpus hi_train, {pipeline.N_TRAIN} sentences", "share": HINDI_SHARE},
        "sizes": standin.SIZES,
        "batch_duration_s": standin_free.BATCH_DURATION,
        "spec_augment": standin_free.SPEC_AUGMENT,
        "ctc_loss_weight": standin_free.CTC_WEIGHT,
        "every": standin_free.EVERY,
    }


def _run_name(s: dict, stage: dict, corpora: dict) -> str:
    key = json.dumps([s, corpora], sort_keys=True)
    return f"joint_reference__seed{s['seed']}__{stage['name']}__{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def train(s: dict, stop_at: int | None = None) -> dict | None:
    """One seed with settings `s`, or its next sitting; returns its record once both stages are done, else None.
    `stop_at` counts steps over both stages (the sitting ends at the first checkpoint at or after it)."""
    from demo import pipeline, standin, standin_free
    from demo.common import CACHE, HISTORY_FILE
    from enhi.config import ManifestSpec, load_run_config
    from enhi.tiny_model import build_parakeet_model
    from enhi.training import load_nemo_file, save_model

    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS)
    cfg = pipeline.prepare(cfg)  # the demo's corpus, validation sets and merged tokenizer
    cfg.seed = s["seed"]
    free, templates = standin_free.free_corpus(), standin.corpus()
    english = {"templates": templates["manifests"]["en_train"], "free": free["manifests"]["en_train"]}
    hindi = next(m.path for m in cfg.model.train_ds.manifests if m.lang == "hi")
    corpora = {"templates": templates["params"]["plan_sha256"], "free": free["params"]["plan_sha256"]}
    done, init, history, stage_records = 0, None, [], []
    for stage in s["stages"]:
        name = _run_name(s, stage, corpora)
        run_dir = CACHE / "runs" / name
        final = run_dir / "final.nemo"
        if not final.is_file():
            if stop_at is not None and stop_at <= done:
                return None
            model = load_nemo_file(init) if init else build_parakeet_model(
                Path(cfg.model.tokenizer.dir), seed=s["seed"], **s["sizes"])
            train_sets = [ManifestSpec(english[k], "en", w) for k, w in stage["english"].items()]
            train_sets.append(ManifestSpec(hindi, "hi", s["hindi"]["share"]))
            model, run_dir, finished = standin_free.train_stage(
                cfg, standin_free.Stage(stage["name"], stage["steps"], stage["lr"], stage["warmup"]), name,
                train_sets, list(cfg.model.validation_ds.sets), model, None if stop_at is None else stop_at - done)
            if not finished:
                return None
            # The next stage starts from this file, whether it runs in this sitting or a later one: the same
            # weights either way.
            save_model(model, final)
        lines = (run_dir / HISTORY_FILE).read_text().splitlines()
        by_step = {h["step"]: h for h in map(json.loads, filter(None, lines))}  # a resumed sitting may repeat one
        history += [{**by_step[k], "step": k + done, "stage": stage["name"]} for k in sorted(by_step)]
        stage_records.append({"name": stage["name"], "run": name, "sittings": standin_free.sittings(run_dir)})
        done += stage["steps"]
        init = final
    return {
        "command": f"uv run python bench/bench_joint_reference.py --seeds {s['seed']}",
        "settings": s,
        "stages": stage_records,
        "history": history,
    }


def _final(history: list[dict]) -> dict:
    last = history[-1]
    return {"en": last["val_en_wer"], "hi": last["val_hi_cer"], "step": last["step"]}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _at(history: list[dict], step: int) -> dict | None:
    return next((h for h in history if h["step"] == step), None)


def report(records: list[dict]) -> str:
    """The reference beside the stand-in and the recipe as bench_adaptation measured them (same validation)."""
    from demo import pipeline

    runs = [json.loads(p.read_text())["history"] for p in sorted(ADAPTATION.glob("recipe__seed*.json"))]
    standin_en = statistics.mean(h[0]["val_en_wer"] for h in runs if h[0]["step"] == 0)
    recipe = [_final(h) for h in runs]
    total = sum(stage["steps"] for stage in stages())
    standin_steps = total - pipeline.FINETUNE_STEPS
    joint = [_final(r["history"]) for r in records]
    lines = [
        "| model | seeds | steps | English WER | Hindi CER |",
        "|---|---:|---:|---:|---:|",
        f"| stand-in (English only, two stages) | 1 | {standin_steps} | {standin_en:.3f} | - |",
        f"| recipe (stand-in + {pipeline.FINETUNE_STEPS} fine-tune steps) | {len(recipe)} | {total} | "
        f"{_cell([r['en'] for r in recipe])} | {_cell([r['hi'] for r in recipe])} |",
        f"| joint reference (both languages from scratch) | {len(joint)} | "
        f"{joint[0]['step'] if joint else '-'} | {_cell([r['en'] for r in joint])} | {_cell([r['hi'] for r in joint])} |",
    ]
    if not joint:
        return "\n".join(lines)
    lines += ["", "Joint reference, per checkpoint (English WER / Hindi CER, per seed):", "",
              "| step | stage | " + " | ".join(f"seed {r['settings']['seed']}" for r in records) + " |",
              "|---:|---|" + "---:|" * len(records)]
    for step in sorted({h["step"] for r in records for h in r["history"]}):
        found = [_at(r["history"], step) for r in records]
        stage = next(h["stage"] for h in found if h)
        cells = [f"{h['val_en_wer']:.3f} / {h['val_hi_cer']:.3f}" if h else "-" for h in found]
        lines.append(f"| {step} | {stage} | " + " | ".join(cells) + " |")
    target = standin_en + 0.01
    en, hi = statistics.mean(r["en"] for r in joint), statistics.mean(r["hi"] for r in joint)
    ref_start = [h["val_en_wer"] for r in records if (h := _at(r["history"], standin_steps))]
    lines += ["", f"The recipe's end-of-training English target is the stand-in's WER + 0.01 = {target:.3f}; the "
              f"joint reference ends {'within' if en <= target else 'above'} it, at {en:.3f}. Recipe minus "
              f"reference at the end (step {total}): English {statistics.mean(r['en'] for r in recipe) - en:+.3f}, "
              f"Hindi CER {statistics.mean(r['hi'] for r in recipe) - hi:+.3f}."]
    if ref_start:
        lines[-1] += (f" At step {standin_steps}, where the recipe starts (the stand-in), English "
                      f"{standin_en - statistics.mean(ref_start):+.3f}.")
    lines[-1] += (f" Exposure differs: the reference saw English in about {1 - HINDI_SHARE:.0%} of its steps' "
                  "utterances, the recipe English in all of the stand-in's and half of the fine-tune's, Hindi in "
                  "half of the fine-tune's.")
    lines += ["", f"The recipe's distance to the reference's end (step {total}, mean of {len(joint)} seed(s)) at each of "
              f"its checkpoints (mean ± sd over {len(runs)} seeds; negative: the recipe is better):", "",
              "| fine-tune step | step overall | recipe English WER | minus reference | recipe Hindi CER | minus reference |",
              "|---:|---:|---:|---:|---:|---:|"]
    for step in sorted(set.intersection(*({h["step"] for h in r} for r in runs))):
        at = [_at(r, step) for r in runs]
        r_en, r_hi = [h["val_en_wer"] for h in at], [h["val_hi_cer"] for h in at]
        lines.append(f"| {step} | {standin_steps + step} | {_cell(r_en)} | {statistics.mean(r_en) - en:+.3f} | "
                     f"{_cell(r_hi)} | {statistics.mean(r_hi) - hi:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from enhi.atomic import atomic_file
    from enhi.console import quiet_libraries

    quiet_libraries()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--report-only", action="store_true", help="tabulate the stored records without training")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end this sitting at the first checkpoint at or after this step (both stages counted)")
    args = p.parse_args(argv)
    RECORDS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:
            s = settings(seed)
            path = RECORDS / f"seed{seed}.json"
            if path.is_file() and json.loads(path.read_text())["settings"] == s:
                print(f"seed {seed}: stored ({path.relative_to(ROOT)})")
                continue
            record = train(s, args.stop_at)
            if record is None:
                print(f"seed {seed}: stopped at a checkpoint; the same command continues from there")
                return
            with atomic_file(path, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("seed*.json"))]
    text = report(records)
    print(text)
    write_section("joint-reference", "\n".join([*header("Joint-training reference (bench/bench_joint_reference.py)"),
                                                 text]))


if __name__ == "__main__":
    main(sys.argv[1:])
