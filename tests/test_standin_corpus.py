"""The next stand-in's corpus (issue 22): free text with a held-out lexicon, segments, noise and rooms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from demo import free_text
from demo import standin_corpus as sc
from demo.corpus import SAMPLE_RATE, corpus_plan


@pytest.fixture(scope="module")
def small_plan():
    return sc.plan(seed=0, n_single=150, n_segments=30)


def test_numbers_are_spoken_as_words_and_unsayable_sentences_are_skipped():
    assert free_text._clean("In 1941, 3 men left (on the 2nd day).") == (
        "In nineteen forty one, three men left (on the second day).")
    assert free_text._clean("He paid 1,000 dollars.") is None  # "1,000" is not a plain number token
    assert free_text._clean("NASA sent a probe.") is None  # acronyms are spelled or not, unpredictably
    assert free_text._clean("It costs $5 & more.") is None
    assert free_text._clean("Café au lait.") is None


def test_training_text_never_holds_a_held_out_word_and_free_validation_does(small_plan):
    train_words = {w for item in small_plan["train"] for p in item["parts"] for w in p["text"].split()}
    assert train_words and not any(free_text.is_held_out(w) for w in train_words)
    sources = {p["from"] for item in small_plan["train"] for p in item["parts"]}
    assert sources == set(sc.SOURCES)
    free = small_plan["en_free"]
    hand = free_text.free_validation_sentences()
    assert len(free) == len(hand) + sc.N_FREE_MARKOV
    for item in free[len(hand):]:
        assert sum(free_text.is_held_out(w) for w in item["parts"][0]["text"].split()) >= 2
    # The hand-written sentences' rarer words are held out: "violin", "symphony" never reach training text.
    assert free_text.is_held_out("violin") and free_text.is_held_out("symphony")
    assert not free_text.is_held_out("the") and not free_text.is_held_out("water")
    unseen = [w for item in free for w in item["parts"][0]["text"].split() if w not in train_words]
    assert len(unseen) > 100


def test_voices_of_validation_are_never_heard_in_training(small_plan):
    train = {item["voice"] for item in small_plan["train"]}
    assert train <= set(sc.TRAIN_VOICES)
    for split in ("en_val", "en_free"):
        assert not train & {item["voice"] for item in small_plan[split]}


def test_the_template_validation_is_the_demos_own(small_plan):
    demo = corpus_plan(8000, 100, 0, ("en",))["en"]["val"]
    ours = small_plan["en_val"]
    assert [(u["text"], u["voice"], u["rate"], u["pitch"], u["pitch_range"]) for u in demo] == [
        (i["parts"][0]["text"], i["voice"], i["parts"][0]["rate"], i["parts"][0]["pitch"],
         i["parts"][0]["pitch_range"]) for i in ours]


def test_the_plan_is_fixed_by_its_arguments(small_plan):
    again = sc.plan(seed=0, n_single=150, n_segments=30)
    assert sc.plan_sha256(again) == sc.plan_sha256(small_plan)
    assert sc.plan_sha256(sc.plan(seed=1, n_single=150, n_segments=30)) != sc.plan_sha256(small_plan)
    segments = [i for i in small_plan["train"] if len(i["parts"]) > 1]
    assert len(segments) == 30 and all(len(i["pauses_s"]) == len(i["parts"]) - 1 for i in segments)


def test_a_segment_is_cut_at_a_sentence_end_below_the_length_limit():
    part = {"source": "The captain saw a silver mouse near the old harbour.", "text": "x", "rate": 150,
            "pitch": 50, "pitch_range": 50}
    item = {"parts": [part] * 12, "pauses_s": [1.0] * 11, "voice": "en-us+m3", "lead_s": 0.3, "trail_s": 0.2,
            "noise": None, "reverb_rt60_s": None, "seed": 1}
    audio, kept = sc.render(item)
    one, _ = sc.render({**item, "parts": [part], "pauses_s": [], "lead_s": 0.0, "trail_s": 0.0})
    assert 2 <= kept < 12
    assert len(audio) / SAMPLE_RATE <= sc.MAX_SEGMENT_S
    expected = 0.5 + kept * len(one) / SAMPLE_RATE + (kept - 1) * 1.0
    assert abs(len(audio) / SAMPLE_RATE - expected) < 0.05 * kept
    assert np.all(audio[: int(0.25 * SAMPLE_RATE)] == 0)  # the leading silence is there


def test_noise_is_added_at_the_planned_snr():
    part = {"source": "Please answer the phone before you leave.", "text": "x", "rate": 150, "pitch": 50,
            "pitch_range": 50}
    item = {"parts": [part], "pauses_s": [], "voice": "en-us+m3", "lead_s": 0.0, "trail_s": 0.0,
            "noise": {"snr_db": 12.0, "pink": False}, "reverb_rt60_s": None, "seed": 3}
    noisy, _ = sc.render(item)
    rng = np.random.default_rng(3)
    noise = sc._noise(rng, len(noisy), False)
    # Recover the clean part by projection on the known noise draw (eSpeak's own audio varies in samples).
    scale = float(np.dot(noisy, noise) / np.dot(noise, noise))
    clean = noisy - scale * noise
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((scale * noise) ** 2))
    assert abs(snr - 12.0) < 0.5, snr


def test_pink_noise_falls_3_db_per_octave_and_rooms_keep_the_direct_sound_ahead():
    x = sc._noise(np.random.default_rng(0), 2**16, pink=True)
    power = np.abs(np.fft.rfft(x)) ** 2
    band = lambda lo: power[lo: 2 * lo].mean()  # noqa: E731
    assert abs(10 * np.log10(band(256) / band(512)) - 3.0) < 0.6
    ir = sc._room(np.random.default_rng(0), 0.5)
    assert len(ir) == SAMPLE_RATE // 2
    assert abs(10 * np.log10(ir[0] ** 2 / np.sum(ir[1:] ** 2)) - 20 * np.log10(2.0)) < 1e-3  # +6 dB


def test_long_recordings_join_validation_utterances_in_order(tmp_path):
    out = tmp_path / "c"
    rows = []
    for i in range(12):
        rel = f"en_val/u{i}.wav"
        (tmp_path / "t" / "en_val").mkdir(parents=True, exist_ok=True)
        import soundfile as sf

        sf.write(tmp_path / "t" / rel, np.full(int(3.0 * SAMPLE_RATE), 0.1, np.float32), SAMPLE_RATE)
        rows.append({"audio_filepath": str(out / rel), "duration": 3.0, "text": f"w{i}"})
    (tmp_path / "t" / "en_long").mkdir()
    lines = sc._long_recordings(tmp_path / "t", out, rows, seed=0)
    assert " ".join(r["text"] for r in lines) == " ".join(f"w{i}" for i in range(12))
    assert all(r["duration"] <= sc.LONG_S[1] + 0.5 for r in lines)
    assert json.dumps(lines)  # manifest-ready


def test_a_stand_in_run_is_resumed_only_by_the_command_that_started_it(monkeypatch):
    from dataclasses import replace

    from demo import standin_free

    stage = standin_free.STAGE
    name = standin_free.run_name(stage, "abc", "before")
    assert name.startswith(f"standin_{stage.name}__{stage.steps}steps__")
    assert standin_free.run_name(stage, "abd", "before") != name  # another corpus
    assert standin_free.run_name(stage, "abc", "other") != name  # another first stage
    assert standin_free.run_name(replace(stage, steps=stage.steps + 1), "abc", "before") != name  # other steps
    assert standin_free.run_name(replace(stage, lr=stage.lr / 2), "abc", "before") != name  # another learning rate
    for attr, value in (("CTC_WEIGHT", 0.1), ("SIZES", {**standin_free.SIZES, "n_layers": 5}),
                        ("MIX", {"free": 0.5, "templates": 0.5})):  # another CTC share, model, corpus mix
        with monkeypatch.context() as m:
            m.setattr(standin_free, attr, value)
            assert standin_free.run_name(stage, "abc", "before") != name, attr
    assert standin_free.run_name(stage, "abc", "before") == name
