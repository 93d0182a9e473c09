"""A `.nemo` that works wherever it is copied: in stock NeMo, from file paths, with no path of the making machine.

Two things stand between a model this project trains and NeMo's most common call,
`ASRModel.restore_from("x.nemo").transcribe(["clip.wav"])`:

* NeMo's transcribe builds its dataloader from `cfg.validation_ds` (it reads `use_start_end_token` there), and
  the project validates with its own per-language sets, so the model's config had no such section: the call
  failed with `Key 'validation_ds' is not in struct`. `add_inference_ds_sections` gives the model the inference
  sections NeMo's released checkpoints carry (no manifest, NeMo's inference defaults).
* The config recorded the paths it was trained with (tokenizer folder, training manifests), absolute on the
  machine that made it. `relative_paths` writes every path under the repository root relative to it, so a
  committed model (the shipped stand-in) or a bench record names `demo_cache/...`, not one machine's folders.
  Paths outside the repository (a user's own data) are the user's and stay as given.

`enhi.resilience.AtomicSaveRestoreConnector` applies `portable_model_config` to every `.nemo` the project writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
INFERENCE_SECTIONS = ("validation_ds", "test_ds")


def inference_ds_section(sample_rate: int) -> dict[str, Any]:
    """A dataset section with NeMo's inference defaults and no data (what transcribe reads from it)."""
    return {
        "manifest_filepath": None,
        "sample_rate": int(sample_rate),
        "batch_size": 16,
        "shuffle": False,
        "num_workers": 0,
        "pin_memory": False,
        "use_start_end_token": False,
    }


def add_inference_ds_sections(cfg: DictConfig) -> DictConfig:
    """`cfg` (changed in place and returned) with `validation_ds` and `test_ds` where it has none."""
    sr = cfg.get("sample_rate") or cfg.preprocessor.get("sample_rate")
    with open_dict(cfg):
        for name in INFERENCE_SECTIONS:
            if cfg.get(name) is None:
                cfg[name] = inference_ds_section(sr)
    return cfg


def relative_text(text: str, root: Path = REPO_ROOT) -> str:
    """`text` with every absolute path inside `root` written relative to it (`<root>/a/b` -> `a/b`)."""
    return text.replace(str(root) + os.sep, "")


def relative_paths(node: Any, root: Path = REPO_ROOT) -> Any:
    """Every string in a plain container tree (dicts, lists) with `relative_text` applied, as a new tree."""
    if isinstance(node, dict):
        return {k: relative_paths(v, root) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [relative_paths(v, root) for v in node]
    if isinstance(node, str):
        return relative_text(node, root)
    return node


def portable_model_config(cfg: DictConfig, root: Path = REPO_ROOT) -> DictConfig:
    """A copy of a model config with the inference dataset sections and repository paths made relative."""
    out = OmegaConf.create(relative_paths(OmegaConf.to_container(cfg, resolve=True), root))
    return add_inference_ds_sections(out)

