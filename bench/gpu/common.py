"""What every part of the GPU check shares: the sizes it runs at, the record each part keeps, small helpers."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = ROOT / "bench" / "RESULTS.md"
PARTS = ("setup", "cuda-tests", "decoder-ladder", "finetune", "batch-24g", "wkv7", "long-audio", "wkv7-fla")

NO_GPU = "skipped: no GPU"

# Targets of issue 13 (printed as pass/miss only from numbers measured in this run).
TARGET_LONG_AUDIO_H = 12.0  # one pass longer than this on an 80 GB card (more on a 141 GB one)

TARGET_LONG_AUDIO_RTFX = 1900.0

TARGET_BNB_STATE = 0.30  # AdamW8bit state bytes / AdamW's

TARGET_BNB_STEP = 1.10  # AdamW8bit median step / AdamW's

TARGET_ADAPTED_RTFX = 0.97  # adapted transcription RTFx / unadapted

MIN_CARD_GIB = 78.0  # an "80 GB" H100 reports 79.2 GiB; smaller cards cannot speak to the long-audio target


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each part runs: the real shapes on a GPU, toy ones for the dry run."""

    model: str  # "110m" (parakeet-tdt_ctc-110m's shape) or "tiny"
    steps: int  # fine-tuning steps per optimizer
    n_train_per_lang: int  # synthesized utterances per language
    n_val_per_lang: int
    batch_duration: float | None  # seconds of audio per batch; None = the YAML's
    transcribe_reps: int
    transcribe_n: int  # utterances transcribed (the longest ones)
    wkv7_reps: int
    long_audio_layers: int


GPU_SIZES = Sizes("110m", 50, 48, 4, None, 3, 56, 10, 24)

DRY_SIZES = Sizes("tiny", 3, 3, 1, 8.0, 1, 2, 1, 1)


# One part's record: written to JSON after every change, so a part killed at its time limit still reports what it
# measured.
class PartLog:
    def __init__(self, name: str, path: Path | None):
        self.path = path
        self.t0 = time.perf_counter()
        self.d: dict[str, Any] = {"part": name, "status": "running", "notes": [], "data": {}}

    def put(self, **values: Any) -> None:
        self.d["data"].update(values)
        self.flush()

    def note(self, text: str) -> None:
        self.d["notes"].append(text)
        print(f"  [{self.d['part']} +{time.perf_counter() - self.t0:.0f} s] {text}", flush=True)
        self.flush()

    def finish(self, status: str) -> None:
        self.d["status"] = status
        self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.d, default=str))
        os.replace(tmp, self.path)  # a reader never sees half a file


# How an error that the CUDA context does not survive (illegal address, launch failure) reads.
CUDA_FAULT_WORDS = ("CUDA error", "AcceleratorError", "illegal memory access")


def is_cuda_fault(text: str) -> bool:
    return any(w in text for w in CUDA_FAULT_WORDS)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def quiet_nemo() -> None:
    """NeMo logs the whole vocabulary and every config at INFO; keep the device log to what matters."""
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(nemo_logging.WARNING)


def versions() -> dict[str, str | None]:
    """What a GPU failure depends on: torch and its CUDA, the driver, cuda-python's bindings, NeMo, Lightning."""
    import importlib.metadata
    import shutil
    import subprocess

    import torch

    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    driver = None
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "driver": driver,
            "cuda-bindings": dist("cuda-bindings") or dist("cuda-python"), "nemo_toolkit": dist("nemo_toolkit"),
            "lightning": dist("lightning")}
