"""Word and character error rates, under the project's scheme and as published benchmarks score them.

Schemes (each normalizes reference and hypothesis the same way, then counts corpus-level edits):
- `project`: Unicode NFC, joiners deleted (a ZWJ inside `क्‍ष` keeps it one word), punctuation to spaces
  (Devanagari danda included, apostrophes inside words kept), spaces folded, Latin lower-cased. CER ignores
  spaces. What training validation has always reported.
- `vistaar` (Indic languages): AI4Bharat Vistaar's `evaluation.py`: ASCII punctuation and `।۔'-॥` deleted (not
  spaced: `ई-मेल` -> `ईमेल`), indic-nlp's normalizer for the language with its defaults (joiners removed, nukta
  letters decomposed, nasals not merged, digits not converted; Urdu skips it), space runs folded; WER and CER as
  jiwer computes them (CER counts spaces; an empty reference is scored as `<empty>`).
- `whisper` (English): the Open ASR Leaderboard's, where Parakeet's published English WERs come from: Whisper's
  `EnglishTextNormalizer` (`Mr.` -> `mister`, fillers and bracketed tags dropped, numbers as digits, American
  spelling); pairs whose reference normalizes to nothing are left out, as the leaderboard does.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Sequence

from enhi.text import JOINERS

SCHEMES = ("project", "vistaar", "whisper")
_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)
_JOINERS = re.compile(f"[{JOINERS}]")  # deleted, never spaced
_VISTAAR_DELETE = str.maketrans("", "", string.punctuation + "।۔'-॥")


def normalize_text(text: str) -> str:
    """The project scheme: NFC, joiners deleted, punctuation to spaces (keeps apostrophes inside words and every
    combining mark), folded spaces, case-folded Latin."""
    text = _JOINERS.sub("", unicodedata.normalize("NFC", text))
    # \w excludes Devanagari vowel signs and virama (category Mc/Mn): keep every mark, drop only punctuation.
    text = "".join(c if (unicodedata.category(c)[0] == "M" or not _PUNCT.match(c)) else " " for c in text)
    text = " ".join(w.strip("'") for w in text.split())
    return " ".join(text.split()).lower()  # str.lower leaves Devanagari untouched


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences (words or characters)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def _corpus_rates(refs: Sequence[str], hyps: Sequence[str], cer_spaces: bool) -> dict[str, float]:
    """Corpus WER and CER (errors / reference length) of normalized texts; words split on spaces, CER over the
    characters with or without the spaces."""
    we = wn = ce = cn = 0
    for r, h in zip(refs, hyps, strict=True):
        we += edit_distance(r.split(), h.split())
        wn += len(r.split())
        rc, hc = (r, h) if cer_spaces else (r.replace(" ", ""), h.replace(" ", ""))
        ce += edit_distance(rc, hc)
        cn += len(rc)
    return {"wer": we / max(wn, 1), "cer": ce / max(cn, 1)}


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """The project scheme: corpus WER and CER after `normalize_text`; CER ignores spaces."""
    return _corpus_rates([normalize_text(r) for r in refs], [normalize_text(h) for h in hyps], cer_spaces=False)


@functools.cache
def _indic_normalizer(lang: str):
    from indicnlp.normalize.indic_normalize import IndicNormalizerFactory

    return IndicNormalizerFactory().get_normalizer(lang)


@functools.cache
def vistaar_languages() -> frozenset[str]:
    """Languages Vistaar's scheme normalizes: indic-nlp's, and Urdu (which Vistaar scores without it)."""
    from indicnlp.normalize.indic_normalize import IndicNormalizerFactory

    f = IndicNormalizerFactory()
    return frozenset(lang for lang in ("as", "bn", "brx", "doi", "gu", "hi", "kn", "kok", "ks", "mai", "ml", "mni",
                                       "mr", "ne", "or", "pa", "sa", "sat", "sd", "si", "ta", "te", "ur")
                     if lang == "ur" or f.is_language_supported(lang))


def vistaar_normalize(text: str, lang: str) -> str:
    text = text.translate(_VISTAAR_DELETE)
    if lang[:2] != "ur":
        text = _indic_normalizer(lang[:2]).normalize(text)
    return re.sub(" +", " ", text)


@functools.cache
def _english_normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def whisper_normalize(text: str) -> str:
    return _english_normalizer()(text)


def standard_scheme(lang: str) -> str | None:
    """The benchmark scheme of a language: `whisper` for English, `vistaar` for an Indic one, else None."""
    if lang == "en":
        return "whisper"
    return "vistaar" if lang[:2] in vistaar_languages() else None


def schemes_for(lang: str) -> list[str]:
    return ["project"] + ([s] if (s := standard_scheme(lang)) else [])


def _jiwer_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """jiwer's conventions: ends stripped, words split on spaces, CER over characters spaces included."""
    return _corpus_rates([r.strip() for r in refs], [h.strip() for h in hyps], cer_spaces=True)


def score(refs: Sequence[str], hyps: Sequence[str], scheme: str, lang: str) -> dict[str, float]:
    """Corpus WER and CER of `hyps` against `refs` under `scheme` (one of SCHEMES)."""
    if scheme == "project":
        return error_rates(refs, hyps)
    if scheme == "vistaar":
        pairs = [(vistaar_normalize(r, lang) or "<empty>", vistaar_normalize(h, lang)) for r, h in zip(refs, hyps, strict=True)]
    elif scheme == "whisper":
        pairs = [(whisper_normalize(r), whisper_normalize(h)) for r, h in zip(refs, hyps, strict=True)]
        pairs = [(r, h) for r, h in pairs if r.strip()]
    else:
        raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    return _jiwer_rates([r for r, _ in pairs], [h for _, h in pairs])


def score_all(refs: Sequence[str], hyps: Sequence[str], lang: str, raw_refs: Sequence[str] | None = None
              ) -> dict[str, dict[str, float]]:
    """{scheme: {"wer", "cer"}} for the project's scheme (against `refs`, the training text) and the language's
    standard one (against `raw_refs`, the manifest's own references, as a benchmark scores them; default `refs`)."""
    raw = refs if raw_refs is None else raw_refs
    return {s: score(refs if s == "project" else raw, hyps, s, lang) for s in schemes_for(lang)}


def read_predictions(path: str) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """A predictions file (JSON lines with `text`, `pred_text`, `lang` and optionally `raw_text`, as eval_nemo.py
    writes them) as {lang: (references, hypotheses, raw references)}; a malformed line is a `UserError` naming
    the file and line."""
    from pathlib import Path

    from enhi.errors import UserError
    from enhi.manifest import json_lines

    if not Path(path).is_file():
        raise UserError(f"{path}: predictions file not found; eval_nemo.py --out writes one")
    groups: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for n, row in json_lines(Path(path)):
        missing = [k for k in ("text", "pred_text", "lang") if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"{path}:{n}: missing {', '.join(missing)}; each line needs text, pred_text and lang")
        refs, hyps, raw = groups.setdefault(str(row["lang"]), ([], [], []))
        refs.append(str(row["text"]))
        hyps.append(str(row["pred_text"]))
        raw.append(str(row.get("raw_text", row["text"])))
    if not groups:
        raise UserError(f"{path}: no predictions in the file")
    return groups
