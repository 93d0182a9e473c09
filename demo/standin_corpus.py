"""The stand-in's English corpus: free text, many voices, rooms and noise, and multi-sentence segments.

Training utterances (`TRAIN`): single sentences and segments of 2-6 sentences up to `MAX_SEGMENT_S` (Parakeet
trains on segments of up to ~20 s, so a stand-in must hear sentence after sentence too), each spoken by one of
`TRAIN_VOICES`, with random leading and trailing silence, and some with noise and a synthetic room. Sentence
sources (`SOURCES`): the demo's templates, Wikipedia-style sentences and word strings (`demo.free_text`);
none contains a held-out word.

Validation sets, all clean and in voices training never hears:
- `en_val`: the demo's English validation set (template sentences), byte for byte the same plan;
- `en_free`: hand-written sentences and Wikipedia-style sentences that hold held-out words;
- `en_long`: recordings of 10-20 s made by joining the utterances of the two sets above with pauses, so their
  WER compares with the same utterances' WER one by one.

Everything is fixed by `plan(...)` and its hash; `build(...)` synthesizes it with two processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from demo import free_text
from demo.corpus import (
    PITCH,
    PITCH_RANGE,
    RATE_WPM,
    SAMPLE_RATE,
    VOICES,
    corpus_plan,
    in_fresh_interpreter,
    synthesize,
    utterance_seed,
)
from demo.text import normalize_text, split_sentences
from enhi.atomic import atomic_dir, atomic_file

VERSION = 1  # bump when synthesis or augmentation changes in a way the plan hash does not see
_ACCENTS = ("en-us", "en", "en-gb-x-rp")
# eSpeak variants heard in training (spread over three accents); m2, f2 (the demo's validation voices), m7 and f5
# (free validation) are never used. Whispering, croaking and robotic variants are left out.
_TRAIN_VARIANTS = ("m1", "m3", "m4", "m5", "m6", "m8", "f1", "f3", "f4", "Andy", "Annie", "adam", "Alex",
                   "Alicia", "Andrea", "belinda", "benjamin", "caleb", "david", "ed", "edward", "iven", "john",
                   "linda", "max", "Michael", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis",
                   "victor", "zac", "klatt", "klatt2", "klatt3", "grandma", "grandpa", "announcer", "Gene", "Lee")
TRAIN_VOICES = tuple(f"{_ACCENTS[i % len(_ACCENTS)]}+{v}" for i, v in enumerate(_TRAIN_VARIANTS))
FREE_VAL_VOICES = ("en-us+m2", "en+f2", "en-us+m7", "en+f5")
SOURCES = {"template": 0.3, "wikipedia": 0.45, "words": 0.25}  # share of training sentences per source
N_SINGLE = 18_000
N_SEGMENTS = 3_000
SEGMENT_SENTENCES = (2, 6)
MAX_SEGMENT_S = 19.5  # the recipe's max_duration is 20 s
PAUSE_S = (0.15, 1.2)  # between the sentences of a segment
LEAD_S, TRAIL_S = (0.0, 0.5), (0.0, 0.3)  # silence added before and after (beyond eSpeak's trimmed 0.1 s)
NOISE = dict(p=0.5, snr_db=(8.0, 35.0))  # white or pink noise over the whole utterance
REVERB = dict(p=0.3, rt60_s=(0.15, 0.7))  # exponentially decaying noise as a room's impulse response
N_FREE_MARKOV = 50  # Wikipedia-style free validation sentences (the hand-written ones are all used too)
LONG_S = (10.0, 20.0)  # length of the long validation recordings


def _prosody(rng: random.Random) -> dict[str, int]:
    return {"rate": rng.randint(*RATE_WPM), "pitch": rng.randint(*PITCH), "pitch_range": rng.randint(*PITCH_RANGE)}


def _sentences(seed: int) -> dict[str, Any]:
    templates, _ = split_sentences("en", 8000, 100, seed)
    pairs = [(s, normalize_text(s, "en")) for s in templates]
    tpl = itertools.cycle([(s, n) for s, n in pairs if not any(free_text.is_held_out(w) for w in n.split())])
    return {
        "template": tpl,
        "wikipedia": free_text.training_only(free_text.markov_sentences(f"train:{seed}")),
        "words": free_text.word_strings(f"train:{seed}"),
    }


def plan(seed: int = 0, n_single: int = N_SINGLE, n_segments: int = N_SEGMENTS, n_val: int = 100) -> dict[str, list]:
    """Every training and validation item: sentences, voice, prosody, silences and augmentation."""
    rng = random.Random(f"standin:{seed}")
    streams = _sentences(seed)
    names, weights = list(SOURCES), list(SOURCES.values())

    def sentence() -> dict[str, Any]:
        src = rng.choices(names, weights=weights)[0]
        text, norm = next(streams[src])
        return {"source": text, "text": norm, "from": src, **_prosody(rng)}

    train = []
    for i in range(n_single + n_segments):
        k = 1 if i < n_single else rng.randint(*SEGMENT_SENTENCES)
        train.append({
            "parts": [sentence() for _ in range(k)],
            "pauses_s": [round(rng.uniform(*PAUSE_S), 3) for _ in range(k - 1)],
            "voice": TRAIN_VOICES[rng.randrange(len(TRAIN_VOICES))],
            "lead_s": round(rng.uniform(*LEAD_S), 3),
            "trail_s": round(rng.uniform(*TRAIL_S), 3),
            "noise": ({"snr_db": round(rng.uniform(*NOISE["snr_db"]), 1), "pink": rng.random() < 0.5}
                      if rng.random() < NOISE["p"] else None),
            "reverb_rt60_s": round(rng.uniform(*REVERB["rt60_s"]), 3) if rng.random() < REVERB["p"] else None,
            "seed": rng.getrandbits(32),
        })
    # Interleave singles and segments so any prefix of the list (a smaller corpus) has both.
    rng.shuffle(train)
    val_rng = random.Random(f"standin-free-val:{seed}")
    free = [{"parts": [{"source": t, "text": n, "from": "free", **_prosody(val_rng)}],
             "voice": FREE_VAL_VOICES[i % len(FREE_VAL_VOICES)]}
            for i, (t, n) in enumerate(free_text.free_validation(N_FREE_MARKOV, seed))]
    demo_val = [{"parts": [{k: u[k] for k in ("source", "text", "rate", "pitch", "pitch_range")}], "voice": u["voice"]}
                for u in corpus_plan(8000, n_val, seed, ("en",))["en"]["val"]]
    return {"train": train, "en_val": demo_val, "en_free": free}


def plan_sha256(p: dict) -> str:
    return hashlib.sha256(json.dumps(p, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _room(rng: np.random.Generator, rt60: float) -> np.ndarray:
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 2.0 * np.sqrt(np.sum(ir[1:] ** 2))  # direct sound 6 dB above the reverberation: a room, not a cave
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def _noise(rng: np.random.Generator, n: int, pink: bool) -> np.ndarray:
    white = rng.standard_normal(n)
    if not pink:
        return white
    spec = np.fft.rfft(white)
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    return np.fft.irfft(spec, n)


def render(item: dict[str, Any], seeded: bool = False) -> tuple[np.ndarray, int]:
    """The audio of one plan item (float32, 16 kHz) and how many of its sentences it holds: a segment is cut
    to `MAX_SEGMENT_S` by dropping whole sentences from its end. `seeded` fixes eSpeak's noise per sentence
    (`demo.corpus.utterance_seed`); the shipped corpus was built without it."""
    from scipy.signal import fftconvolve

    room_s = MAX_SEGMENT_S - item.get("lead_s", 0.0) - item.get("trail_s", 0.0)
    pieces, total = [], 0.0
    for j, part in enumerate(item["parts"]):
        seed = utterance_seed({**part, "voice": item["voice"]}) if seeded else None
        a = synthesize(part["source"], "en", item["voice"], part["rate"], part["pitch"], part["pitch_range"], seed)
        gap = item["pauses_s"][j - 1] if j else 0.0
        if j and total + gap + len(a) / SAMPLE_RATE > room_s:
            break
        pieces += [np.zeros(int(gap * SAMPLE_RATE), np.float32), a]
        total += gap + len(a) / SAMPLE_RATE
    lead, trail = (np.zeros(int(item.get(k, 0.0) * SAMPLE_RATE), np.float32) for k in ("lead_s", "trail_s"))
    audio = np.concatenate([lead, *pieces, trail])
    rng = np.random.default_rng(item.get("seed", 0))
    if item.get("reverb_rt60_s"):
        audio = fftconvolve(audio, _room(rng, item["reverb_rt60_s"]))[: len(audio)]
    if item.get("noise"):
        noise = _noise(rng, len(audio), item["noise"]["pink"])
        power = np.mean(audio**2) / (10 ** (item["noise"]["snr_db"] / 10))
        audio = audio + noise * math.sqrt(power / max(np.mean(noise**2), 1e-12))
    peak = float(np.max(np.abs(audio))) or 1.0
    return (audio * min(1.0, 0.95 / peak)).astype(np.float32), len(pieces) // 2


def _render_fresh_main() -> None:
    import sys

    items, out = json.load(sys.stdin)
    np.savez(out, *[render(item, seeded=True)[0] for item in items])


def render_fresh(items: list[dict[str, Any]]) -> list[np.ndarray]:
    """`render(item, seeded=True)` for each item, in order, in a new interpreter: eSpeak keeps state from one
    utterance to the next, so only a clean process speaking a fixed sequence gives the same bytes every time."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "audio.npz")
        in_fresh_interpreter("from demo.standin_corpus import _render_fresh_main as m; m()",
                             json.dumps([items, out], ensure_ascii=False), "eSpeak synthesis")
        with np.load(out) as z:
            return [z[f"arr_{i}"] for i in range(len(items))]


def _render_batch(args: tuple[Path, str, list[tuple[int, dict]]]) -> list[tuple[int, float, int]]:
    folder, prefix, items = args
    out = []
    for i, item in items:
        audio, kept = render(item)
        sf.write(folder / f"{prefix}_{i:05d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        out.append((i, len(audio) / SAMPLE_RATE, kept))
    return out


def long_groups(durations: list[float], seed: int) -> list[tuple[list[int], list[float]]]:
    """How validation utterances (by duration, in order) are joined into recordings of `LONG_S` seconds: per
    recording, the indices of its utterances and the pauses between them in seconds."""
    rng = random.Random(f"standin-long:{seed}")
    groups, cur, target = [], [], rng.uniform(*LONG_S)
    for i, d in enumerate(durations):
        # Pauses average 0.65 s; a recording closes before it would pass LONG_S's upper end.
        if cur and sum(durations[j] + 0.65 for j in cur) + d > LONG_S[1]:
            groups.append(cur)
            cur, target = [], rng.uniform(*LONG_S)
        cur.append(i)
        if sum(durations[j] + 0.65 for j in cur) >= target:
            groups.append(cur)
            cur, target = [], rng.uniform(*LONG_S)
    groups += [cur] if cur else []
    # Mean 0.65 s. One pause is drawn per utterance and the last dropped: the draws of the corpus already built.
    return [(g, [rng.uniform(0.3, 1.0) for _ in g][:-1]) for g in groups]


def join(audios: list[np.ndarray], pauses_s: list[float]) -> np.ndarray:
    """Utterances one after another with silences of `pauses_s` between them."""
    parts = [audios[0]]
    for a, p in zip(audios[1:], pauses_s, strict=True):
        parts += [np.zeros(int(p * SAMPLE_RATE), np.float32), a]
    return np.concatenate(parts)


def _long_recordings(tmp: Path, out_dir: Path, rows: list[dict], seed: int) -> list[dict]:
    """Join validation utterances, in order, with pauses into recordings of `LONG_S` seconds."""
    lines = []
    for i, (group, pauses) in enumerate(long_groups([r["duration"] for r in rows], seed)):
        audio = join([sf.read(tmp / Path(rows[j]["audio_filepath"]).relative_to(out_dir), dtype="float32")[0]
                      for j in group], pauses)
        rel = Path("en_long", f"en_long_{i:05d}.wav")
        sf.write(tmp / rel, audio, SAMPLE_RATE, subtype="PCM_16")
        lines.append({"audio_filepath": str(out_dir / rel), "duration": round(len(audio) / SAMPLE_RATE, 6),
                      "text": " ".join(rows[j]["text"] for j in group), "lang": "en", "voice": "mixed"})
    return lines


def build(out_dir: Path, seed: int = 0, n_single: int = N_SINGLE, n_segments: int = N_SEGMENTS,
          processes: int = 2, progress: bool = True) -> dict[str, Any]:
    """Synthesize the corpus into `out_dir` (or reuse a complete one with the same plan); returns its summary
    with manifest paths under "manifests" (en_train, en_val, en_free, en_long)."""
    p = plan(seed, n_single, n_segments)
    params = {"version": VERSION, "seed": seed, "n_single": n_single, "n_segments": n_segments,
              "plan_sha256": plan_sha256(p)}
    out_dir = Path(out_dir).resolve()
    info_path = out_dir / "corpus_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("params") == params and all(Path(m).is_file() for m in info["manifests"].values()):
            return {**info, "cached": True}
    t0 = time.perf_counter()
    manifests: dict[str, str] = {}
    seconds: dict[str, float] = {}
    with atomic_dir(out_dir, force=True) as tmp:
        (tmp / "manifests").mkdir()
        for split, items in p.items():
            (tmp / split).mkdir()
            n_jobs = max(1, processes) * 16
            jobs = [(tmp / split, split, [(i, items[i]) for i in range(k, len(items), n_jobs)]) for k in range(n_jobs)]
            done = []
            with get_context("fork").Pool(processes) as pool:
                for k, res in enumerate(pool.imap_unordered(_render_batch, jobs)):
                    done += res
                    if progress:
                        print(f"\r  {split}: {k + 1}/{len(jobs)} parts synthesized", end="", flush=True)
            if progress:
                print()
            rows = []
            for i, dur, kept in sorted(done):
                item = items[i]
                rows.append({"audio_filepath": str(out_dir / split / f"{split}_{i:05d}.wav"),
                             "duration": round(dur, 6), "text": " ".join(x["text"] for x in item["parts"][:kept]),
                             "lang": "en", "voice": item["voice"]})
            manifests[split] = rows
        (tmp / "en_long").mkdir()
        manifests["en_long"] = _long_recordings(tmp, out_dir, manifests["en_val"] + manifests["en_free"], seed)
        paths = {}
        for split, rows in manifests.items():
            name = "en_train" if split == "train" else split
            path = tmp / "manifests" / f"{name}.json"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            paths[name] = str(out_dir / "manifests" / f"{name}.json")
            seconds[name] = sum(r["duration"] for r in rows)
        info = {"params": params, "manifests": paths, "counts": {k: len(v) for k, v in manifests.items()},
                "hours": {k: round(v / 3600, 3) for k, v in seconds.items()},
                "voices": {"train": list(TRAIN_VOICES), "en_val": list(VOICES["en"]["val"]),
                           "en_free": list(FREE_VAL_VOICES)},
                "build_seconds": round(time.perf_counter() - t0, 1), "pid": os.getpid()}
        with atomic_file(tmp / "corpus_info.json", "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
    return {**info, "cached": False}
