"""The demo's validation sets (demo.validation): template sentences and free text, in voices training never hears."""

from __future__ import annotations

import json

from demo import free_text, validation
from demo.corpus import VOICES
from demo.text import _DEVANAGARI


def _texts(path) -> list[str]:
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


def test_free_plan_holds_everyday_wikipedia_style_and_hindi_word_strings():
    avoid = {"है", "में", "की"}
    plan = validation.free_plan(["है में की"])
    en, hi = plan["en"], plan["hi"]
    assert len(en) == len(hi) == validation.N_FREE
    hand = [free_text.normalize_text(s, "en") for s in free_text.free_validation_sentences()]
    half = validation.N_FREE - validation.N_FREE // 2
    assert [u["text"] for u in en[:half]] == hand[:half]
    for u in en[half:]:  # Wikipedia-style, each with held-out words no training text holds
        assert sum(free_text.is_held_out(w) for w in u["text"].split()) >= 2
    for u in hi:
        assert _DEVANAGARI.fullmatch(u["text"]) and sum(w not in avoid for w in u["text"].split()) >= 2
    assert not {u["voice"] for u in en} & set(VOICES["en"]["train"])
    assert {u["voice"] for u in hi} == set(VOICES["hi"]["val"])
    assert validation.free_plan(["है में की"]) == plan  # fixed by its arguments


def test_mixed_sets_are_templates_then_free_and_are_reused(small_corpus, tmp_path):
    info = validation.build(small_corpus, out=tmp_path / "val")
    for lang in ("en", "hi"):
        rows = _texts(info["manifests"][lang])
        template = _texts(small_corpus[f"{lang}_val"])[: validation.N_TEMPLATE]
        assert rows[: len(template)] == template
        assert len(rows) == len(template) + validation.N_FREE
    # Hindi strings are built to hold words the training text lacks; the English held-out words are absent from
    # the stand-in's training text, and mostly from the demo corpus's too.
    assert info["free_words_unseen_in_training"]["hi"] >= 0.3
    assert info["free_words_unseen_in_training"]["en"] >= 0.2
    stamp = (tmp_path / "val" / "validation_info.json").stat().st_mtime_ns
    assert validation.build(small_corpus, out=tmp_path / "val") == info
    assert (tmp_path / "val" / "validation_info.json").stat().st_mtime_ns == stamp  # not rebuilt
