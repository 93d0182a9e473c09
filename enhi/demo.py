"""The offline demo around ft_110M_enhi_demo.py: everything a checkpoint and a data set would otherwise give.

1. a synthesized English + Hindi corpus (eSpeak NG, several voices, unseen voices in validation);
2. an English stand-in for the pretrained model: the Parakeet architecture at a small size with Parakeet's real
   English tokenizer, trained on the English part until it transcribes it;
3. the merged English + Hindi tokenizer (merge_token's library, from the shipped tokenizers);
then the script adapts and fine-tunes two arms on the same data and steps (transplant, and NeMo's plain
`change_vocabulary`), and `report` writes a table and a plot. Steps 1-3 and the stand-in's own scores are
cached under `demo_cache/`, so a second run goes straight to adaptation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from enhi.atomic import atomic_dir, atomic_file
from enhi.config import ManifestSpec, NamedSet

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "demo_cache"
TOKENIZERS = ROOT / "assets" / "tokenizers"

# Corpus and model sizes chosen so the whole demo fits in ~20 minutes on a 2-core CPU.
N_TRAIN, N_VAL = 400, 40
STANDIN = dict(d_model=96, n_layers=4, n_heads=4, pred_hidden=96, joint_hidden=96, subsampling_conv_channels=32)
STANDIN_STEPS = 1000
STANDIN_LR = 3e-3
FINETUNE_STEPS = 800
FINETUNE_EVERY = 100
FINETUNE_LR = 2e-3  # a tiny model learns a new script faster at a higher rate than the YAML's (for 110M)
BATCH_DURATION = 30  # seconds of audio per step: small batches, more updates per CPU second


@dataclass(frozen=True)
class Arm:
    name: str
    transplant: bool


def arms(transplant: bool, offline_demo: bool) -> list[Arm]:
    """The demo compares both ways of changing the vocabulary; a real run does the one the switch asks for."""
    if offline_demo:
        return [Arm("transplant", True), Arm("plain_change_vocabulary", False)]
    return [Arm("transplant" if transplant else "plain_change_vocabulary", transplant)]


def _run_cfg(cfg: DictConfig, name: str, steps: int, every: int) -> DictConfig:
    c = copy.deepcopy(cfg)
    c.trainer.max_steps = steps
    c.trainer.val_check_interval = every
    c.trainer.log_every_n_steps = every  # NeMo decodes a training batch for its WER log at this interval
    c.model.train_ds.batch_duration = BATCH_DURATION
    c.exp_manager.exp_dir = str(CACHE / "runs")
    c.exp_manager.name = name
    c.exp_manager.resume_if_exists = False  # each demo arm starts fresh from the adapted model
    c.exp_manager.checkpoint_callback_params.save_top_k = 1
    return c


def arm_config(cfg: DictConfig, arm: Arm) -> DictConfig:
    c = _run_cfg(cfg, arm.name, FINETUNE_STEPS, FINETUNE_EVERY)
    c.model.optim.lr = FINETUNE_LR
    return c


def history_path(cfg: DictConfig, fresh: bool = True) -> str:
    """Validation curve of a run, JSON lines; `fresh` starts it anew (a resumed run appends)."""
    path = Path(cfg.exp_manager.exp_dir) / cfg.exp_manager.name / "val_history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        path.unlink(missing_ok=True)
    return str(path)


def _english_tokenizer_dir() -> Path:
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    out = CACHE / "tokenizer_en1024"
    if not (out / "tokenizer.model").is_file():
        with atomic_dir(out, force=True) as tmp:
            write_nemo_tokenizer_folder(TOKENIZERS / "en1024" / "tokenizer.model", tmp)
    return out


def _merged_tokenizer_dir(standin_nemo: Path) -> Path:
    from enhi.tokenizer_merge import merge_to_folder

    out = CACHE / "tokenizer_en1024_hi256"
    if not (out / "merge_report.json").is_file():
        merge_to_folder(base=str(standin_nemo), new=str(TOKENIZERS / "hi256"), out_dir=out, force=True)
    return out


def _standin(cfg: DictConfig, corpus: dict) -> Path:
    """Train (once) the English stand-in; returns its .nemo."""
    from enhi.tiny_model import build_parakeet_model
    from enhi.training import configure_model, fit, save_model
    from enhi.transplant import install_cpu_tdt_loss

    path = CACHE / "standin_en.nemo"
    if path.is_file():
        return path
    c = _run_cfg(cfg, "standin_en", STANDIN_STEPS, STANDIN_STEPS // 4)
    c.model.train_ds.manifests = [ManifestSpec(corpus["en_train"], "en", 1.0)]
    c.model.validation_ds.sets = [NamedSet("en", corpus["en_val"], "en")]
    c.model.optim.lr = STANDIN_LR
    c.model.optim.sched.warmup_steps = 100
    c.exp_manager.checkpoint_callback_params.save_nemo_on_train_end = False
    model = build_parakeet_model(_english_tokenizer_dir(), seed=cfg.seed, **STANDIN)
    install_cpu_tdt_loss(model)
    configure_model(model, c, bnb_optim=False)
    print(f"[demo] training the English stand-in: {STANDIN_STEPS} steps ...")
    fit(model, c, history_path=history_path(c), eval_at_start=False)  # a random model decodes slowly
    return save_model(model, path)


def prepare(cfg: DictConfig) -> DictConfig:
    """Steps 1-3 of the demo (cached); returns the run config pointed at the demo's data, model and tokenizer."""
    from enhi.corpus import build_corpus

    info = build_corpus(CACHE / "corpus", n_train_per_lang=N_TRAIN, n_val_per_lang=N_VAL, seed=0)
    man = CACHE / "corpus" / "manifests"
    corpus = {f"{lang}_{split}": str(man / f"{lang}_{split}.json") for lang in ("en", "hi") for split in ("train", "val")}
    print(f"[demo] corpus: {info.get('counts', info)}")
    standin = _standin(cfg, corpus)
    cfg = copy.deepcopy(cfg)
    cfg.init_from_nemo_model = str(standin)
    cfg.model.tokenizer.dir = str(_merged_tokenizer_dir(standin))
    cfg.model.train_ds.manifests = [ManifestSpec(corpus["en_train"], "en", 0.5), ManifestSpec(corpus["hi_train"], "hi", 0.5)]
    cfg.model.validation_ds.sets = [NamedSet("en", corpus["en_val"], "en"), NamedSet("hi", corpus["hi_val"], "hi")]
    return cfg


def _standin_scores(cfg: DictConfig) -> dict:
    """The stand-in before adaptation on the same validation sets (cached with the stand-in)."""
    from enhi.evaluate import evaluate_sets
    from enhi.training import eval_sets, load_model

    path = CACHE / "standin_scores.json"
    if path.is_file():
        return json.loads(path.read_text())
    model = load_model(cfg)
    r = evaluate_sets(model, eval_sets(cfg.model.validation_ds), cfg.model.validation_ds.batch_size)
    scores = {name: {k: v for k, v in x.items() if k != "predictions"} for name, x in r.items()}
    with atomic_file(path) as f:
        json.dump(scores, f, indent=1)
    return scores


def report(cfg: DictConfig, results: dict) -> Path:
    """Print and save the comparison table and the plot of validation error per language against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = _standin_scores(cfg)
    out = CACHE / "results"
    rows = [("stand-in, before adaptation", 0, before["en"]["wer"], before["hi"]["cer"], float("nan"))]
    for name, r in results.items():
        h = r["history"]
        sec = sorted(r["step_seconds"])[len(r["step_seconds"]) // 2] if r["step_seconds"] else float("nan")
        rows.append((f"{name}, step 0", h[0]["step"], h[0]["val_en_wer"], h[0]["val_hi_cer"], float("nan")))
        rows.append((f"{name}, step {h[-1]['step']}", h[-1]["step"], h[-1]["val_en_wer"], h[-1]["val_hi_cer"], sec))
    lines = [
        "| model | step | English WER | Hindi CER | median s/step (CPU) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {n} | {s} | {e:.3f} | {c:.3f} | {t:.2f} |" for n, s, e, c, t in rows],
    ]
    table = "\n".join(lines)
    print("\n" + table + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, title) in zip(axes, [("val_en_wer", "English WER"), ("val_hi_cer", "Hindi CER")], strict=True):
        for name, r in results.items():
            ax.plot([p["step"] for p in r["history"]], [p[key] for p in r["history"]], marker="o", label=name)
        ref = before["en"]["wer"] if key == "val_en_wer" else before["hi"]["cer"]
        ax.axhline(ref, color="gray", linestyle="--", label="stand-in before adaptation")
        ax.set_xlabel("fine-tuning step")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    with atomic_dir(out, force=True) as tmp:
        fig.savefig(tmp / "curves.png", dpi=100)
        (tmp / "results.md").write_text(table + "\n", encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps({"before": before, "arms": results}, indent=1), encoding="utf-8")
    plt.close(fig)
    print(f"[demo] table and plot written to {out}/")
    return out
