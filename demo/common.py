"""Paths and run settings shared by the demo's steps (corpus, stand-in, arms, report)."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "demo_cache"
TOKENIZERS = ROOT / "assets" / "tokenizers"
N_VAL = 100  # validation utterances per language, in voices and sentences never used in training


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


def english_tokenizer_dir() -> Path:
    """Parakeet's real English tokenizer (shipped under assets/) as a NeMo tokenizer folder in the cache."""
    from enhi.atomic import atomic_dir
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    out = CACHE / "tokenizer_en1024"
    if not (out / "tokenizer.model").is_file():
        with atomic_dir(out, force=True) as tmp:
            write_nemo_tokenizer_folder(TOKENIZERS / "en1024" / "tokenizer.model", tmp)
    return out
