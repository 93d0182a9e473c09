"""Adaptation methods against each other: how fast Hindi is learned and how much English is kept.

    uv run python bench/bench_adaptation.py                          # every arm, seeds 0 1 2
    uv run python bench/bench_adaptation.py --arms plain recipe --seeds 0 1 2

Each (arm, seed) is one run of ft_110M_enhi_demo.py, the command users run, on the offline demo's data: the
shipped English stand-in, the merged tokenizer, the demo's English + Hindi corpus, its steps, learning rate
and batch size; validation sentences and voices are never used in training. Arms differ only in the
overrides listed in ARMS. Per checkpoint: English WER and Hindi CER (TDT head; CTC CER beside it). Per arm,
mean and standard deviation over seeds of: the steps until Hindi CER < 0.9 (the end of the "mute" stage),
the English dip (worst English WER minus the stand-in's), and the final values. Every arm stays in the table.

Each finished run is kept in bench/adaptation/<arm>__seed<k>.json (with the settings it ran with), so an
interrupted benchmark, or one extended by an arm or a seed, reruns only what is missing. The table and the
curves (bench/adaptation.png) go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402
from demo.common import DEMO_SETTINGS, HISTORY_FILE, cpu_name  # noqa: E402
from enhi.portable import relative_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "bench" / "adaptation"
PLOT = ROOT / "bench" / "adaptation.png"
MUTE_CER = 0.9  # Hindi CER below this = the model has started writing Hindi

# name -> (what it tests, overrides of the YAML / switches). "recipe" is the YAML's defaults; each "+ ..." arm
# turns one method on against "transplant_mean", the transplant as it was before these methods (NeMo's CTC
# weight included); each "the recipe with ..." arm changes one setting of the recipe.
BASE = ["model.adaptation.new_rows=mean", "model.adaptation.new_rows_lr_scale=1", "model.adaptation.encoder_lr_scale=1",
        "model.adaptation.heads_lr_scale=1", "model.adaptation.freeze_encoder_steps=0", "model.ctc_loss_weight=0.3"]
# Adapters hold every pretrained weight, so the recipe's slower encoder and heads groups would only slow the adapters.
ADAPTERS = ["model.adaptation.adapter_dim=32", "model.adaptation.encoder_lr_scale=1", "model.adaptation.heads_lr_scale=1"]
GATED = "model.adaptation.gate_by_language=true"
ARMS: dict[str, tuple[str, list[str]]] = {
    "plain": ("NeMo's change_vocabulary: fresh output layers", ["transplant=false"]),
    "transplant_mean": ("transplant, new rows = mean old row (the previous default)", BASE),
    "romanized": ("+ new rows from their romanization's English rows", [*BASE, "model.adaptation.new_rows=romanized"]),
    "new_rows_lr10": ("+ new rows at 10x the learning rate", [*BASE, "model.adaptation.new_rows_lr_scale=10"]),
    "slow_pretrained": ("+ pretrained encoder and heads at 0.25x the learning rate",
                        [*BASE, "model.adaptation.encoder_lr_scale=0.25", "model.adaptation.heads_lr_scale=0.25"]),
    "freeze_100": ("+ encoder held for the first 100 steps", [*BASE, "model.adaptation.freeze_encoder_steps=100"]),
    "ctc_0.1_alone": ("+ CTC weight 0.1 (NeMo's: 0.3)", [*BASE, "model.ctc_loss_weight=0.1"]),
    "english_70": ("the recipe with English 0.7 of the training mix (the demo's: 0.5)", ["english_share=0.7"]),
    "pretrained_0.1x": ("the recipe with pretrained encoder and heads at 0.1x (recipe: 0.25x)",
                        ["model.adaptation.encoder_lr_scale=0.1", "model.adaptation.heads_lr_scale=0.1"]),
    "ctc_0.3": ("the recipe with NeMo's CTC weight 0.3 (recipe: 0.1)", ["model.ctc_loss_weight=0.3"]),
    "warmup_150": ("the recipe with 150 warm-up steps (recipe: 50)", ["model.optim.sched.warmup_steps=150"]),
    "average_0.3": ("the recipe, then its pretrained weights averaged with the stand-in's at 0.3 at the end",
                    ["model.adaptation.average_with_pretrained=0.3"]),
    "english_only": ("the recipe on English data only: the drift fine-tuning itself causes (the floor)",
                     ["english_share=1.0"]),
    "distill_joint": ("the recipe + distillation of the TDT joint from the stand-in on English utterances (weight 1)",
                      ["model.adaptation.distill_weight=1", "model.adaptation.distill_on=joint"]),
    "l2": ("the recipe + a pull toward the stand-in's weights, plain L2 (weight 10)", ["model.adaptation.anchor_weight=10"]),
    "ewc": ("the recipe + a pull toward the stand-in's weights, Fisher-weighted (EWC, weight 10)",
            ["model.adaptation.anchor_weight=10", "model.adaptation.anchor_fisher=true"]),
    "adapters": ("the recipe with every pretrained weight held, residual adapters (width 32) learning with the new rows",
                 ADAPTERS),
    "adapters_l2": ("the adapters arm + NeMo's L2 on each adapter's change (0.001; damage control's regulariser)",
                    [*ADAPTERS, "model.adaptation.adapter_l2=0.001"]),
    "replay": ("the recipe with 0.8 of its English drawn from the stand-in's own training corpus (rehearsal)",
               ["english_replay=0.8"]),
    "replay_short": ("the replay arm with single sentences only (no 10-20 s segments)", ["english_replay_short=0.8"]),
    "replay_short_distill": ("the replay_short arm + distillation of the TDT joint (weight 1)",
                             ["english_replay_short=0.8", "model.adaptation.distill_weight=1",
                              "model.adaptation.distill_on=joint"]),
    "gated": ("language-gated (gate_by_language): English on the pretrained path by construction, adapters (width 64) "
              "and new rows for Hindi only; the language given", [GATED]),
    "gated_hindi": ("the gated arm with every batch Hindi (English listed at weight 0, for the router only: in this "
                    "mode English utterances train nothing)", [GATED, "english_share=0"]),
    "recipe": ("the YAML's defaults (the recipe users get)", []),
}
MIX = "english_share"  # not a YAML key: the bench rewrites the manifest list's weights (a dotlist can't index it)
# Not YAML keys either: each adds a replay corpus to the manifest list. The demo's English is its template corpus
# alone, narrower than what the stand-in learned (free text, 10-20 s segments, noise and rooms): rehearsal replays
# a sample of the stand-in's own corpus, drawn by its generator from the same sentence streams (the first
# sentences of each are the ones the stand-in trained on), voices and rooms. 1200 + 200 items (about 2 h) outlast
# what 400 steps of the demo draw from it (about 1.3 h at 0.8 x 0.5 x 30 s). Sources are drawn by utterance, so
# long replay items take batches' audio from Hindi: the short variant replays single sentences only.
REPLAY_CORPORA = {"english_replay": {"n_single": 1200, "n_segments": 200},
                  "english_replay_short": {"n_single": 1400, "n_segments": 0}}


def _replay_manifest(sizes: dict[str, int]) -> str:
    from demo.common import CACHE
    from demo.standin_corpus import build

    out = CACHE / "replay_corpus_{n_single}_{n_segments}".format(**sizes)
    return build(out, seed=0, progress=False, **sizes)["manifests"]["en_train"]


def _expand(override: str, config: Path) -> str:
    """`english_share=x` as the override of the whole manifest list, English at weight x, the others sharing the
    rest; at 1.0 the other languages are left out. `english_replay=x` (or `english_replay_short=x`): the same
    list with x of the English weight moved to that replay corpus (the total English share unchanged)."""
    key, _, value = override.partition("=")
    if key != MIX and key not in REPLAY_CORPORA:
        return override
    from omegaconf import OmegaConf

    manifests = OmegaConf.to_container(OmegaConf.load(config).model.train_ds.manifests)
    x = float(value)
    if key in REPLAY_CORPORA:
        english = [m for m in manifests if m["lang"] == "en"]
        total = sum(m["weight"] for m in english)
        for m in english:
            m["weight"] *= 1 - x
        manifests.append({"path": _replay_manifest(REPLAY_CORPORA[key]), "lang": "en", "weight": total * x})
    else:
        if x == 1.0:
            manifests = [m for m in manifests if m["lang"] == "en"]
        others = sum(m["lang"] != "en" for m in manifests)
        for m in manifests:
            m["weight"] = x if m["lang"] == "en" else (1 - x) / others
    return "model.train_ds.manifests=" + json.dumps(manifests)


def _demo_config() -> tuple[Path, Path]:
    """The demo's prepared config (corpus, stand-in, merged tokenizer) written as a YAML the runs start from."""
    from omegaconf import OmegaConf

    from demo import pipeline
    from demo.common import CACHE
    from enhi.atomic import atomic_file
    from enhi.config import load_run_config

    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS)
    cfg = pipeline.prepare(cfg)
    path = CACHE / "bench_adaptation.yaml"
    with atomic_file(path, "w", encoding="utf-8") as f:  # two bench processes may start side by side
        f.write(OmegaConf.to_yaml(cfg))
    return path, Path(cfg.init_from_nemo_model)


def _digest(path: Path, text: bool = False) -> str:
    """sha256 of a file; of a text file (a config) with this clone's paths relative, so clones agree."""
    data = relative_text(path.read_text(encoding="utf-8"), ROOT).encode() if text else path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _settings(arm: str, seed: int, steps: int, every: int, config: Path, standin: Path) -> list[str]:
    from demo import pipeline, validation
    from demo.common import CACHE
    from demo.corpus import CORPUS_VERSION

    return [
        *[_expand(o, config) for o in ARMS[arm][1]],
        f"seed={seed}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={every}",
        f"trainer.log_every_n_steps={every}",
        f"model.train_ds.batch_duration={pipeline.BATCH_DURATION}",
        f"model.optim.lr={pipeline.FINETUNE_LR}",
        f"exp_manager.exp_dir={CACHE / 'bench_runs'}",
        f"exp_manager.name={arm}__seed{seed}",
        "exp_manager.resume_if_exists=false",
        "exp_manager.checkpoint_callback_params.save_nemo_on_train_end=false",
        "exp_manager.checkpoint_callback_params.save_top_k=1",
        f"# stand-in sha256 {_digest(standin)}",
        f"# demo config sha256 {_digest(config, text=True)}",  # the YAML as the demo prepares it (data, augmentation)
        # The manifests' paths stay put when the corpus text changes; its plan hash does not.
        f"# demo corpus plan {json.loads((pipeline.CORPUS / 'corpus_info.json').read_text())['params']['plan_sha256'][:16]}",
        f"# validation sets {json.loads((validation.OUT / 'validation_info.json').read_text())['key'][:16]}",
        f"# corpus version {CORPUS_VERSION}",  # the synthesis (demo.corpus.render), which the plan hash does not see
    ]


def run(arm: str, seed: int, steps: int, every: int, config: Path, standin: Path, rerun: bool = False) -> dict:
    """One (arm, seed): reuse its stored result if it ran with the same settings, else run the script."""
    from demo.common import CACHE
    from enhi.atomic import atomic_file

    settings = _settings(arm, seed, steps, every, config, standin)
    recorded = [relative_text(s, ROOT) for s in settings]  # as stored: no folder of this machine (clones agree)
    out = RUNS / f"{arm}__seed{seed}.json"
    if out.is_file() and not rerun:
        stored = json.loads(out.read_text())
        if stored["settings"] == recorded:
            return stored
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import load_script

    script = load_script(ROOT / "ft_110M_enhi_demo.py")
    argv = [f"config={config}", *[s for s in settings if not s.startswith("#")]]
    print(f"\n#### {arm}, seed {seed}: {' '.join(ARMS[arm][1]) or '(YAML defaults)'}", flush=True)
    (out_run,) = script.main(argv).values()
    hist_file = CACHE / "bench_runs" / f"{arm}__seed{seed}" / HISTORY_FILE
    history = [json.loads(line) for line in hist_file.read_text().splitlines()]
    # Steps with a validation in them (every `every`) are left out: the median is the training step alone.
    steps = [t for i, t in enumerate(out_run["step_seconds"], 1) if i % every]
    result = {"arm": arm, "seed": seed, "settings": recorded, "history": history,
              "median_step_s": statistics.median(steps), "cpu": cpu_name()}
    RUNS.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return result


def _mean_sd(xs: list[float], steps: int = 0) -> str:
    if any(math.isinf(x) for x in xs):  # some seeds never got there within `steps`
        finite = [x for x in xs if not math.isinf(x)]
        return f"> {steps} in {len(xs) - len(finite)}/{len(xs)} seeds" + (f", else {statistics.mean(finite):.0f}" if finite else "")
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}" if max(xs) < 5 else f"{statistics.mean(xs):.0f} ± {sd:.0f}"


def _step_s(rs: list[dict]) -> str:
    """Median training-step seconds over the seeds that recorded it (runs stored before it was recorded: -)."""
    timed = [r["median_step_s"] for r in rs if "median_step_s" in r]
    return f"{statistics.median(timed):.3f} ({len(timed)})" if timed else "-"


def on_current_corpus(rs: list[dict]) -> bool:
    """Whether every run of an arm was measured on this corpus version (older runs stay in the table, marked)."""
    from demo.corpus import CORPUS_VERSION

    return all(f"# corpus version {CORPUS_VERSION}" in r["settings"] for r in rs)


def summarize(runs: dict[str, list[dict]], standin_en_wer: float, steps: int) -> str:
    def out_of_mute(h: list[dict]) -> float:
        return next((p["step"] for p in h if p["val_hi_cer"] < MUTE_CER), math.inf)

    def name(arm: str) -> str:
        return arm if on_current_corpus(runs[arm]) else f"{arm} †"

    lines = [
        f"Stand-in before adaptation: English WER {standin_en_wer:.3f}. Mean ± standard deviation over seeds.",
        "",
        "| arm | seeds | steps to Hindi CER < 0.9 | English dip (worst − stand-in) | final English WER | final Hindi CER | final Hindi CTC CER | median step s | what it tests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for arm, rs in runs.items():
        hs = [r["history"] for r in rs]
        lines.append(
            f"| {name(arm)} | {len(rs)} | {_mean_sd([out_of_mute(h) for h in hs], steps)} "
            f"| {_mean_sd([max(p['val_en_wer'] for p in h) - standin_en_wer for h in hs])} "
            f"| {_mean_sd([h[-1]['val_en_wer'] for h in hs])} | {_mean_sd([h[-1]['val_hi_cer'] for h in hs])} "
            f"| {_mean_sd([h[-1].get('val_hi_ctc_cer', math.nan) for h in hs])} | {_step_s(rs)} | {ARMS[arm][0]} |"
        )
    steps_axis = [p["step"] for p in next(iter(runs.values()))[0]["history"]]
    lines += ["", "Per checkpoint, mean over seeds: English WER / Hindi CER.", "",
              "| arm | " + " | ".join(str(s) for s in steps_axis) + " |", "|---|" + "---:|" * len(steps_axis)]
    for arm, rs in runs.items():
        cells = []
        for i in range(len(steps_axis)):
            en = statistics.mean(r["history"][i]["val_en_wer"] for r in rs)
            hi = statistics.mean(r["history"][i]["val_hi_cer"] for r in rs)
            cells.append(f"{en:.3f} / {hi:.3f}")
        lines.append(f"| {name(arm)} | " + " | ".join(cells) + " |")
    lines += ["", "median step s: median over the timed seeds (their count in brackets) of each run's median training "
              "step, validation steps left out; runs stored before step times were recorded show -."]
    if not all(on_current_corpus(rs) for rs in runs.values()):
        lines += ["", "† measured on the previous corpus (version 2, whose breathy eSpeak voices differed from run to "
                  "run and whose validation audio differs from today's) and not rerun: compare these arms with each "
                  "other, not with the stand-in line above or with the unmarked arms."]
    if "recipe" in runs and "plain" in runs:
        lines += ["", *targets(runs["recipe"], runs["plain"], standin_en_wer)]
        for arm in runs:
            if GATED in ARMS[arm][1]:
                lines += ["", *gated_targets(arm, runs[arm], runs["recipe"], runs["plain"], standin_en_wer)]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _mean_at(rs: list[dict], key: str) -> list[float]:
    return [statistics.mean(r["history"][i][key] for r in rs) for i in range(len(rs[0]["history"]))]


def gated_targets(arm: str, gated: list[dict], recipe: list[dict], plain: list[dict], standin_en_wer: float) -> list[str]:
    """The language-gated mode's targets (issue 41), MET or MISSED with the numbers (means over seeds)."""
    steps = [p["step"] for p in gated[0]["history"]]
    g_hi, p_hi, r_hi = _mean_at(gated, "val_hi_cer"), _mean_at(plain, "val_hi_cer"), _mean_at(recipe, "val_hi_cer")
    en_diff = max(abs(p["val_en_wer"] - standin_en_wer) for r in gated for p in r["history"])
    after = [i for i, s in enumerate(steps) if s >= steps[-1] / 3]
    # Without the language: the router is fit as training starts, after the step-0 validation; judged at the end.
    auto_en, auto_hi = (statistics.mean(r["history"][-1][k] for r in gated) for k in ("val_en_auto_wer",
                                                                                        "val_hi_auto_cer"))
    routed = {lang: statistics.mean(r["history"][-1][f"val_{lang}_routed"] for r in gated) for lang in ("en", "hi")}
    return [
        f"Targets for {arm} (means over seeds; routed: the share of each validation set the router sends to its own "
        f"language at the end, en {routed['en']:.3f}, hi {routed['hi']:.3f}):",
        f"- English with the language given, WER equal to the stand-in's at every checkpoint of every seed: "
        f"{_verdict(en_diff == 0)} (largest difference {en_diff:.3f}; transcripts identical: tests/test_language_gate.py)",
        f"- Hindi with the language given, CER <= plain's from a third of training on: "
        f"{_verdict(all(g_hi[i] <= p_hi[i] for i in after))} ("
        + ", ".join(f"step {steps[i]}: {g_hi[i]:.3f} vs {p_hi[i]:.3f}" for i in after) + ")",
        f"- Hindi at the end within 0.02 of the recipe's: {_verdict(g_hi[-1] <= r_hi[-1] + 0.02)} "
        f"({g_hi[-1]:.3f} vs {r_hi[-1]:.3f})",
        f"- without the language, English WER within 0.02 of the stand-in's at the end: "
        f"{_verdict(auto_en <= standin_en_wer + 0.02)} ({auto_en:.3f} vs {standin_en_wer:.3f})",
        f"- without the language, Hindi CER within 0.03 of the language-given one at the end: "
        f"{_verdict(auto_hi <= g_hi[-1] + 0.03)} ({auto_hi:.3f} vs {g_hi[-1]:.3f})",
        f"- median step time at most 1.3x the recipe's: {step_ratio(gated, recipe)}",
    ]


def targets(recipe: list[dict], plain: list[dict], standin_en_wer: float) -> list[str]:
    """The issue's targets for the default recipe, each MET or MISSED with the numbers it was judged on (means
    over seeds, at the stored checkpoints)."""
    steps = [p["step"] for p in recipe[0]["history"]]
    r_hi, p_hi, r_en = _mean_at(recipe, "val_hi_cer"), _mean_at(plain, "val_hi_cer"), _mean_at(recipe, "val_en_wer")
    after = [i for i, s in enumerate(steps) if s >= steps[-1] / 3]
    mute = {name: next((s for s, c in zip(steps, m, strict=True) if c < MUTE_CER), math.inf)
            for name, m in (("recipe", r_hi), ("plain", p_hi))}

    worst = max(r_en[1:])
    return [
        "Targets for the recipe (means over seeds):",
        f"- Hindi CER <= plain's at every checkpoint from a third of training on: "
        f"{_verdict(all(r_hi[i] <= p_hi[i] for i in after))} ("
        + ", ".join(f"step {steps[i]}: {r_hi[i]:.3f} vs {p_hi[i]:.3f}" for i in after) + ")",
        f"- out of the mute stage (mean Hindi CER < {MUTE_CER}) in at most half of plain's steps: "
        f"{_verdict(mute['recipe'] <= mute['plain'] / 2)} (recipe at step {mute['recipe']}, plain at {mute['plain']})",
        f"- English WER never above the stand-in's + 0.02 ({standin_en_wer + 0.02:.3f}): {_verdict(worst <= standin_en_wer + 0.02)}"
        f" (worst {worst:.3f})",
        f"- English WER at the end within the stand-in's + 0.01 ({standin_en_wer + 0.01:.3f}): "
        f"{_verdict(r_en[-1] <= standin_en_wer + 0.01)} ({r_en[-1]:.3f})",
        f"- median step time at most 1.3x plain's: {step_ratio(recipe, plain)}",
    ]


def step_ratio(a: list[dict], b: list[dict]) -> str:
    """The first arm's median step time over the second's, judged against 1.3, or why it cannot be."""
    ta, tb = ([r["median_step_s"] for r in rs if "median_step_s" in r] for rs in (a, b))
    if not ta or not tb:
        return "not measured (no timed run of both arms; rerun them with --rerun)"
    ratio = statistics.median(ta) / statistics.median(tb)
    return f"{'MET' if ratio <= 1.3 else 'MISSED'} ({ratio:.2f}x: {statistics.median(ta):.3f} s vs {statistics.median(tb):.3f} s)"


def plot(runs: dict[str, list[dict]], standin: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, ref, title in ((axes[0], "val_en_wer", standin["en"]["wer"], "English WER"),
                                (axes[1], "val_hi_cer", standin["hi"]["cer"], "Hindi CER")):
        top = 0.0
        for arm, rs in runs.items():
            steps = np.array([p["step"] for p in rs[0]["history"]])
            vals = np.array([[p[key] for p in r["history"]] for r in rs])
            mean, sd = vals.mean(0), vals.std(0)
            first = 1 if arm == "plain" else 0  # plain's step 0 is garbage (WER > 1): keep the scale readable
            ax.plot(steps[first:], mean[first:], marker="o", label=arm)
            ax.fill_between(steps[first:], (mean - sd)[first:], (mean + sd)[first:], alpha=0.2)
            top = max(top, float((mean + sd)[first:].max()))
        ax.axhline(ref, color="gray", linestyle="--", label="stand-in")
        ax.set_ylim(0, top * 1.05)
        ax.set_xlabel("fine-tuning step")
        ax.set_title(f"{title} (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    from demo import pipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=pipeline.FINETUNE_STEPS, help="fine-tuning steps (the demo's)")
    p.add_argument("--every", type=int, default=pipeline.FINETUNE_EVERY, help="validate every N steps")
    p.add_argument("--report-only", action="store_true", help="tabulate the stored runs without running any")
    p.add_argument("--rerun", action="store_true", help="run the chosen arms and seeds again even when stored (e.g. to "
                   "record step times of runs stored before they were)")
    args = p.parse_args()

    config, standin = _demo_config()
    runs: dict[str, list[dict]] = {}
    same_standin = f"# stand-in sha256 {_digest(standin)}"  # runs from another stand-in belong to another table
    for arm in ARMS:  # the chosen arms run (or are reused); every other stored arm stays in the table as stored
        for seed in args.seeds:
            stored = RUNS / f"{arm}__seed{seed}.json"
            if args.report_only or arm not in args.arms:
                if stored.is_file() and same_standin in (r := json.loads(stored.read_text()))["settings"]:
                    runs.setdefault(arm, []).append(r)
                continue
            runs.setdefault(arm, []).append(run(arm, seed, args.steps, args.every, config, standin, args.rerun))
    from omegaconf import OmegaConf

    scores = pipeline.standin_scores(OmegaConf.load(config))
    table = summarize(runs, scores["en"]["wer"], args.steps)
    plot(runs, scores, PLOT)
    print("\n" + table)
    title = f"Adaptation methods on the demo corpus ({args.steps} steps, bench/bench_adaptation.py)"
    write_section("adaptation", "\n".join(header(title)) + "\n" + table + "\n\n![curves](adaptation.png)\n")


if __name__ == "__main__":
    main()
