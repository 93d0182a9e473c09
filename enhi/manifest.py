"""NeMo manifests (JSON lines: audio_filepath, duration, text, optional lang), read strictly.

A malformed line, a missing field or a missing audio file is a `UserError` naming the file and line, so a
bad manifest stops a run before training starts rather than hours into it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from enhi.errors import UserError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ManifestEntry:
    audio_filepath: str
    duration: float
    text: str
    lang: str | None = None
    raw_text: str | None = None  # the manifest's own transcript when `text` was normalized for training (enhi.text)


def json_lines(path: Path):
    """(line number, value) for each non-blank line of a JSON-lines file; a line that is not JSON is a
    `UserError` naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object") from None


def read_manifest(path: str | os.PathLike, check_audio: bool = True) -> list[ManifestEntry]:
    """All entries of a manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found; check the path in the YAML or on the command line")
    entries = []
    for n, item in json_lines(path):
        if not isinstance(item, dict):
            raise UserError(f"{path}:{n}: expected a JSON object with audio_filepath, duration and text")
        missing = [k for k in ("audio_filepath", "duration", "text") if k not in item]
        if missing:
            raise UserError(f"{path}:{n}: missing field(s) {', '.join(missing)}; each line needs audio_filepath, duration and text")
        audio = Path(item["audio_filepath"])
        if not audio.is_absolute():
            audio = path.parent / audio
        if check_audio and not audio.is_file():
            raise UserError(f"{path}:{n}: audio file {audio} not found; fix audio_filepath or remove the line")
        try:
            duration = float(item["duration"])
        except (TypeError, ValueError):
            raise UserError(f"{path}:{n}: duration {item['duration']!r} is not a number") from None
        entries.append(ManifestEntry(str(audio), duration, str(item["text"]), item.get("lang")))
    if not entries:
        raise UserError(f"{path}: manifest is empty; it needs one JSON line per utterance")
    return entries


def write_manifest(path: str | os.PathLike, entries: list[ManifestEntry]) -> None:
    from enhi.atomic import atomic_file

    with atomic_file(path, "w", encoding="utf-8") as f:
        for e in entries:
            item = {"audio_filepath": e.audio_filepath, "duration": e.duration, "text": e.text}
            if e.lang is not None:
                item["lang"] = e.lang
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio at `sample_rate` (channels averaged, resampled when the file differs)."""
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise UserError(f"{path}: cannot read audio ({e}); convert it to WAV or FLAC") from None
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sr, sample_rate)
        audio = resample_poly(audio, sample_rate // g, sr // g)
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_batch(audios: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz float arrays as one zero-padded batch (B, samples) and their lengths, on `device`."""
    import torch

    lens = torch.tensor([len(a) for a in audios], dtype=torch.long)
    sig = torch.zeros(len(audios), int(lens.max()), dtype=torch.float32)
    for i, a in enumerate(audios):
        sig[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return sig.to(device), lens.to(device)
