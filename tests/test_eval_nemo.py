"""eval_nemo.py: predictions as JSON lines and WER/CER per language, scored with the per-script normalization."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, load_script

from enhi.evaluate import error_rates, normalize_text
from enhi.scoring import score


def test_normalization_is_right_for_each_script():
    assert normalize_text("Hello, World! It's  me.") == "hello world it's me"
    # Devanagari is not lower-cased, keeps its vowel signs and virama, loses the danda; NFC is applied.
    assert normalize_text("नमस्ते दुनिया।") == "नमस्ते दुनिया"
    assert normalize_text("\u0928\u093c") == "\u0929"  # न + nukta composes to ऩ under NFC
    assert normalize_text("Cafe\u0301") == "caf\u00e9"
    r = error_rates(["नमस्ते दुनिया", "the cat sat"], ["नमस्ते दुनिय", "The cat, sat!"])
    assert r["wer"] == pytest.approx(1 / 5) and r["cer"] == pytest.approx(1 / 21)


def test_eval_script_writes_predictions_and_scores(standin_nemo, small_corpus, tmp_path, capsys):
    mod = load_script(ROOT / "eval_nemo.py")
    out = tmp_path / "preds.jsonl"
    mod.main(["--model", str(standin_nemo), "--manifest", str(small_corpus["en_val"]),
              "--manifest", str(small_corpus["hi_val"]), "--out", str(out)])
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16 and {r["lang"] for r in rows} == {"en", "hi"}
    for lang, scheme in (("en", "whisper"), ("hi", "vistaar")):
        mine = [r for r in rows if r["lang"] == lang]
        refs, hyps = [r["text"] for r in mine], [r["pred_text"] for r in mine]
        expect, std = error_rates(refs, hyps), score(refs, hyps, scheme, lang)
        line = next(ln for ln in printed.splitlines() if ln.split()[:1] == [lang])
        assert line.split()[2:] == [f"{expect['wer']:.3f}", f"{expect['cer']:.3f}", scheme, f"{std['wer']:.3f}",
                                    f"{std['cer']:.3f}"]
        assert json.loads(printed.strip().splitlines()[-1])[lang] == {"project": expect, scheme: std}
    assert [p.name for p in tmp_path.iterdir()] == ["preds.jsonl"]


def test_eval_script_missing_model_is_one_line(tmp_path, capsys, small_corpus):
    mod = load_script(ROOT / "eval_nemo.py")
    with pytest.raises(SystemExit) as e:
        mod.main(["--model", str(tmp_path / "no.nemo"), "--manifest", str(small_corpus["en_val"]), "--out", str(tmp_path / "p.jsonl")])
    assert e.value.code == 2
    assert "no.nemo: model not found" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_long_transcriptions_show_a_progress_bar(standin_nemo, capsys):
    """eval_nemo's per-language progress: a bar over batches when there are more than four, none for short sets."""
    import numpy as np
    from nemo.collections.asr.models import ASRModel

    from enhi.evaluate import transcribe_audio

    model = ASRModel.restore_from(str(standin_nemo), map_location="cpu").eval()
    audio = [np.zeros(8000, np.float32)] * 10
    capsys.readouterr()
    transcribe_audio(model, audio, batch_size=2, progress="hi (10 utterances)")
    err = capsys.readouterr().err
    assert "hi (10 utterances): 100%" in err and "5/5" in err
    transcribe_audio(model, audio[:8], batch_size=2, progress="en")
    assert "en:" not in capsys.readouterr().err
