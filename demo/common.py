"""Paths and run settings shared by the demo's steps (corpus, stand-in, arms, report)."""

from __future__ import annotations

import copy
import platform
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "demo_cache"
TOKENIZERS = ROOT / "assets" / "tokenizers"
N_VAL = 100  # validation utterances per language, in voices and sentences never used in training

# The demo's training settings on a 2-core CPU, over ft_110M_enhi.yaml (whose values are a real fine-tune's of the
# 110m on a 24 GB GPU). The offline demo, its stand-in, the benches on its data and the suite's small trainings
# take these before their own `key=value`s; `run_config` then sets each training's steps and batch.
DEMO_SETTINGS = [
    "model.optim.lr=5e-4",
    "model.optim.sched.warmup_steps=50",
    "trainer.max_steps=300",
    "trainer.val_check_interval=50",
    "trainer.log_every_n_steps=10",
    "trainer.accumulate_grad_batches=1",
    "model.train_ds.batch_duration=60",
    "model.train_ds.num_workers=0",  # worker processes cost more than they save on 2 cores
]


# In a subfolder of the run's folder: on resume NeMo's exp_manager moves the files directly in that folder into
# run_<n>/, so a curve kept there would restart at the resumed step.
HISTORY_FILE = Path("curves", "val_history.jsonl")


def history_path(cfg: DictConfig, fresh: bool = True) -> str:
    """Validation curve of a run, JSON lines; `fresh` starts it anew (a resumed run appends)."""
    path = Path(cfg.exp_manager.exp_dir) / cfg.exp_manager.name / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        path.unlink(missing_ok=True)
    return str(path)


def run_config(cfg: DictConfig, name: str, steps: int, every: int, batch_duration: float) -> DictConfig:
    """`cfg` set up for one of the demo's CPU trainings, writing under demo_cache/runs/<name>/."""
    c = copy.deepcopy(cfg)
    c.trainer.max_steps = steps
    c.trainer.val_check_interval = every
    c.trainer.log_every_n_steps = every  # NeMo decodes a training batch for its WER log at this interval
    c.model.train_ds.batch_duration = batch_duration
    c.exp_manager.exp_dir = str(CACHE / "runs")
    c.exp_manager.name = name
    c.exp_manager.resume_if_exists = False  # each demo training starts fresh
    c.exp_manager.checkpoint_callback_params.save_top_k = 1
    return c


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; `platform.processor()` is empty there) and architecture, for the
    records of the stand-in's and the benches' trainings."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name or platform.processor() or 'unknown'} ({platform.machine()})"


def english_tokenizer_dir() -> Path:
    """Parakeet's real English tokenizer (shipped under assets/) as a NeMo tokenizer folder in the cache."""
    from enhi.atomic import atomic_dir
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    out = CACHE / "tokenizer_en1024"
    if not (out / "tokenizer.model").is_file():
        with atomic_dir(out, force=True) as tmp:
            write_nemo_tokenizer_folder(TOKENIZERS / "en1024" / "tokenizer.model", tmp)
    return out
