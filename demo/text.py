"""Sentences for the offline English + Hindi demo corpus, written for this project (text under `assets/text/`).

Two sources per language: a few hundred hand-written everyday sentences (`assets/text/<lang>_sentences.txt`)
and templates below whose slots are filled from word lists (`assets/text/<lang>_slots.txt`: ~1000 English and
~700 Hindi words), so that thousands of distinct sentences with a broad vocabulary can be composed. A model
that only memorizes sentences fails on the validation split, which holds sentences never used in training.

`sentence_pool` mixes both into a deterministic list of distinct sentences; `normalize_text` turns a
sentence into its transcript (English: lowercase letters, apostrophes, spaces; Hindi: NFC Devanagari,
no punctuation).
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

LANGS = ("en", "hi")
MIN_WORDS, MAX_WORDS = 3, 12
TEXT_DIR = Path(__file__).resolve().parents[1] / "assets" / "text"


def _read_lines(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def read_sentences(lang: str) -> tuple[str, ...]:
    """The hand-written sentences of `lang`, one a line (punctuated, so eSpeak gets natural prosody)."""
    return tuple(_read_lines(TEXT_DIR / f"{lang}_sentences.txt"))


@functools.cache
def slots(lang: str) -> dict[str, tuple[tuple[str, ...], ...]]:
    """The word lists of `lang`: section name -> entries, each entry its "|"-separated forms."""
    out: dict[str, list[tuple[str, ...]]] = {}
    section = None
    for line in _read_lines(TEXT_DIR / f"{lang}_slots.txt"):
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], [])
        elif section is None:
            raise ValueError(f"{TEXT_DIR / f'{lang}_slots.txt'}: entry {line!r} before any [section]")
        else:
            section.append(tuple(line.split("|")))
    return {k: tuple(v) for k, v in out.items()}


EN_SENTENCES = read_sentences("en")
HI_SENTENCES = read_sentences("hi")


# ---------------------------------------------------------------------------------------------------------
# Templates. Each returns one sentence built from slot words. Hindi slots carry grammatical gender where the
# verb or adjective must agree.
def _pick(rng: random.Random, lang: str, section: str, form: int = 0) -> str:
    entries = slots(lang)[section]
    return entries[rng.randrange(len(entries))][form]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _en_who(rng: random.Random) -> str:
    return _pick(rng, "en", "name") if rng.random() < 0.4 else _pick(rng, "en", "person")


def _en_thing_place(rng: random.Random) -> str:
    return f"The {_pick(rng, 'en', 'adjective')} {_pick(rng, 'en', 'thing')} is {_pick(rng, 'en', 'location')}."


def _en_likes(rng: random.Random) -> str:
    verb = rng.choice(("likes", "loves", "wants", "does not like", "never eats", "often buys"))
    return f"{_en_who(rng)} {verb} {_pick(rng, 'en', 'food')}."


def _en_future(rng: random.Random) -> str:
    subj = rng.choice(("We", "They", "I", "My friends", "You", _pick(rng, "en", "name")))
    return f"{subj} will {_pick(rng, 'en', 'act')} {_pick(rng, 'en', 'time_future')}."


def _en_please(rng: random.Random) -> str:
    act, when = _pick(rng, "en", "act"), _pick(rng, "en", "when")
    return f"Please {act} {when}." if rng.random() < 0.5 else f"Can you {act} {when}?"


def _en_went(rng: random.Random) -> str:
    return f"{_en_who(rng)} went to the {_pick(rng, 'en', 'place')} {_pick(rng, 'en', 'time_past')}."


def _en_did(rng: random.Random) -> str:
    return f"{_en_who(rng)} {_pick(rng, 'en', 'act', 1)} {_pick(rng, 'en', 'time_past')}."


def _en_count(rng: random.Random) -> str:
    things = _pick(rng, "en", "thing", 1) if rng.random() < 0.6 else _pick(rng, "en", "animal", 1)
    return f"There are {_pick(rng, 'en', 'number')} {_pick(rng, 'en', 'adjective')} {things} in the {_pick(rng, 'en', 'room')}."


def _en_weather(rng: random.Random) -> str:
    time = rng.choice(("Yesterday", "Last night", "This morning", "Last week", "On Sunday", "Today"))
    verb = "is" if time == "Today" else "was"
    return f"{time} it {verb} very {_pick(rng, 'en', 'weather')}."


def _en_need(rng: random.Random) -> str:
    subj = rng.choice(("I", "We", "You", "They"))
    return f"{subj} have to {_pick(rng, 'en', 'act')} {_pick(rng, 'en', 'time_future')}."


def _en_saw(rng: random.Random) -> str:
    animal = _a(f"{_pick(rng, 'en', 'adjective')} {_pick(rng, 'en', 'animal')}")
    return f"{_en_who(rng)} saw {animal} near the {_pick(rng, 'en', 'place')}."


def _en_why(rng: random.Random) -> str:
    return f"Why did {_en_who(rng)} {_pick(rng, 'en', 'act')} {_pick(rng, 'en', 'time_past')}?"


def _en_said(rng: random.Random) -> str:
    return f"{_pick(rng, 'en', 'name')} said that the {_pick(rng, 'en', 'thing')} was {_pick(rng, 'en', 'adjective')}."


def _en_gave(rng: random.Random) -> str:
    thing = _a(f"{_pick(rng, 'en', 'adjective')} {_pick(rng, 'en', 'thing')}")
    return f"{_pick(rng, 'en', 'name')} gave {_pick(rng, 'en', 'person')} {thing}."


_EN_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _en_thing_place, _en_likes, _en_future, _en_please, _en_went, _en_did, _en_count, _en_weather, _en_need,
    _en_saw, _en_why, _en_said, _en_gave)


def _hi_noun_adj(rng: random.Random, section: str) -> tuple[str, str, str]:
    """(noun, agreeing adjective, gender m/f) for a [thing] or [animal]."""
    noun, gender = slots("hi")[section][rng.randrange(len(slots("hi")[section]))]
    return noun, _pick(rng, "hi", "adjective", 0 if gender == "m" else 1), gender


def _hi_thing_place(rng: random.Random) -> str:
    thing, adj, gender = _hi_noun_adj(rng, "thing")
    return f"{adj} {thing} {_pick(rng, 'hi', 'location')} {'रखा' if gender == 'm' else 'रखी'} है।"


def _hi_likes(rng: random.Random) -> str:
    verb = rng.choice(("पसंद है", "पसंद नहीं है", "चाहिए", "बहुत पसंद है"))
    return f"{_pick(rng, 'hi', 'person_obl')} को {_pick(rng, 'hi', 'food')} {verb}।"


def _hi_future(rng: random.Random) -> str:
    # Plural/honorific subjects only, so the -एँगे verb forms always agree.
    return f"{_pick(rng, 'hi', 'person_pl')} {_pick(rng, 'hi', 'time_future')} {_pick(rng, 'hi', 'act_future')}।"


def _hi_please(rng: random.Random) -> str:
    when, act = _pick(rng, "hi", "when"), _pick(rng, "hi", "act_please")
    return f"कृपया {when} {act}।" if rng.random() < 0.5 else f"{when} {act}।"


def _hi_went(rng: random.Random) -> str:
    return f"{_pick(rng, 'hi', 'person_pl')} {_pick(rng, 'hi', 'time_past')} {_pick(rng, 'hi', 'place')} गए थे।"


def _hi_count(rng: random.Random) -> str:
    return f"{_pick(rng, 'hi', 'room')} में {_pick(rng, 'hi', 'number')} {_pick(rng, 'hi', 'plural_thing')} हैं।"


def _hi_weather(rng: random.Random) -> str:
    time = rng.choice(("कल", "कल रात", "आज सुबह", "पिछले हफ़्ते", "रविवार को", "आज"))
    return f"{time} मौसम बहुत {_pick(rng, 'hi', 'weather')} {'है' if time == 'आज' else 'था'}।"


def _hi_need(rng: random.Random) -> str:
    subj = rng.choice(("मुझे", "हमें", "आपको", "उन्हें"))
    return f"{subj} {_pick(rng, 'hi', 'time_future')} {_pick(rng, 'hi', 'need')} है।"


def _hi_saw(rng: random.Random) -> str:
    # With ने the past verb agrees with the object.
    animal, adj, gender = _hi_noun_adj(rng, "animal")
    verb = "देखा" if gender == "m" else "देखी"
    return f"{_pick(rng, 'hi', 'person_obl')} ने {_pick(rng, 'hi', 'place')} के पास एक {adj} {animal} {verb}।"


def _hi_bought(rng: random.Random) -> str:
    thing, adj, gender = _hi_noun_adj(rng, "thing")
    verb = "ख़रीदा" if gender == "m" else "ख़रीदी"
    return f"{_pick(rng, 'hi', 'person_obl')} ने {_pick(rng, 'hi', 'time_past')} एक {adj} {thing} {verb}।"


def _hi_where(rng: random.Random) -> str:
    thing, adj, gender = _hi_noun_adj(rng, "thing")
    return f"{'मेरा' if gender == 'm' else 'मेरी'} {adj} {thing} कहाँ है?"


_HI_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _hi_thing_place, _hi_likes, _hi_future, _hi_please, _hi_went, _hi_count, _hi_weather, _hi_need, _hi_saw,
    _hi_bought, _hi_where)


# ---------------------------------------------------------------------------------------------------------
_EN_KEEP = re.compile(r"[^a-z' ]+")
_DEVANAGARI = re.compile(r"[\u0900-\u097f ]+")


def normalize_text(text: str, lang: str) -> str:
    """Transcript form of `text`: what the ASR model is trained to output.

    English: lowercase ASCII letters, apostrophes and single spaces (other characters become spaces).
    Hindi: Unicode NFC, punctuation (danda included) removed, single spaces; raises ValueError if any
    non-Devanagari character remains, since that would leak Latin text into the Hindi vocabulary.
    """
    if lang == "en":
        text = text.lower().replace("\u2019", "'")
        text = _EN_KEEP.sub(" ", text)
        # Apostrophes only inside words ("don't"), never as quote marks.
        words = [w.strip("'") for w in text.split()]
        return " ".join(w for w in words if w)
    if lang == "hi":
        text = unicodedata.normalize("NFC", text)
        # Punctuation (P*), symbols (S*) and format controls (ZWJ/ZWNJ, Cf) are not spoken.
        text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text
                       if unicodedata.category(c) != "Cf")
        text = " ".join(text.split())
        if text and not _DEVANAGARI.fullmatch(text):
            bad = sorted({c for c in text if not _DEVANAGARI.fullmatch(c)})
            raise ValueError(f"non-Devanagari characters {bad} in Hindi text {text!r}")
        return text
    raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")


def _templated(lang: str, rng: random.Random) -> Iterator[str]:
    templates = _EN_TEMPLATES if lang == "en" else _HI_TEMPLATES
    while True:
        s = templates[rng.randrange(len(templates))](rng)
        yield s[0].upper() + s[1:] if lang == "en" else s


def sentence_pool(lang: str, n: int, seed: int = 0) -> list[str]:
    """Return `n` sentences (raw, for synthesis) whose normalized transcripts are all distinct.

    Deterministic in (lang, n, seed), and a prefix of the list for a larger `n` with the same seed, so
    callers can take the first k for one split and the next ones for another and get disjoint sets.
    Hand-written and templated sentences alternate until the hand-written ones run out.
    Raises ValueError if the sources cannot supply `n` distinct sentences.
    """
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    rng = random.Random(f"{lang}:{seed}")
    fixed = list(EN_SENTENCES if lang == "en" else HI_SENTENCES)
    rng.shuffle(fixed)
    generated = _templated(lang, rng)
    out: list[str] = []
    seen: set[str] = set()
    misses = 0
    # Templates start repeating as the pool fills up; give up only after many misses in a row.
    while len(out) < n and misses < 20_000:
        source_fixed = bool(fixed) and len(out) % 2 == 0
        s = fixed.pop() if source_fixed else next(generated)
        key = normalize_text(s, lang)
        if key in seen or not MIN_WORDS <= len(key.split()) <= MAX_WORDS:
            misses += 0 if source_fixed else 1
            continue
        misses = 0
        seen.add(key)
        out.append(s)
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct {lang} sentences available, {n} requested")
    return out


VAL_ZONE = 400  # validation sentences come from the pool's first VAL_ZONE, whatever the training size


def split_sentences(lang: str, n_train: int, n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Pick disjoint train and validation sentences (raw text) for one language.

    Validation takes the first `n_val` templated sentences of the pool's first `VAL_ZONE`: new sentences made of
    the slot vocabulary (the hand-written ones, with words nothing else uses, go to training). It does not
    depend on `n_train`, and a smaller `n_train` gives a prefix of a larger one's training list, so corpora of
    different sizes (the stand-in's, the demo's) share one validation set that none of them trains on.
    """
    fixed = set(EN_SENTENCES if lang == "en" else HI_SENTENCES)
    zone = sentence_pool(lang, VAL_ZONE, seed)
    val = [s for s in zone if s not in fixed][:n_val]
    if len(val) < n_val:
        raise ValueError(f"at most {len(val)} {lang} validation sentences available, {n_val} requested")
    held_out = set(val)
    train = [s for s in sentence_pool(lang, n_train + n_val, seed) if s not in held_out][:n_train]
    return train, val
