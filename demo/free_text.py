"""Free English text for the stand-in: sentences and word strings that no template wrote.

Two sources, both from packages on the Python index, read offline:
- Wikipedia-style sentences walked from the trigram chain that `essential-generators` (MIT) ships
  (`markov_textgen.json`, ~300k word pairs, mostly one continuation each, so its sentences read close to the
  Wikipedia text it was counted from). The walk is this module's own, on a seeded `random.Random`.
- Word strings drawn from `wordfreq`'s top English words, rarer words favoured over a pure frequency draw,
  so the model must spell words from their sound rather than predict them from context.

A held-out lexicon makes validation about English rather than memory: a word outside the `COMMON` most
frequent ones is held out when its hash falls in one tenth (and so are the rarer words of the hand-written
free validation sentences, `assets/text/en_free_sentences.txt`). Training text never contains a held-out word;
free validation sentences contain several.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from demo.text import TEXT_DIR, _read_lines, normalize_text

LEXICON = 30_000  # wordfreq's top English words for word strings
COMMON = 1_000  # the most frequent words: never held out (every sentence needs them)
HELD_OUT_ONE_IN = 10  # share of the other words held out for validation
MARKOV_WORDS = (5, 20)  # sentence length range kept from the chain (words after verbalizing numbers)
STRING_WORDS = (3, 12)  # word-string length range
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_HINDI_WORD = re.compile(r"[\u0900-\u0963\u0970-\u097f]+")  # Devanagari letters and signs: no danda, no digits
# Characters eSpeak would speak (or spell) that the transcript cannot hold: such sentences are skipped.
_UNSPEAKABLE = re.compile(r"[^A-Za-z0-9 ,.;:!?'\"()\-]")


@functools.cache
def common_words() -> frozenset[str]:
    from wordfreq import top_n_list

    return frozenset(top_n_list("en", COMMON))


@functools.cache
def free_validation_sentences() -> tuple[str, ...]:
    """Hand-written everyday sentences for the free validation set (not templates, not Wikipedia)."""
    return tuple(_read_lines(TEXT_DIR / "en_free_sentences.txt"))


@functools.cache
def _handwritten_rare() -> frozenset[str]:
    words = {w for s in free_validation_sentences() for w in normalize_text(s, "en").split()}
    return frozenset(words - common_words())


def is_held_out(word: str) -> bool:
    """True for a word that training text never contains (the free validation's unseen words)."""
    if word in common_words():
        return False
    if word in _handwritten_rare():
        return True
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % HELD_OUT_ONE_IN == 0


@functools.cache
def _chain() -> tuple[dict[str, tuple[list[str], list[float]]], list[str]]:
    """The trigram chain (each word pair's next words with cumulative weights) and its sentence starts."""
    import essential_generators

    path = Path(essential_generators.__file__).parent / "markov_textgen.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    # Cumulative weights once: random.choices would add them up on every draw (same draws either way).
    chain = {k: (v["transitions"], list(itertools.accumulate(v["weights"]))) for k, v in raw.items()
             if v.get("transitions")}
    # Sentence starts: a capitalised word after which the text goes on (a pair, not an end of sentence).
    starts = sorted(k for k in chain if k[:1].isupper() and k.split()[0].isalpha() and not k.endswith("."))
    return chain, starts


def _verbalize(token: str) -> str | None:
    """A token as eSpeak would say it in words, or None when that is not clear (the sentence is skipped)."""
    from num2words import num2words

    core = token.strip("()\"',.;:!?")
    if not any(c.isdigit() for c in core):
        return token
    lead, tail = token[: token.index(core[0])], token[token.index(core[0]) + len(core):]
    if re.fullmatch(r"\d{4}", core) and 1100 <= int(core) <= 2099:
        words = num2words(int(core), to="year")
    elif re.fullmatch(r"\d{1,7}", core) and not (len(core) > 1 and core[0] == "0"):
        words = num2words(int(core))
    elif m := re.fullmatch(r"(\d{1,4})(st|nd|rd|th)", core):
        words = num2words(int(m.group(1)), to="ordinal")
    else:
        return None
    return lead + words.replace("-", " ").replace(",", "") + tail


def _clean(sentence: str) -> str | None:
    """`sentence` with numbers in words, or None if it holds what the transcript could not (symbols, acronyms)."""
    if _UNSPEAKABLE.search(sentence):
        return None
    out = []
    for tok in sentence.split():
        core = tok.strip("()\"',.;:!?")
        # Acronyms (NASA, BBC) are spelled letter by letter or not, unpredictably: skip such sentences.
        if sum(c.isupper() for c in core) > 1 or (len(core) == 1 and core.isalpha() and core not in "aAI"):
            return None
        v = _verbalize(tok)
        if v is None:
            return None
        out.append(v)
    return " ".join(out)


def markov_sentences(seed: str) -> Iterator[tuple[str, str]]:
    """Endless (spoken text, transcript) pairs walked from the Wikipedia trigram chain, seeded by `seed`."""
    chain, starts = _chain()
    rng = random.Random(f"markov:{seed}")
    while True:
        words = starts[rng.randrange(len(starts))].split()
        while not words[-1].endswith((".", "?", "!")) and len(words) <= MARKOV_WORDS[1] + 5:
            nxt = chain.get(f"{words[-2]} {words[-1]}")
            if nxt is None:
                break
            words.append(rng.choices(nxt[0], cum_weights=nxt[1])[0])
        if not words[-1].endswith((".", "?", "!")):
            continue
        text = _clean(" ".join(words))
        if text is None:
            continue
        norm = normalize_text(text, "en")
        if MARKOV_WORDS[0] <= len(norm.split()) <= MARKOV_WORDS[1]:
            yield text, norm


@functools.cache
def _lexicon() -> tuple[list[str], list[float]]:
    """The lexicon and its cumulative weights."""
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", LEXICON) if _WORD.fullmatch(w) and (len(w) > 1 or w in "ai")]
    # Weight ~ rank^-0.5 instead of Zipf's rank^-1: rare words come up often enough to be learned.
    return words, list(itertools.accumulate((r + 50) ** -0.5 for r in range(len(words))))


def word_strings(seed: str) -> Iterator[tuple[str, str]]:
    """Endless (spoken text, transcript) strings of frequent-to-rare English words, training words only."""
    words, cum_weights = _lexicon()
    rng = random.Random(f"words:{seed}")
    while True:
        picked = rng.choices(words, cum_weights=cum_weights, k=rng.randint(*STRING_WORDS))
        if any(is_held_out(w) for w in picked):
            continue
        text = " ".join(picked)
        yield text[0].upper() + text[1:] + ".", normalize_text(text, "en")


def training_only(pairs: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """The pairs with no held-out word."""
    return ((t, n) for t, n in pairs if not any(is_held_out(w) for w in n.split()))


def hindi_word_strings(n: int, avoid: set[str], seed: int = 0) -> list[tuple[str, str]]:
    """`n` strings of Hindi words from wordfreq's frequency list (Devanagari only), each holding at least two
    words outside `avoid` (the words the Hindi training text uses)."""
    from wordfreq import top_n_list

    words = [w for w in top_n_list("hi", 5000) if _HINDI_WORD.fullmatch(w)]
    weights = [(r + 50) ** -0.5 for r in range(len(words))]
    rng = random.Random(f"hi-words:{seed}")
    out: list[tuple[str, str]] = []
    while len(out) < n:
        picked = rng.choices(words, weights=weights, k=rng.randint(3, 8))
        text = " ".join(picked)
        if sum(w not in avoid for w in picked) >= 2 and (text, text) not in out:
            out.append((text, normalize_text(text, "hi")))
    return out


def free_validation(n_markov: int, seed: int = 0) -> list[tuple[str, str]]:
    """The free validation sentences: all hand-written ones, then `n_markov` chain sentences that hold at
    least two held-out words (from a stream training never draws from)."""
    out = [(s, normalize_text(s, "en")) for s in free_validation_sentences()]
    for text, norm in markov_sentences(f"val:{seed}"):
        if len(out) >= len(free_validation_sentences()) + n_markov:
            break
        if sum(is_held_out(w) for w in norm.split()) >= 2 and (text, norm) not in out:
            out.append((text, norm))
    return out
