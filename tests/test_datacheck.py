"""The pre-flight data check: each problem a user's manifests can have, as an error (one line naming file and
line) or as a counted warning in the per-language summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MERGED_DIR, ROOT, run_main
from omegaconf import OmegaConf

from enhi.config import ManifestSpec, NamedSet, RunCfg
from enhi.datacheck import check_data, first_error, format_summary, inspect_run
from enhi.errors import UserError


def _wav(path: Path, seconds: float, sr: int = 16000, channels: int = 1) -> str:
    rng = np.random.default_rng(0)
    sf.write(path, 0.1 * rng.standard_normal((int(seconds * sr), channels)).astype(np.float32), sr)
    return str(path)


def _manifest(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _cfg(train: list[tuple[str, str]], val: list[tuple[str, str]] = ()):
    cfg = OmegaConf.structured(RunCfg)
    cfg.model.tokenizer.dir = str(MERGED_DIR)
    cfg.model.train_ds.manifests = [ManifestSpec(p, lang) for p, lang in train]
    cfg.model.validation_ds.sets = [NamedSet(lang, p, lang) for p, lang in val]
    cfg.model.train_ds.min_duration, cfg.model.train_ds.max_duration = 0.5, 5.0
    return cfg


@pytest.fixture
def audio(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF but not really a wav file")
    return {
        "ok1": _wav(tmp_path / "ok1.wav", 1.0),
        "ok2": _wav(tmp_path / "ok2.wav", 2.0),
        "short": _wav(tmp_path / "short.wav", 0.2),
        "long": _wav(tmp_path / "long.wav", 6.0),
        "sr8k": _wav(tmp_path / "sr8k.wav", 1.5, sr=8000),
        "stereo": _wav(tmp_path / "stereo.wav", 1.0, channels=2),
        "broken": str(tmp_path / "broken.wav"),
    }


def test_summary_counts_every_warning_per_language(audio, tmp_path):
    en = _manifest(tmp_path / "en.json", [
        {"audio_filepath": audio["ok1"], "duration": 1.0, "text": "hello world"},
        {"audio_filepath": audio["ok2"], "duration": 3.5, "text": "the duration field is wrong"},
        {"audio_filepath": audio["short"], "duration": 0.2, "text": "too short"},
        {"audio_filepath": audio["long"], "duration": 6.0, "text": "too long"},
        {"audio_filepath": audio["sr8k"], "duration": 1.5, "text": "telephone audio"},
        {"audio_filepath": audio["ok1"], "duration": 1.0, "text": "  "},
    ])
    hi = _manifest(tmp_path / "hi.json", [
        {"audio_filepath": audio["ok1"], "duration": 1.0, "text": "नमस्ते दुनिया"},
        {"audio_filepath": audio["ok2"], "duration": 2.0, "text": "नमस्ते 中文 中"},
    ])
    val = _manifest(tmp_path / "en_val.json", [{"audio_filepath": audio["stereo"], "duration": 1.0, "text": "two channels"}])
    reports = inspect_run(_cfg([(en, "en"), (hi, "hi")], [(val, "en")]))
    assert first_error(reports) is None
    r_en, r_hi, r_val = reports
    assert (r_en.n, r_hi.n, r_val.n) == (6, 2, 1)
    assert r_en.seconds == pytest.approx(1 + 2 + 0.2 + 6 + 1.5 + 1)
    assert (r_en.min_s, r_en.max_s) == (pytest.approx(0.2), pytest.approx(6.0))
    counts = {k: r_en.count(k) for k in ("too_short", "too_long", "resampled", "duration_field", "empty_text", "unk")}
    assert counts == {"too_short": 1, "too_long": 1, "resampled": 1, "duration_field": 1, "empty_text": 1, "unk": 0}
    assert r_en.issues["duration_field"].first == f"{en}:2: duration 3.5 s, file 2.00 s"
    assert r_en.sample_rates == {16000: 5, 8000: 1}
    # Hindi: 中 is in neither tokenizer (3 of 21 non-space code points); Devanagari is.
    assert r_hi.unk_chars == {"中": 2, "文": 1} and r_hi.chars == 21
    assert r_val.count("multichannel") == 1  # averaged to mono for evaluation: a warning, not an error

    text = format_summary(reports)
    assert "| train | hi | 2 | 0.001 | 1.00-2.00 | 16k×2 | 14.29% | hi.json |" in text
    assert "| train | en | 6 |" in text and "8k×1, 16k×5" in text
    assert f"train/hi: 1 × transcripts as written with characters the tokenizer cannot write; first {hi}:2: '中'; all: '中'×2, '文'×1" in text
    # the normalizer drops the line it cannot write (another script), never trains it as <unk>
    assert r_hi.dropped == {"unwritable": 1} and r_hi.unk_after == 0
    assert f"train/hi: 1 × dropped by model.text.hi (unwritable); first {hi}:2:" in text
    assert f"train/en: 1 × shorter than train_ds.min_duration: dropped from training; first {en}:3: 0.20 s" in text
    assert "validation/en: 1 × multi-channel: averaged to mono on load" in text


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([{"audio_filepath": "nowhere.wav", "duration": 1, "text": "a"}] * 3,
         r"train.json:1: audio file .*nowhere.wav not found; fix audio_filepath or remove the line \(and 2 more"),
        ([{"audio_filepath": "ok1.wav", "duration": 1, "text": "a"}, {"audio_filepath": "broken.wav", "duration": 1, "text": "b"}],
         r"train.json:2: audio file .*broken.wav \(.*\) cannot be read; convert it to WAV or FLAC"),
        ([{"audio_filepath": "stereo.wav", "duration": 1, "text": "a"}],
         r"train.json:1: audio file .*stereo.wav has 2 channels in training data; downmix to mono"),
        ([{"audio_filepath": "short.wav", "duration": 0.2, "text": "a"}, {"audio_filepath": "long.wav", "duration": 6, "text": "b"}],
         r"train.json: every utterance is outside train_ds.min_duration..max_duration \(0.20-6.00 s\)"),
    ],
    ids=["missing", "unreadable", "multichannel", "all_dropped"],
)
def test_problems_that_break_training_are_one_line_errors(rows, expected, audio, tmp_path):
    train = _manifest(tmp_path / "train.json", rows)  # relative audio paths resolve against the manifest
    with pytest.raises(UserError, match=expected) as e:
        check_data(_cfg([(train, "en")]), verbose=False)
    assert "\n" not in str(e.value)


def test_malformed_manifest_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"audio_filepath": "a.wav", "duration": 1, "text": "a"}\n{not json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.json:2: not valid JSON"):
        check_data(_cfg([(str(bad), "en")]), verbose=False)


def test_command_prints_summary_or_one_line_error(audio, tmp_path, capsys):
    """check_data.py's main, in-process (a subprocess would add NeMo's import time twice and test nothing more):
    exit status 0 and the summary, or 2 and one line on stderr naming the file and line."""
    good = _manifest(tmp_path / "good.json", [{"audio_filepath": audio["ok1"], "duration": 1.0, "text": "hello"}])
    bad = _manifest(tmp_path / "bad.json", [{"audio_filepath": audio["stereo"], "duration": 1.0, "text": "hello"}])
    def run(manifest: str) -> tuple[int, str, str]:
        return run_main(ROOT / "check_data.py", [f"model.tokenizer.dir={MERGED_DIR}",
                                                 f"model.train_ds.manifests=[{{path: {manifest}, lang: en}}]"], capsys)

    code, out, err = run(good)
    assert code == 0, err[-1500:]
    assert "| train | en | 1 | 0.000 | 1.00-1.00 | 16k×1 | 0.00% | good.json |" in out
    assert "data check passed" in out
    code, out, err = run(bad)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: {bad}:1: audio file")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["good.json", "bad.json", *(Path(a).name for a in audio.values())])


def test_command_output_is_the_summary_only(audio, tmp_path):
    """As a user runs it (its own process, where NeMo's import prints OneLogger's telemetry notes): the summary
    and the verdict, no library lines."""
    import subprocess
    import sys

    good = _manifest(tmp_path / "good.json", [{"audio_filepath": audio["ok1"], "duration": 1.0, "text": "hello"}])
    r = subprocess.run([sys.executable, str(ROOT / "check_data.py"), f"model.tokenizer.dir={MERGED_DIR}",
                        f"model.train_ds.manifests=[{{path: {good}, lang: en}}]"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "data check passed" in r.stdout
    for chatter in ("OneLogger", "No exporters were provided", "[NeMo"):
        assert chatter not in r.stdout + r.stderr, chatter
