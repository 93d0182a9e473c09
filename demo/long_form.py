"""Long recordings with known references, made from synthesized utterances, and how a long-form transcript scores.

`long_recording` lays utterances end to end with pauses of random length (seeded) and a faint noise floor, and
returns the audio with each utterance's place and text. The same samples, cut at the known places, give the
per-utterance baseline, so the long-form and per-utterance scores differ only by how the recording was split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from enhi.manifest import ManifestEntry, load_audio

SR = 16000


def long_recording(entries: Sequence[ManifestEntry], seed: int = 0, pause_s: tuple[float, float] = (0.3, 1.5),
                   noise_db: float = -65.0) -> tuple[np.ndarray, list[dict]]:
    """(samples, utterances): each utterance `{"start", "end", "text", "lang"}` in seconds, in order."""
    rng = random.Random(seed)
    parts, utts, t = [], [], 0
    for i, e in enumerate(entries):
        if i:
            gap = round(rng.uniform(*pause_s) * SR)
            parts.append(np.zeros(gap, dtype=np.float32))
            t += gap
        a = load_audio(e.audio_filepath, SR)
        parts.append(a)
        utts.append({"start": t / SR, "end": (t + a.size) / SR, "text": e.text, "lang": e.lang})
        t += a.size
    noise = np.random.default_rng(seed).standard_normal(t).astype(np.float32) * np.float32(10 ** (noise_db / 20))
    return np.concatenate(parts) + noise, utts


def per_utterance(samples: np.ndarray, utts: list[dict]) -> list[np.ndarray]:
    """The recording cut at the known utterance places (the per-utterance baseline's input)."""
    return [samples[round(u["start"] * SR): round(u["end"] * SR)] for u in utts]


def score(utts: list[dict], hypothesis: str) -> dict[str, float]:
    """WER and CER of one long hypothesis against the utterances' texts joined in order; words out and in."""
    from enhi.evaluate import error_rates

    ref = " ".join(u["text"] for u in utts)
    r = error_rates([ref], [hypothesis])
    return {"wer": r["wer"], "cer": r["cer"], "words_ref": len(ref.split()), "words_out": len(hypothesis.split())}


def boundary_hits(utts: list[dict], segments: list[dict], tol_s: float = 0.3) -> float:
    """Share of utterances whose start and end each lie within `tol_s` of some segment's start and end."""
    if not segments:
        return 0.0
    starts = np.array([g["start"] for g in segments])
    ends = np.array([g["end"] for g in segments])
    hits = [np.abs(starts - u["start"]).min() <= tol_s and np.abs(ends - u["end"]).min() <= tol_s for u in utts]
    return float(np.mean(hits))


def words_within(utts: list[dict], segments: list[dict], tol_s: float = 0.3) -> float:
    """Share of the segments' timed words (`"words"`) that start and end inside one utterance's known place,
    give or take `tol_s`; 0.0 if no word was timed."""
    starts = np.array([u["start"] for u in utts]) - tol_s
    ends = np.array([u["end"] for u in utts]) + tol_s
    words = [w for g in segments for w in g.get("words", [])]
    if not words:
        return 0.0
    return float(np.mean([bool(np.any((starts <= w["start"]) & (w["end"] <= ends)) and w["start"] <= w["end"])
                          for w in words]))
