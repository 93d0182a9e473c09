"""The demo's and the benches' validation sets: half template sentences, half free text, in unseen voices.

Template sentences alone measure how well a model knows the corpus's templates, not the language (the shipped
stand-in scored 0.06 WER on them and 0.67 on sentences written outside them). So each language's validation set
is the first `N_TEMPLATE` template utterances of the corpus's validation split (as before) followed by
`N_FREE` free ones:
- English: hand-written everyday sentences and Wikipedia-style sentences holding held-out words
  (`demo.free_text`, the same free sentences as the stand-in's own free validation), in four eSpeak voices no
  training hears;
- Hindi: strings of words from wordfreq's Hindi frequency list, each with at least two words the Hindi training
  text never uses, in the corpus's unseen Hindi validation voices.
The combined manifests are fixed by the plan's hash and the corpus's validation manifests; the summary records
what share of the free words no training text holds.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from demo.common import CACHE
from enhi.atomic import atomic_dir

N_TEMPLATE = 50  # template utterances per language (the first of the corpus's validation split)
N_FREE = 50  # free utterances per language
OUT = CACHE / "validation"
VERSION = 2  # 2: bit-reproducible synthesis (demo.corpus.render)


def free_plan(hi_train_texts: list[str], seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The free utterances to synthesize per language: text, transcript, voice and prosody."""
    from demo import free_text
    from demo.corpus import PITCH, PITCH_RANGE, RATE_WPM, VOICES
    from demo.standin_corpus import FREE_VAL_VOICES

    hand = free_text.free_validation_sentences()
    en_all = free_text.free_validation(N_FREE // 2, seed)
    en = en_all[: N_FREE - N_FREE // 2] + en_all[len(hand):]
    avoid = {w for t in hi_train_texts for w in t.split()}
    hi = free_text.hindi_word_strings(N_FREE, avoid, seed)
    plan = {}
    for lang, items, voices in (("en", en, FREE_VAL_VOICES), ("hi", hi, VOICES["hi"]["val"])):
        rng = random.Random(f"free-val:{lang}:{seed}")
        plan[lang] = [{"source": src, "text": norm, "voice": voices[i % len(voices)], "rate": rng.randint(*RATE_WPM),
                       "pitch": rng.randint(*PITCH), "pitch_range": rng.randint(*PITCH_RANGE)}
                      for i, (src, norm) in enumerate(items)]
    return plan


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def build(manifests: dict[str, str], out: Path = OUT, seed: int = 0) -> dict[str, Any]:
    """Mixed validation manifests for "en" and "hi" from the corpus's manifests (keys like "en_val",
    "hi_train"), built once into `out` and reused while nothing they depend on changed."""
    from demo.corpus import render

    train_texts = {lang: [r["text"] for r in _rows(manifests[f"{lang}_train"])] for lang in ("en", "hi")}
    plan = free_plan(train_texts["hi"], seed)
    templates = {lang: _rows(manifests[f"{lang}_val"])[:N_TEMPLATE] for lang in plan}
    key = hashlib.sha256(json.dumps([VERSION, plan, templates], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    out = Path(out).resolve()
    info_path = out / "validation_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("key") == key and all(Path(p).is_file() for p in info["manifests"].values()):
            return info
    train_words = {lang: {w for t in train_texts[lang] for w in t.split()} for lang in plan}
    with atomic_dir(out, force=True) as tmp:
        paths, unseen = {}, {}
        for lang, items in plan.items():
            (tmp / lang).mkdir()
            rows = list(templates[lang])
            rels = [Path(lang, f"{lang}_free_{i:03d}.wav") for i in range(len(items))]
            seconds = render([(tmp / rel, lang, u) for rel, u in zip(rels, items, strict=True)])
            for rel, u in zip(rels, items, strict=True):
                rows.append({"audio_filepath": str(out / rel), "duration": round(seconds[str(tmp / rel)], 6),
                             "text": u["text"], "lang": lang, "voice": u["voice"]})
            (tmp / f"{lang}_val.json").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            paths[lang] = str(out / f"{lang}_val.json")
            words = [w for u in items for w in u["text"].split()]
            unseen[lang] = round(sum(w not in train_words[lang] for w in words) / len(words), 3)
        info = {"key": key, "manifests": paths, "n_template": N_TEMPLATE, "n_free": N_FREE,
                "free_words_unseen_in_training": unseen}
        (tmp / "validation_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info
