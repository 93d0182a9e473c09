"""The offline eSpeak NG corpus: synthesis, text normalization, manifests, voice split and caching."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from demo.corpus import SAMPLE_RATE, VOICES, build_corpus, phonemize, synthesize
from demo.text import (
    EN_SENTENCES,
    HI_SENTENCES,
    MAX_WORDS,
    MIN_WORDS,
    normalize_text,
    sentence_pool,
    split_sentences,
)
from enhi.errors import UserError

HINDI = "मैं आज बाज़ार जा रहा हूँ।"
EN_RE = re.compile(r"[a-z']+( [a-z']+)*")
HI_RE = re.compile(r"[\u0900-\u097f]+( [\u0900-\u097f]+)*")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize(("text", "lang", "voice"), [
    ("The bus is late again today.", "en", "en-us+f3"),
    (HINDI, "hi", "hi"),
    (HINDI, "hi", "hi+m2"),
])
def test_synthesize_gives_speech(text: str, lang: str, voice: str) -> None:
    audio = synthesize(text, lang, voice, rate=170, pitch=50)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 <= len(audio) / SAMPLE_RATE <= 6.0
    assert _rms(audio) > 0.02
    assert np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("lang", ["en", "hi"])
def test_every_configured_voice_speaks(lang: str) -> None:
    text = "The bus is late again today." if lang == "en" else HINDI
    for voice in VOICES[lang]["train"] + VOICES[lang]["val"]:
        assert _rms(synthesize(text, lang, voice, rate=170, pitch=50)) > 0.02, voice


def test_rate_and_pitch_take_effect() -> None:
    slow = synthesize("The bus is late again today.", "en", "en-us", rate=130, pitch=50)
    fast = synthesize("The bus is late again today.", "en", "en-us", rate=200, pitch=50)
    assert len(slow) > 1.2 * len(fast)
    low = synthesize("The bus is late again today.", "en", "en-us", rate=170, pitch=30)
    high = synthesize("The bus is late again today.", "en", "en-us", rate=170, pitch=70)
    assert not np.array_equal(low[: min(len(low), len(high))], high[: min(len(low), len(high))])


def test_hindi_voice_reads_devanagari() -> None:
    hi = synthesize(HINDI, "hi", "hi", rate=170, pitch=50)
    en = synthesize(HINDI, "en", "en-us", rate=170, pitch=50)
    n = min(len(hi), len(en))
    assert len(hi) != len(en) or not np.allclose(hi[:n], en[:n])
    # The hi voice reads the words with its own rules: IPA, no "(lang)" switch marker, no letter names.
    ph = phonemize(HINDI, "hi")
    assert "(" not in ph and "baːzˈaːɾ" in ph
    # The English voice has no Devanagari rules and hands the text to Hindi's, which eSpeak marks.
    assert "(hi)" in phonemize(HINDI, "en", "en-us")


def test_unknown_voices_are_refused() -> None:
    with pytest.raises(ValueError):
        synthesize("hello there friend", "en", "en-gb")  # British English is "en" in eSpeak NG
    with pytest.raises(ValueError):
        synthesize("hello there friend", "en", "en-us+nosuchvariant")  # eSpeak itself would ignore it
    with pytest.raises(ValueError):
        synthesize("hello there friend", "hi", "en-us")


def test_normalize_text() -> None:
    assert normalize_text("Let's go, it's 'late' — OK?", "en") == "let's go it's late ok"
    hi = normalize_text("क्या यह सीट ख़ाली है? हाँ। ठीक॥", "hi")
    assert hi == unicodedata.normalize("NFC", hi) and "।" not in hi and "?" not in hi
    with pytest.raises(ValueError):
        normalize_text("यह bus है", "hi")


@pytest.mark.parametrize(("lang", "sentences", "pattern"), [("en", EN_SENTENCES, EN_RE), ("hi", HI_SENTENCES, HI_RE)])
def test_text_sources(lang: str, sentences: tuple[str, ...], pattern: re.Pattern) -> None:
    assert len(sentences) >= 200
    for s in sentences + tuple(sentence_pool(lang, 700)):
        t = normalize_text(s, lang)
        assert pattern.fullmatch(t), s
        assert MIN_WORDS <= len(t.split()) <= MAX_WORDS, s
    pool = [normalize_text(s, lang) for s in sentence_pool(lang, 700)]
    assert len(set(pool)) == 700
    train, val = split_sentences(lang, 400, 60)
    assert not {normalize_text(s, lang) for s in train} & {normalize_text(s, lang) for s in val}
    # One validation set for every training size (the stand-in's corpus and the demo's share it), and a smaller
    # training list is a prefix of a larger one: nothing a corpus validates on is in another's training data.
    big_train, big_val = split_sentences(lang, 3000, 60)
    assert big_val == val and big_train[:400] == train
    assert not set(big_train) & set(val)
    # Validation sentences are new combinations of the slot vocabulary: nearly every word occurs in training.
    vocab = {w for s in big_train for w in normalize_text(s, lang).split()}
    words = [w for s in val for w in normalize_text(s, lang).split()]
    assert sum(w not in vocab for w in words) <= 0.01 * len(words)


@pytest.mark.parametrize("lang", ["en", "hi"])
def test_the_pool_is_broad(lang: str) -> None:
    """Thousands of distinct sentences over a broad vocabulary: a model must learn sounds, not sentences."""
    pool = [normalize_text(s, lang) for s in sentence_pool(lang, 8000)]
    words = {w for s in pool for w in s.split()}
    assert len(set(pool)) == 8000 and len(words) >= (1100 if lang == "en" else 800)


def _manifest(root: Path, lang: str, split: str) -> list[dict]:
    lines = (root / "manifests" / f"{lang}_{split}.json").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_build_corpus(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    summary = build_corpus(out, n_train_per_lang=6, n_val_per_lang=2, seed=0)
    assert not summary["cached"]
    assert summary["counts"] == {"en": {"train": 6, "val": 2}, "hi": {"train": 6, "val": 2}}
    assert summary["voices"] == {lang: {s: list(v) for s, v in d.items()} for lang, d in VOICES.items()}
    for lang in ("en", "hi"):
        rows = {split: _manifest(out, lang, split) for split in ("train", "val")}
        assert len(rows["train"]) == 6 and len(rows["val"]) == 2
        for split, items in rows.items():
            for r in items:
                path = Path(r["audio_filepath"])
                assert path.is_absolute() and path.is_file() and path.parent == out.resolve() / lang / split
                audio, sr = sf.read(path, dtype="float32")
                assert sr == SAMPLE_RATE and audio.ndim == 1
                assert abs(len(audio) - r["duration"] * SAMPLE_RATE) <= 1
                assert 0.5 <= r["duration"] <= 6.0 and _rms(audio) > 0.01
                assert r["lang"] == lang and r["voice"] in VOICES[lang][split]
                if lang == "en":
                    assert EN_RE.fullmatch(r["text"])
                else:
                    assert HI_RE.fullmatch(r["text"]) and "।" not in r["text"]
                    assert r["text"] == unicodedata.normalize("NFC", r["text"])
        # Unseen voices and unseen sentences in validation.
        assert not {r["voice"] for r in rows["train"]} & {r["voice"] for r in rows["val"]}
        assert not {r["text"] for r in rows["train"]} & {r["text"] for r in rows["val"]}
    info = json.loads((out / "corpus_info.json").read_text(encoding="utf-8"))
    assert info["params"]["n_train_per_lang"] == 6 and info["total_hours"] > 0

    wavs = sorted(out.rglob("*"))
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    again = build_corpus(out, n_train_per_lang=6, n_val_per_lang=2, seed=0)
    assert again["cached"] and again["counts"] == summary["counts"]
    assert sorted(out.rglob("*")) == wavs and {p: p.stat().st_mtime_ns for p in wavs} == mtimes

    # Different parameters rebuild the corpus in place; no temporary folders are left behind.
    rebuilt = build_corpus(out, n_train_per_lang=4, n_val_per_lang=1, seed=1)
    assert not rebuilt["cached"] and len(_manifest(out, "hi", "train")) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_build_corpus_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not a corpus")
    with pytest.raises(UserError):
        build_corpus(tmp_path, n_train_per_lang=1, n_val_per_lang=1)
    assert (tmp_path / "precious.txt").read_text() == "not a corpus"


def _clip_hashes(paths) -> dict[str, str]:
    import hashlib

    return {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _every_voice_plan() -> list[tuple[str, dict]]:
    """Two utterances in every voice and variant the demo's corpora use (its corpus and validation sets; the
    stand-in's own corpus, not rebuilt since, keeps its earlier synthesis)."""
    from demo.standin_corpus import FREE_VAL_VOICES

    voices = {("en", v) for v in (*VOICES["en"]["train"], *VOICES["en"]["val"], *FREE_VAL_VOICES)}
    voices |= {("hi", v) for v in (*VOICES["hi"]["train"], *VOICES["hi"]["val"])}
    text = {"en": ("The weather is breathy today.", "We went to the market."), "hi": ("आज मौसम अच्छा है", "हम बाज़ार गए")}
    return [(lang, {"source": t, "voice": v, "rate": 150 + 20 * k, "pitch": 40 + 10 * k, "pitch_range": 50})
            for lang, v in sorted(voices) for k, t in enumerate(text[lang])]


def test_synthesis_is_byte_identical_whatever_ran_before(tmp_path: Path) -> None:
    """`render`: the same plan gives the same bytes, clip for clip, with the voices in either order (each voice in
    a process of its own, each utterance seeded from its plan entry)."""
    from demo.corpus import render

    plan = _every_voice_plan()
    runs = []
    for name, order, processes in (("a", 1, 2), ("b", -1, 2)):
        (tmp_path / name).mkdir()
        items = [(tmp_path / name / f"{lang}_{u['voice']}_{u['rate']}.wav", lang, u) for lang, u in plan]
        by_voice: dict[str, list] = {}
        for it in items:
            by_voice.setdefault(it[2]["voice"], []).append(it)  # a voice's own utterances stay in plan order
        seconds = render([it for v in list(by_voice)[::order] for it in by_voice[v]], processes=processes)
        assert len(seconds) == len(plan) and min(seconds.values()) > 0.5
        runs.append(_clip_hashes(it[0] for it in items))
    assert runs[0] == runs[1] and len(set(runs[0].values())) == len(plan)


def test_espeak_alone_is_not_reproducible(tmp_path: Path) -> None:
    """Why `render` exists, shown on eSpeak itself: unseeded, a breathy variant differs between two processes; and
    the same utterance spoken twice in one process differs, seeded or not. (The comparison above fails on both.)"""
    import subprocess
    import sys
    import time

    from demo.common import ROOT

    code = ("import hashlib, sys; from demo.corpus import synthesize\n"
            "seed = None if sys.argv[1] == 'none' else 7\n"
            "a = [synthesize('The weather is breathy today.', 'en', 'en+f2', seed=seed) for _ in range(2)]\n"
            "print(*[hashlib.sha256(x.tobytes()).hexdigest() for x in a])")

    def run(seed: str) -> list[str]:
        r = subprocess.run([sys.executable, "-c", code, seed], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    # eSpeak seeds its noise from the clock in whole seconds: two processes started within one second draw the
    # same noise (this assertion failed once so), so the second starts in the next second.
    first = run("none")
    time.sleep(1.1)
    unseeded = [first, run("none")]
    assert unseeded[0][0] != unseeded[1][0]  # the noise differs between processes
    seeded = [run("7"), run("7")]
    assert seeded[0] == seeded[1]  # seeded, one process repeats another
    assert seeded[0][0] != seeded[0][1]  # but the second utterance of a process differs from its first


def test_corpus_and_validation_sets_rebuild_byte_identical(tmp_path: Path) -> None:
    from demo import validation

    built = []
    for name in ("a", "b"):
        info = build_corpus(tmp_path / name / "corpus", n_train_per_lang=3, n_val_per_lang=2, seed=0)
        val = validation.build(info["manifests"], tmp_path / name / "val")
        paths = [json.loads(line)["audio_filepath"] for m in (*info["manifests"].values(), *val["manifests"].values())
                 for line in Path(m).read_text(encoding="utf-8").splitlines()]
        built.append(_clip_hashes(p for p in paths if "/val/" in p or "_free_" in p or "/train/" in p))
    assert built[0] == built[1] and len(built[0]) >= 2 * (3 + 2) + 2 * validation.N_FREE
