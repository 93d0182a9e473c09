r"""Training text: each language's transcripts normalized to what the model can and should write.

Real corpora write dandas, digits, noise tags (`[noise]`, `<laugh>`), joiners and punctuation that the merged
tokenizer has no piece for; left as they are, each becomes `<unk>` and the model learns to write `<unk>`.
A `TextNormalizer` per language (settings `model.text.<lang>` in the YAML, `LangText` in enhi/config.py) turns
a transcript into trainable text or drops the utterance, in this order:

1. Unicode NFC;
2. joiners deleted, never replaced by a space (ZWJ, ZWNJ, BOM, word joiner, soft hyphen): `क्‍ष` stays one word;
3. tags removed (`[noise]`, `<laugh>`, any `[...]` or `<...>`); an utterance with an unintelligible tag
   (`<unintelligible>`, `[inaudible]`, ...) is dropped, as IndicVoices' preparation drops it;
4. numbers: verbalized (`num2words` for English, AI4Bharat's `indic-numtowords` for Indic languages; currency
   and percent signs read with them), the utterance dropped, or kept. Before punctuation, so `1,000`, `3.5`,
   `$20` and `20%` are read as numbers, and the hyphens of "twenty-four" go with the punctuation;
5. punctuation and symbols: `auto` keeps the marks the language's own pieces write (Parakeet's English writes
   `' , . ? !`; curly apostrophes become `'`, `…` becomes `.`), every other mark becomes a space (IndicVoices'
   convention; Vistaar's scoring deletes them, which `enhi.scoring` does). The new language's pieces write no
   punctuation, so Hindi loses it all, the danda included;
6. Latin words inside a non-Latin language: kept (the English pieces write them), stripped, or the utterance
   dropped; case: kept (Parakeet writes case) or lower-cased;
7. letters the tokenizer cannot write at all (another script): the utterance dropped, or the letters deleted;
8. spaces collapsed; an utterance left empty is dropped.

    uv run python -m enhi.text --lang hi < transcripts.txt   # one normalized line per input line, empty = dropped
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from enhi.manifest import ManifestEntry

BASE_LANG = "en"  # the pretrained model's language (enhi.lang_hint.BASE_LANG says the same for decoding)

# Allowed values of each setting (checked by enhi.config).
CHOICES = {
    "punctuation": ("auto", "strip", "keep"),
    "digits": ("verbalize", "drop_utterance", "keep"),
    "tags": ("strip", "keep"),
    "unintelligible": ("drop_utterance", "strip"),
    "latin": ("keep", "strip", "drop_utterance"),
    "case": ("keep", "lower"),
    "joiners": ("delete", "keep"),
    "unwritable": ("drop_utterance", "delete"),
}

JOINERS = "\u200d\u200c\ufeff\u2060\u00ad\u200b"  # ZWJ, ZWNJ, BOM, word joiner, soft hyphen, zero-width space
_JOINERS_RE = re.compile(f"[{JOINERS}]")
TAG_RE = re.compile(r"\[[^\[\]<>]{1,40}\]|<[^<>\[\]]{1,40}>")
UNINTELLIGIBLE_TAGS = frozenset({"unintelligible", "inaudible", "unclear", "unk", "unknown"})
# Equivalents of marks a tokenizer may write: the mark is written as its equivalent when that one is writable.
MARK_EQUIVALENTS = {"’": "'", "‘": "'", "ʼ": "'", "′": "'", "`": "'", "…": ".", "।": ".", "॥": "."}
_NUMBER_RE = re.compile(
    r"(?P<cur>[$₹€£]\s?)?(?P<num>\d+(?:,\d+)*(?:\.\d+)?)(?P<ord>st|nd|rd|th)?(?P<pct>\s?%)?(?!\w)|(?P<bare>\d+)"
)
LATIN_RE = re.compile(r"[A-Za-z]")

CURRENCY = {
    "en": {"$": "dollars", "₹": "rupees", "€": "euros", "£": "pounds"},
    "indic": {"$": "डॉलर", "₹": "रुपये", "€": "यूरो", "£": "पाउंड"},
}
PERCENT = {"en": "percent", "indic": "प्रतिशत"}
DECIMAL_POINT = {"en": "point", "indic": "दशमलव"}


def indic_number_langs() -> tuple[str, ...]:
    """Languages `indic-numtowords` verbalizes (ISO 639-1 codes)."""
    from indic_numtowords import supported_langs

    return tuple(lang for lang in supported_langs if lang != "en")


def _int_of(digits: str) -> int:
    return int("".join(str(unicodedata.digit(c)) for c in digits))


def _words(number: str, lang: str, ordinal: bool) -> str:
    """One number (any script's digits, `,` grouping, `.` decimals) in words."""
    whole, _, frac = number.replace(",", "").partition(".")
    n = _int_of(whole)
    if lang == BASE_LANG:
        from num2words import num2words

        if frac:
            return num2words(Decimal(f"{n}.{_int_of(frac):0{len(frac)}d}"))
        if ordinal:
            return num2words(n, to="ordinal")
        if len(whole) == 4 and 1100 <= n <= 2099 and "," not in number:
            return num2words(n, to="year")
        return num2words(n)
    from indic_numtowords import num2words as indic

    def say(d: str) -> str:  # the package reads past 9 digits digit by digit, from a string only
        return indic(str(_int_of(d)), lang=lang)

    text = say(whole)
    if frac:
        text += f" {DECIMAL_POINT['indic']} " + " ".join(say(d) for d in frac)
    return text


def verbalize_numbers(text: str, lang: str) -> str:
    """Every number of `text` in words of `lang`, with `$ ₹ € £` and `%` read beside it; a number with leading
    zeros (a code, a phone number) is read digit by digit."""
    kind = "en" if lang == BASE_LANG else "indic"

    def one(m: re.Match) -> str:
        if m.group("bare"):  # digits glued to letters (COVID19): read as a number
            return f" {_words(m.group('bare'), lang, False)} "
        num = m.group("num")
        if len(num) > 1 and num[0] in "0०" and "." not in num:
            words = " ".join(_words(d, lang, False) for d in num if d.isdigit())
        else:
            words = _words(num, lang, bool(m.group("ord")) and kind == "en")
        if m.group("ord") and kind != "en":
            words += " " + m.group("ord")
        if m.group("cur"):
            words += " " + CURRENCY[kind][m.group("cur").strip()]
        if m.group("pct"):
            words += " " + PERCENT[kind]
        return f" {words} "

    return _NUMBER_RE.sub(one, text)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


@dataclass(frozen=True)
class Normalized:
    """A transcript after normalization: `text`, or None with the reason the utterance is dropped."""

    text: str | None
    dropped: str | None = None


class Writable:
    """Which characters a SentencePiece tokenizer writes, and which marks a language's own pieces hold.

    A merged folder's `merge_report.json` says how many pieces the base (English) had: those are the base
    language's, the rest the new language's. Without it every piece counts as every language's."""

    def __init__(self, sp, base_size: int | None = None):
        """`sp`: a SentencePieceProcessor; `base_size`: how many of its first pieces are the base language's (None:
        every piece is every language's)."""
        self.sp = sp
        n = sp.get_piece_size()
        base = n if base_size is None else int(base_size)
        normal = [i for i in range(n) if not (sp.is_unknown(i) or sp.is_control(i))]
        marks = {i: {c for c in sp.id_to_piece(i) if _is_mark(c) and c != "▁"} for i in normal}
        self.base_marks = frozenset(c for i in normal if i < base for c in marks[i])
        self.new_marks = frozenset(c for i in normal if i >= base or base == n for c in marks[i])
        self._cache: dict[str, bool] = {}

    @classmethod
    def of_folder(cls, tokenizer_dir: str | Path) -> Writable:
        """A NeMo tokenizer folder; a merged one's `merge_report.json` gives the base size."""
        import json

        import sentencepiece as spm

        folder = Path(tokenizer_dir)
        report = folder / "merge_report.json"
        base = json.loads(report.read_text(encoding="utf-8"))["base"]["size"] if report.is_file() else None
        return cls(spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")), base)

    def marks(self, lang: str) -> frozenset[str]:
        return self.base_marks if lang == BASE_LANG else self.new_marks

    def __call__(self, ch: str) -> bool:
        if ch not in self._cache:
            self._cache[ch] = ch.isspace() or self.sp.unk_id() not in self.sp.encode(ch)
        return self._cache[ch]


@functools.cache
def _writable(tokenizer_dir: str) -> Writable:
    return Writable.of_folder(tokenizer_dir)


DEFAULTS: dict[str, str] = {k: v[0] for k, v in CHOICES.items()}


def check_text_settings(lang: str, settings: Mapping[str, Any], where: str = "") -> dict[str, str]:
    """`settings` over the defaults, each value one of its `CHOICES` (else a `UserError` naming the key)."""
    from enhi.errors import UserError

    out = {**DEFAULTS, **dict(settings)}
    for key, value in out.items():
        if key not in CHOICES:
            raise UserError(f"{where}unknown key model.text.{lang}.{key}; valid keys: {', '.join(CHOICES)}")
        if value not in CHOICES[key]:
            raise UserError(f"{where}model.text.{lang}.{key}={value!r}; expected one of {', '.join(CHOICES[key])}")
    if out["digits"] == "verbalize" and lang != BASE_LANG and lang not in indic_number_langs():
        raise UserError(f"{where}model.text.{lang}.digits=verbalize: no number words for {lang!r} (known: en, "
                        f"{', '.join(indic_number_langs())}); set model.text.{lang}.digits=drop_utterance")
    return out


class TextNormalizer:
    """The training text of one language (module docstring); `normalizer(text)` gives a `Normalized`."""

    def __init__(self, lang: str, tokenizer: str | Path | Writable, settings: Mapping[str, Any] | None = None):
        """`tokenizer`: a NeMo tokenizer folder, or a `Writable`."""
        self.lang = lang
        self.settings = check_text_settings(lang, settings or {})
        self.writable = tokenizer if isinstance(tokenizer, Writable) else _writable(str(tokenizer))
        s = self.settings
        keep = {"auto": self.writable.marks(lang), "strip": frozenset(), "keep": None}[s["punctuation"]]
        self._keep_marks = keep  # None: every mark kept as written
        self._map: dict[str, str] = {}
        self._detached = None  # a kept closing mark left apart from its word ("great ”!" -> "great !")
        if keep is not None:
            self._map = {m: eq for m, eq in MARK_EQUIVALENTS.items() if eq in keep}
            closing = "".join(sorted(set(",.?!;:") & keep))
            if closing:
                self._closing = closing
                self._detached = re.compile(f" +([{re.escape(closing)}]+)(?= |$)")

    def __call__(self, text: str) -> Normalized:
        s = self.settings
        text = unicodedata.normalize("NFC", text)
        if s["joiners"] == "delete":
            text = _JOINERS_RE.sub("", text)
        tags = [t[1:-1].strip().lower() for t in TAG_RE.findall(text)]
        if any(t in UNINTELLIGIBLE_TAGS for t in tags) and s["unintelligible"] == "drop_utterance":
            return Normalized(None, "unintelligible")
        if s["tags"] == "strip" or s["unintelligible"] == "strip":
            text = TAG_RE.sub(lambda m: " " if s["tags"] == "strip" or m.group()[1:-1].strip().lower()
                               in UNINTELLIGIBLE_TAGS else m.group(), text)
        if any(c.isdigit() for c in text):
            if s["digits"] == "drop_utterance":
                return Normalized(None, "digits")
            if s["digits"] == "verbalize":
                text = verbalize_numbers(text, self.lang)
        if self._keep_marks is not None:
            text = "".join(self._mark(c) for c in text)
        if self.lang != BASE_LANG and s["latin"] != "keep" and LATIN_RE.search(text):
            if s["latin"] == "drop_utterance":
                return Normalized(None, "latin")
            text = " ".join(w for w in text.split() if not LATIN_RE.search(w))
        if s["case"] == "lower":
            text = text.lower()
        if not all(self.writable(c) for c in text):
            if s["unwritable"] == "drop_utterance" and any(not self.writable(c) and not _is_mark(c) for c in text):
                return Normalized(None, "unwritable")
            text = "".join(c for c in text if self.writable(c))
        text = " ".join(text.split())
        if self._detached is not None:
            text = self._detached.sub(r"\1", text).lstrip(self._closing + " ")
        return Normalized(text) if text else Normalized(None, "empty")

    def _mark(self, c: str) -> str:
        if not _is_mark(c) or c in self._keep_marks:
            return c
        if c in self._map:
            return self._map[c]
        return "" if MARK_EQUIVALENTS.get(c, c) == "'" else " "  # an apostrophe joins what it stood between


def normalizers(text_cfg: Mapping[str, Any] | None, langs: set[str] | list[str], tokenizer: str | Path | Writable
                ) -> dict[str, TextNormalizer]:
    """One normalizer per language, from the YAML's `model.text` (a language it does not name gets the defaults)."""
    text_cfg = dict(text_cfg or {})
    return {lang: TextNormalizer(lang, tokenizer, text_cfg.get(lang)) for lang in sorted(langs)}


def normalized_entries(entries: Sequence[ManifestEntry], norm: TextNormalizer) -> tuple[list[ManifestEntry], Counter]:
    """Manifest entries with training text (`raw_text` keeps the manifest's), the dropped ones left out and
    counted by reason."""
    kept, dropped = [], Counter()
    for e in entries:
        r = norm(e.text)
        if r.text is None:
            dropped[r.dropped] += 1
        else:
            kept.append(dataclasses.replace(e, text=r.text, raw_text=e.text))
    return kept, dropped


class CutText:
    """Training text for NeMo's Lhotse loader: maps a cut's supervisions through its language's normalizer (the
    `lang` tag each training source carries) and marks a dropped one for `kept_cut`. Pickles as its settings
    (dataloader workers build their own normalizers)."""

    def __init__(self, text_cfg: Mapping[str, Any], tokenizer_dir: str | Path):
        self.text_cfg = {k: dict(v) for k, v in dict(text_cfg or {}).items()}
        self.tokenizer_dir = str(tokenizer_dir)
        self._norms: dict[str, TextNormalizer] = {}

    def __getstate__(self) -> dict:
        return {"text_cfg": self.text_cfg, "tokenizer_dir": self.tokenizer_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["text_cfg"], state["tokenizer_dir"])

    def normalizer(self, lang: str) -> TextNormalizer:
        if lang not in self._norms:
            self._norms[lang] = TextNormalizer(lang, self.tokenizer_dir, self.text_cfg.get(lang))
        return self._norms[lang]

    def __call__(self, cut):
        from lhotse.utils import fastcopy

        custom = dict(cut.custom or {})
        supervisions = []
        for s in cut.supervisions:
            r = self.normalizer(custom.get("lang") or s.language or BASE_LANG)(s.text or "")
            if r.text is None:
                return fastcopy(cut, custom={**custom, "text_dropped": r.dropped})
            supervisions.append(fastcopy(s, text=r.text))
        return fastcopy(cut, supervisions=supervisions)


def kept_cut(cut) -> bool:
    """False for a cut whose transcript `CutText` dropped."""
    return not (cut.custom or {}).get("text_dropped")


def settings_record(norms: Mapping[str, TextNormalizer]) -> dict[str, dict[str, Any]]:
    """What the run folder's record keeps: each language's settings, with `auto`'s marks spelled out."""
    out = {}
    for lang, n in norms.items():
        marks = "all" if n._keep_marks is None else "".join(sorted(n._keep_marks))
        out[lang] = {**n.settings, "marks_kept": marks}
    return out


def text_settings_from_yaml(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], str]:
    """(`model.text`, `model.tokenizer.dir`) of a run YAML with `key=value` overrides, read without the whole
    config's checks (the run scripts make those against enhi/config.py)."""
    from omegaconf import OmegaConf

    from enhi.errors import UserError

    if not Path(path).is_file():
        raise UserError(f"{path}: config file not found; pass the run's YAML (its model.text applies)")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"argument {bad[0]!r}: expected key=value, e.g. model.text.hi.digits=drop_utterance")
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
    text = OmegaConf.to_container(OmegaConf.select(cfg, "model.text", default=None) or OmegaConf.create())
    return text, str(OmegaConf.select(cfg, "model.tokenizer.dir", default="en1024_hi256"))


def main(argv: list[str] | None = None) -> None:
    """`python -m enhi.text --lang hi`: stdin lines -> normalized lines (an empty line for a dropped utterance)."""
    p = argparse.ArgumentParser(prog="python -m enhi.text", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang", required=True, help="the language's key under model.text (en, hi, ...)")
    p.add_argument("--config", default="ft_110M_enhi.yaml", help="the YAML whose model.text and tokenizer apply")
    p.add_argument("--why", action="store_true", help="write `<dropped: reason>` instead of an empty line")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. model.text.hi.digits=drop_utterance")
    args = p.parse_args(argv)
    text, tokenizer = text_settings_from_yaml(args.config, args.overrides)
    norm = normalizers(text, {args.lang}, tokenizer)[args.lang]
    for line in sys.stdin:
        r = norm(line.rstrip("\n"))
        sys.stdout.write((r.text if r.text is not None else (f"<dropped: {r.dropped}>" if args.why else "")) + "\n")


if __name__ == "__main__":
    from enhi.errors import exit_on_user_error

    exit_on_user_error(main)()
