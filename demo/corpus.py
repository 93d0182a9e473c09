"""A small English + Hindi speech corpus synthesized offline with eSpeak NG.

The offline demo cannot download speech, so it speaks its own: eSpeak NG from the PyPI package
`espeakng-loader` (which bundles `libespeak-ng.so` and `espeak-ng-data`), driven through `ctypes`, so no
system package (espeak-ng, sox) is needed. Audio is resampled from eSpeak's 22050 Hz to 16 kHz mono and
written as 16-bit PCM WAV with NeMo manifests.

Variety comes from eSpeak voice variants (`voices/!v/*` in the data dir), speaking rate, pitch and pitch
range. Validation uses voice variants that training never hears (see `VOICES`), so it measures
generalization to unseen voices rather than memorization of one.

Same plan, same bytes (`render`): eSpeak's noise source (the breathy variants' aspiration) is seeded from
each utterance's plan entry, and each voice's utterances are spoken in plan order by a fresh process, because
eSpeak's synthesizer keeps state from one utterance to the next (the same text twice in a row gives two
different waveforms) that neither re-initialization nor a reseed clears. Nothing synthesized before, in
another voice or another order, can change an utterance's audio.

Layout written by `build_corpus(out_dir)`:
    out_dir/{en,hi}/{train,val}/*.wav
    out_dir/manifests/{en,hi}_{train,val}.json   (JSON lines: audio_filepath, duration, text, lang, voice)
    out_dir/corpus_info.json                     (parameters, counts, hours; written last)
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from demo.text import LANGS, normalize_text, split_sentences
from enhi.atomic import atomic_dir, atomic_file
from enhi.errors import UserError

SAMPLE_RATE = 16_000
_ROOT = Path(__file__).resolve().parents[1]  # the repository: `render`'s processes import demo.corpus from it
# Bump when the output format or synthesis changes in a way the cache key would not otherwise see.
CORPUS_VERSION = 3  # 3: bit-reproducible synthesis (`render`)

# Voice = eSpeak voice name (file under espeak-ng-data/lang, e.g. "en-us"; British English is "en") plus an
# optional "+variant" from voices/!v. Train and val variants are disjoint: validation voices are unseen.
# Validation keeps accents that training has (en-us, en) so only the speaker characteristics are new.
VOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "train": ("en-us", "en-us+m3", "en-us+f3", "en-us+m6", "en+m1", "en+f1", "en+f4", "en-gb-x-rp+m4"),
        "val": ("en-us+m2", "en+f2"),
    },
    "hi": {
        "train": ("hi", "hi+m1", "hi+m3", "hi+m4", "hi+m6", "hi+f1", "hi+f3", "hi+f4"),
        "val": ("hi+m2", "hi+f2"),
    },
}
DEFAULT_VOICE = {"en": "en-us", "hi": "hi"}
RATE_WPM = (130, 200)  # eSpeak speaking rate, words per minute (inclusive range sampled per utterance)
PITCH = (30, 70)  # eSpeak base pitch, 0-100
PITCH_RANGE = (35, 70)  # eSpeak intonation range, 0-100; 0 would be a monotone
_EDGE_PAD_S = 0.1  # silence kept around the speech after trimming eSpeak's leading/trailing silence

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns after all audio went through the callback
_espeakINITIALIZE_DONT_EXIT = 0x8000  # report a missing data dir instead of calling exit()
_espeakCHARS_UTF8 = 1
_POS_CHARACTER = 1
_espeakRATE, _espeakPITCH, _espeakRANGE = 1, 3, 4
_EE_OK = 0
_espeakPHONEMES_IPA = 0x02
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _ESpeak:
    """The eSpeak NG library of this process: one global synthesizer state, so one instance, used under a lock."""

    def __init__(self) -> None:
        import espeakng_loader  # imported here so merely importing this module needs no native library

        self.data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        self._libc = ctypes.CDLL(None)  # parts of eSpeak draw from the C library's rand() too
        # Passing the data dir explicitly makes the bundled data win over any system install or ESPEAK_DATA_PATH.
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(),
                                     _espeakINITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data dir {self.data_path}")
        self.lib = lib
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the C trampoline when the Python object dies.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        # eSpeak silently ignores an unknown "+variant", so validate variants against the data dir ourselves.
        self.variants = frozenset(p.name for p in (self.data_path / "voices" / "!v").iterdir())
        self.lock = threading.Lock()

    def _on_audio(self, wav: Any, n: int, _events: Any) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def set_voice(self, name: str) -> None:
        base, _, variant = name.partition("+")
        if variant and variant not in self.variants:
            raise ValueError(f"unknown eSpeak voice variant {variant!r} in {name!r}; see {self.data_path}/voices/!v")
        err = self.lib.espeak_SetVoiceByName(name.encode())
        if err != _EE_OK:
            raise ValueError(f"eSpeak has no voice {base!r} (error {err}); names are files under "
                             f"{self.data_path}/lang, e.g. 'en-us', 'en' (British), 'hi'")

    def synth(self, text: str, name: str, rate: int, pitch: int, pitch_range: int, seed: int | None = None) -> np.ndarray:
        with self.lock:
            if seed is not None:  # eSpeak seeds its noise from the clock at initialization
                self.lib.espeak_ng_SetRandSeed(seed)
                self._libc.srand(seed)
            self.set_voice(name)
            # After the voice: parameters are global and persist, so set all of them on every call.
            for param, value in ((_espeakRATE, rate), (_espeakPITCH, pitch), (_espeakRANGE, pitch_range)):
                err = self.lib.espeak_SetParameter(param, value, 0)
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed ({err})")
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def phonemes(self, text: str, name: str) -> str:
        with self.lock:
            self.set_voice(name)
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_char_p(ctypes.addressof(buf))
            out = []
            # espeak_TextToPhonemes consumes one clause per call and sets the pointer to NULL at the end.
            while ptr.value:
                out.append(self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _espeakCHARS_UTF8,
                                                          _espeakPHONEMES_IPA).decode("utf-8"))
        return " ".join(out)


_engine_lock = threading.Lock()
_engine_instance: _ESpeak | None = None
_engine_pid: int | None = None


def _engine() -> _ESpeak:
    global _engine_instance, _engine_pid
    with _engine_lock:
        # A forked child inherits the parent's object but not a usable lock state; make its own.
        if _engine_instance is None or _engine_pid != os.getpid():
            _engine_instance, _engine_pid = _ESpeak(), os.getpid()
        return _engine_instance


def voice_name(lang: str, voice: str) -> str:
    """Full eSpeak voice name for `voice` in language `lang` ("en" or "hi").

    `voice` is either a full name ("en-us+f3", "en", "hi+m2"), a bare variant ("f3" or "+f3", spoken by
    the language's default voice), or "" for the default voice. A full name must belong to `lang`.
    """
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    if voice in ("", "+"):
        return DEFAULT_VOICE[lang]
    if voice.startswith("+"):
        return DEFAULT_VOICE[lang] + voice
    if "+" not in voice and voice in _engine().variants:
        return f"{DEFAULT_VOICE[lang]}+{voice}"
    base = voice.partition("+")[0].lower()
    if base.split("-")[0] != lang:
        raise ValueError(f"voice {voice!r} is not a {lang!r} voice")
    return voice


def synthesize(text: str, lang: str, voice: str = "", rate: int = 170, pitch: int = 50,
               pitch_range: int = 50, seed: int | None = None) -> np.ndarray:
    """Speak `text` with eSpeak NG; return float32 mono audio at 16 kHz in [-1, 1].

    `lang` is "en" or "hi" and `voice` as in `voice_name`. `rate` is words per minute (80-450), `pitch`
    and `pitch_range` are eSpeak's 0-100 scales (50 = the voice's default). Leading and trailing silence
    is trimmed to 0.1 s. `seed` fixes eSpeak's noise (else it is seeded from the clock); the audio also depends
    on what this process synthesized before (module docstring: `render` makes it depend on the plan only).
    Raises ValueError for an unknown voice, RuntimeError if eSpeak fails or is silent.
    """
    if not 80 <= rate <= 450:
        raise ValueError(f"rate {rate} wpm outside eSpeak's 80-450")
    for label, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= value <= 100:
            raise ValueError(f"{label} {value} outside 0-100")
    engine = _engine()
    pcm = engine.synth(text, voice_name(lang, voice), int(rate), int(pitch), int(pitch_range), seed)
    if pcm.size == 0 or not np.any(pcm):
        raise RuntimeError(f"eSpeak produced no audio for {text!r} with voice {voice!r}")
    g = math.gcd(SAMPLE_RATE, engine.sample_rate)
    audio = resample_poly(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE // g, engine.sample_rate // g)
    return np.clip(_trim(audio), -1.0, 1.0).astype(np.float32)


def phonemize(text: str, lang: str, voice: str = "") -> str:
    """IPA phonemes eSpeak would speak for `text` (a check that a voice really reads a script).

    eSpeak marks a switch to another language's rules as "(hi)...(en-us)"; the Hindi voice reading
    Devanagari shows no such marker.
    """
    return _engine().phonemes(text, voice_name(lang, voice))


def utterance_seed(u: dict[str, Any]) -> int:
    """eSpeak's noise seed for one planned utterance (text, voice, prosody): its own, whatever else is spoken."""
    key = json.dumps([u["source"], u["voice"], u["rate"], u["pitch"], u["pitch_range"]], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _render_voice_main() -> None:
    """A fresh process's work for `render`: one voice's utterances (JSON on stdin) in order, each seeded, each
    written to its path; prints seconds per path as JSON."""
    import sys

    lang, items = json.load(sys.stdin)
    out = {}
    for path, u in items:
        audio = synthesize(u["source"], lang, u["voice"], u["rate"], u["pitch"], u["pitch_range"],
                           seed=utterance_seed(u))
        sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        out[path] = len(audio) / SAMPLE_RATE
    json.dump(out, sys.stdout)


def in_fresh_interpreter(code: str, stdin: str, what: str) -> str:
    """Run `code` in a new Python interpreter that imports this repository, `stdin` as its input; its stdout.
    A new interpreter (not multiprocessing, which would re-import the caller's main script): eSpeak starts clean."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def _render_voice(job: tuple[str, list[tuple[str, dict[str, Any]]]]) -> dict[str, float]:
    return json.loads(in_fresh_interpreter("from demo.corpus import _render_voice_main; _render_voice_main()",
                                           json.dumps(job, ensure_ascii=False),
                                           f"eSpeak synthesis of voice {job[1][0][1]['voice']!r}"))


def render(items: Sequence[tuple[str | Path, str, dict[str, Any]]], processes: int = 2) -> dict[str, float]:
    """Synthesize planned utterances `(path, lang, utterance)` into 16 kHz PCM16 WAV files; seconds per path.

    Each voice's utterances go, in the order given, to a new process of their own, seeded per utterance: the
    bytes depend on the plan alone, not on the order of voices, the number of processes or what ran before.
    `processes` voices are spoken at a time."""
    from concurrent.futures import ThreadPoolExecutor

    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for path, lang, u in items:
        groups.setdefault((lang, u["voice"]), []).append((str(path), u))
    jobs = sorted(((lang, g) for (lang, _), g in groups.items()), key=lambda j: -len(j[1]))  # longest first
    seconds: dict[str, float] = {}
    with ThreadPoolExecutor(max(1, processes)) as pool:
        for done in pool.map(_render_voice, jobs):
            seconds.update(done)
    return seconds


def _trim(audio: np.ndarray) -> np.ndarray:
    # eSpeak pads clauses with silence; trimming keeps utterances short so CPU training stays quick.
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if loud.size == 0:
        return audio
    pad = int(_EDGE_PAD_S * SAMPLE_RATE)
    return audio[max(0, loud[0] - pad): loud[-1] + pad + 1]


def corpus_plan(n_train: int, n_val: int, seed: int, langs: tuple[str, ...]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every utterance to synthesize: text, transcript, voice and prosody, fully determined by the arguments."""
    plan: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for lang in langs:
        train, val = split_sentences(lang, n_train, n_val, seed)
        plan[lang] = {}
        for split, sentences in (("train", train), ("val", val)):
            # One stream per split: validation audio is the same whatever the training size.
            rng = random.Random(f"prosody:{lang}:{split}:{seed}")
            voices = VOICES[lang][split]
            plan[lang][split] = [
                {
                    "source": s,
                    "text": normalize_text(s, lang),
                    # Round-robin keeps voices balanced; prosody is random within the configured ranges.
                    "voice": voices[i % len(voices)],
                    "rate": rng.randint(*RATE_WPM),
                    "pitch": rng.randint(*PITCH),
                    "pitch_range": rng.randint(*PITCH_RANGE),
                }
                for i, s in enumerate(sentences)
            ]
    return plan


def plan_sha256(plan: dict) -> str:
    """The corpus's identity: a hash of every utterance's text, voice and prosody."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _manifest_path(out_dir: Path, lang: str, split: str) -> Path:
    return out_dir / "manifests" / f"{lang}_{split}.json"


def _cached_summary(out_dir: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary if `out_dir` holds a complete corpus built with `params`, else None."""
    try:
        info = json.loads((out_dir / "corpus_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("params") != params:
        return None
    # The info file is written last, so its presence means the build finished; still check that nothing was
    # deleted since and that the manifests' absolute paths still point here (the folder may have been moved).
    try:
        for lang in params["langs"]:
            for split in ("train", "val"):
                lines = _manifest_path(out_dir, lang, split).read_text(encoding="utf-8").splitlines()
                if len(lines) != info["counts"][lang][split]:
                    return None
                for line in lines:
                    audio = Path(json.loads(line)["audio_filepath"])
                    if audio.parent != out_dir / lang / split or not audio.is_file():
                        return None
    except (OSError, ValueError, KeyError, TypeError):  # missing or hand-edited files: rebuild
        return None
    return info


def build_corpus(out_dir: Path, n_train_per_lang: int = 400, n_val_per_lang: int = 60,
                 seed: int = 0, langs: tuple[str, ...] = LANGS) -> dict[str, Any]:
    """Synthesize the English + Hindi corpus into `out_dir` (or reuse it) and return its summary.

    Writes `out_dir/{en,hi}/{train,val}/*.wav` (16 kHz mono PCM16), NeMo manifests
    `out_dir/manifests/{lang}_{split}.json` and `out_dir/corpus_info.json`. If `out_dir` already holds a
    complete corpus with the same parameters it is returned as is (`"cached": True`). Otherwise the corpus
    is built in a temporary folder that replaces `out_dir` only when complete; an existing `out_dir` that
    is not a corpus (no corpus_info.json, not empty) is refused with UserError rather than overwritten.

    The summary holds "params", "voices" (the explicit train/val voice split per language), "counts",
    "hours", "total_hours", "manifests", "out_dir", "build_seconds" and "cached".
    """
    if n_train_per_lang < 1 or n_val_per_lang < 1:
        raise ValueError("n_train_per_lang and n_val_per_lang must be at least 1")
    out_dir = Path(out_dir).resolve()
    langs = tuple(langs)
    plan = corpus_plan(n_train_per_lang, n_val_per_lang, seed, langs)
    params = {
        "version": CORPUS_VERSION,
        "n_train_per_lang": n_train_per_lang,
        "n_val_per_lang": n_val_per_lang,
        "seed": seed,
        "langs": list(langs),
        "sample_rate": SAMPLE_RATE,
        # The plan covers texts, voices and prosody, so editing the text assets or VOICES invalidates the cache.
        "plan_sha256": plan_sha256(plan),
    }
    cached = _cached_summary(out_dir, params)
    if cached is not None:
        return {**cached, "cached": True}
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "corpus_info.json").exists():
        raise UserError(f"{out_dir}: exists and is not a corpus folder; choose another output folder")

    t0 = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    seconds: dict[str, dict[str, float]] = {}
    with atomic_dir(out_dir, force=True) as tmp:
        (tmp / "manifests").mkdir()
        rel = {(lang, split, i): Path(lang, split, f"{lang}_{split}_{i:05d}.wav")
               for lang in langs for split, utts in plan[lang].items() for i in range(len(utts))}
        for lang, split, _ in rel:
            (tmp / lang / split).mkdir(parents=True, exist_ok=True)
        durations = render([(tmp / r, lang, plan[lang][split][i]) for (lang, split, i), r in rel.items()])
        for lang in langs:
            counts[lang], seconds[lang] = {}, {}
            for split, utts in plan[lang].items():
                lines = []
                for i, u in enumerate(utts):
                    r = rel[lang, split, i]
                    dur = durations[str(tmp / r)]
                    # Paths name the final location: the temporary folder is renamed onto out_dir at the end.
                    lines.append(json.dumps({
                        "audio_filepath": str(out_dir / r),
                        "duration": round(dur, 6),
                        "text": u["text"],
                        "lang": lang,
                        "voice": u["voice"],
                    }, ensure_ascii=False))
                    seconds[lang][split] = seconds[lang].get(split, 0.0) + dur
                _manifest_path(tmp, lang, split).write_text("\n".join(lines) + "\n", encoding="utf-8")
                counts[lang][split] = len(utts)
        summary = {
            "params": params,
            "out_dir": str(out_dir),
            "voices": {lang: {split: list(v) for split, v in VOICES[lang].items()} for lang in langs},
            "rate_wpm": list(RATE_WPM),
            "pitch": list(PITCH),
            "pitch_range": list(PITCH_RANGE),
            "counts": counts,
            "hours": {lang: {s: round(v / 3600, 4) for s, v in d.items()} for lang, d in seconds.items()},
            "total_hours": round(sum(v for d in seconds.values() for v in d.values()) / 3600, 4),
            "manifests": {f"{lang}_{split}": str(_manifest_path(out_dir, lang, split))
                          for lang in langs for split in ("train", "val")},
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        # Last inside the folder: its presence marks a finished corpus for the cache check.
        with atomic_file(tmp / "corpus_info.json", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, ensure_ascii=False)
    return {**summary, "cached": False}
