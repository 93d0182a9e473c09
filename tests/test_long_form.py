"""Long recordings transcribed as well as their utterances: pause segmentation on signals with known pauses, and
the shipped English stand-in on a minute-long recording (score against per-utterance, timestamps, the CLI's
default mode with SRT and JSON output)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, load_script

from demo.long_form import SR, boundary_hits, long_recording, per_utterance, score, words_within
from demo.standin import SHIPPED as STANDIN
from enhi.long_audio import PAD_AFTER_S, PAD_BEFORE_S, pause_segments, transcribe_arrays, transcribe_long

BOUND = 0.05  # long-form WER may exceed per-utterance WER by at most this (the bench's target is 0.03 over 5 min)


def _bursts(spec: list[tuple[str, float]], seed: int = 0) -> np.ndarray:
    """Noise bursts ("s", seconds) and silences ("-", seconds) laid end to end, on a -70 dB noise floor."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal(round(d * SR)).astype(np.float32) * (0.2 if kind == "s" else 0.0) for kind, d in spec]
    x = np.concatenate(parts)
    return x + rng.standard_normal(x.size).astype(np.float32) * 10 ** (-70 / 20)


def _close(segs: list[dict], want: list[tuple[float, float]]) -> None:
    assert len(segs) == len(want), segs
    for g, (a, b) in zip(segs, want, strict=True):
        assert abs(g["start"] - a) <= 0.011 and abs(g["end"] - b) <= 0.011, (g, a, b)


def test_pause_segments_cut_at_pauses_only_and_trim_to_speech_keeping_a_pad_of_quiet():
    # A 0.1 s gap is a closure inside speech, not a pause; 0.5 s and 1.0 s gaps are pauses.
    x = _bursts([("-", 0.7), ("s", 1.0), ("-", 0.1), ("s", 0.8), ("-", 0.5), ("s", 1.2), ("-", 1.0), ("s", 0.5), ("-", 0.4)])
    speech = [(0.7, 2.6), (3.1, 4.3), (5.3, 5.8)]
    _close(pause_segments(x, SR, pad_s=(0.0, 0.0)), speech)
    before, after = PAD_BEFORE_S, PAD_AFTER_S
    assert 0 < after  # the default keeps some quiet after each segment
    _close(pause_segments(x, SR), [(a - before, b + after) for a, b in speech])
    _close(pause_segments(x, SR, pad_s=(0.2, 0.0)), [(a - 0.2, b) for a, b in speech])
    # A pad never reaches past the middle of a pause (nor the recording's ends): wide pads meet there.
    _close(pause_segments(x, SR, pad_s=(0.6, 0.6)), [(0.1, 2.85), (2.85, 4.8), (4.8, 6.2)])


def test_a_segment_longer_than_the_limit_is_cut_at_its_longest_inner_gap_and_packing_joins_neighbours():
    x = _bursts([("s", 6.0), ("-", 0.05), ("s", 3.0), ("-", 0.12), ("s", 4.0)])
    segs = pause_segments(x, SR, max_segment_s=10.0)
    assert [(round(g["start"], 2), round(g["end"], 2)) for g in segs] == [(0.0, 9.05), (9.17, 13.17)]
    y = _bursts([("s", 2.0), ("-", 0.5)] * 4)
    packed = pause_segments(y, SR, pack_s=5.0)
    assert [(round(g["start"], 2), round(g["end"], 2)) for g in packed] == [
        (0.0, 4.5 + PAD_AFTER_S), (5.0 - PAD_BEFORE_S, 9.5 + PAD_AFTER_S)]


@pytest.fixture(scope="module")
def recording(small_corpus):
    """About a minute of the shipped stand-in's language: 24 English utterances in four voices, varied pauses."""
    from enhi.manifest import read_manifest
    from enhi.training import load_nemo_file

    entries = read_manifest(small_corpus["en_val"]) + read_manifest(small_corpus["en_train"])[:16]
    samples, utts = long_recording(entries, seed=0)
    model = load_nemo_file(STANDIN)
    model.eval()
    return model, samples, utts


def test_pauses_mode_scores_as_the_utterances_one_by_one(recording):
    model, samples, utts = recording
    assert len(samples) / SR > 55
    per = score(utts, " ".join(t.strip() for t in transcribe_arrays(model, per_utterance(samples, utts))))
    # The stand-in hears these (its TDT head drops some words of the free sentences: 120 of 152 out, 2026-12-04).
    assert per["wer"] < 0.5 and per["words_out"] > 0.7 * per["words_ref"]
    r = transcribe_long(model, samples, mode="pauses", batch_size=8)
    long = score(utts, r["text"])
    assert long["wer"] <= per["wer"] + BOUND, (long, per)
    assert boundary_hits(utts, r["segments"], tol_s=0.3) >= 0.95

    # Word times from the decoder: the same transcript, every word timed, in order, inside its utterance.
    w = transcribe_long(model, samples, mode="pauses", batch_size=8, words=True)
    assert [g["text"] for g in w["segments"]] == [g["text"] for g in r["segments"]]
    for g in w["segments"]:
        assert [x["word"] for x in g["words"]] == g["text"].split()
        times = [t for x in g["words"] for t in (x["start"], x["end"])]
        assert times == sorted(times) and g["start"] <= times[0] and times[-1] <= g["end"], g
    assert words_within(utts, w["segments"], tol_s=0.3) >= 0.95
    # ... and words timed in the wrong place count against it.
    moved = [{**g, "words": [{**x, "start": x["start"] + 30, "end": x["end"] + 30} for x in g["words"]]}
             for g in w["segments"]]
    assert words_within(utts, moved, tol_s=0.3) < 0.5


def test_cli_default_is_pauses_and_writes_srt_and_json_timestamps(recording, tmp_path, capfd):
    model, samples, utts = recording
    wav = tmp_path / "talk.wav"
    sf.write(wav, samples, SR, subtype="PCM_16")
    main = load_script(ROOT / "transcribe_long.py").main
    main(["--model", str(STANDIN), "--audio", str(wav), "--timestamps", str(tmp_path / "talk.srt"), "--device", "cpu"])
    out, err = capfd.readouterr()
    assert err.startswith("mode: pauses (the default: cut at pauses")
    assert out.splitlines()[-1].endswith("segments cut at pauses)")
    srt = (tmp_path / "talk.srt").read_text(encoding="utf-8")
    cues = re.findall(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)\n\n", srt)
    assert len(cues) >= 0.95 * len(utts) and [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    starts = [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for _, h, m, s, ms, *_ in cues]
    assert sum(min(abs(t - u["start"]) for t in starts) <= 0.3 for u in utts) >= 0.95 * len(utts)
    main(["--model", str(STANDIN), "--audio", str(wav), "--timestamps", str(tmp_path / "talk.json"), "--device", "cpu"])
    capfd.readouterr()
    segs = json.loads((tmp_path / "talk.json").read_text(encoding="utf-8"))
    assert [g["text"] for g in segs] == [c[-1] for c in cues]
    assert all(" ".join(x["word"] for x in g["words"]) == g["text"] for g in segs)  # JSON times every word
    assert boundary_hits(utts, segs, tol_s=0.3) >= 0.95
    with pytest.raises(SystemExit) as e:
        main(["--model", str(STANDIN), "--audio", str(wav), "--timestamps", str(tmp_path / "talk.txt")])
    assert e.value.code == 2 and "writes .srt or .json" in capfd.readouterr().err


def test_word_times_from_the_ctc_head_and_the_decoding_settings_put_back(recording):
    from omegaconf import OmegaConf

    from enhi.long_audio import transcribe_arrays_with_words

    model, samples, utts = recording
    pieces = per_utterance(samples, utts)[:4]
    before = OmegaConf.to_yaml(model.cfg)
    transcribe_arrays_with_words(model, pieces)  # TDT
    assert OmegaConf.to_yaml(model.cfg) == before and model.cur_decoder == "rnnt"
    model.change_decoding_strategy(decoder_type="ctc", verbose=False)
    try:
        ctc_before = OmegaConf.to_yaml(model.cfg)
        texts = transcribe_arrays(model, pieces)
        timed = transcribe_arrays_with_words(model, pieces)
        assert [t for t, _ in timed] == texts and sum(bool(t) for t in texts) >= 3
        for (text, words), piece in zip(timed, pieces, strict=True):
            assert [w["word"] for w in words] == text.split()
            times = [t for w in words for t in (w["start"], w["end"])]
            assert times == sorted(times) and times[-1] <= len(piece) / SR + 0.08  # one 80 ms frame of slack
        assert OmegaConf.to_yaml(model.cfg) == ctc_before and model.cur_decoder == "ctc"
    finally:
        model.change_decoding_strategy(decoder_type="rnnt", verbose=False)
