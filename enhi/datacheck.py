"""Pre-flight check of every manifest in a run config, summarized per language, before any model is loaded.

Errors (training would crash or silently lose data) stop the run with one line naming the file and line:
malformed lines, audio files missing or unreadable, multi-channel audio in training data (NeMo's Lhotse loader
collates a batch of only multi-channel cuts as (batch, channels, time), which the model cannot take), and a
training manifest left with no utterance inside the duration limits.
Warnings are printed in the summary and training goes on:
- sample rates other than 16 kHz: resampled on load (by NeMo's Lhotse loader for training, by
  `enhi.manifest.load_audio` for validation and test), which costs time at every epoch;
- multi-channel audio in validation/test sets: averaged to mono by `load_audio`;
- durations outside `train_ds.min_duration`/`max_duration`: those utterances are dropped from training;
- a manifest `duration` that disagrees with the file: the loader uses the file's own length;
- empty transcripts, and characters the tokenizer cannot represent (they would become `<unk>`).
Then the text, per manifest and language, as written and as the run's `model.text` settings make it (enhi/text.py):
every character the tokenizer cannot write with its count, tags, digits by script, joiners, the Latin-word rate
of non-English sets, how many transcripts the normalizer changes and drops (by reason), and how many still hold
`<unk>` after it (a warning: those settings train `<unk>`).
Only audio headers are read (sample rate, channels, length), so the check is fast on large sets.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from enhi.config import train_manifests
from enhi.errors import UserError
from enhi.manifest import SAMPLE_RATE, ManifestEntry, read_manifest
from enhi.text import BASE_LANG, JOINERS, LATIN_RE, TAG_RE, TextNormalizer

DURATION_TOLERANCE = 0.1  # seconds; manifest durations are often rounded


@dataclass
class Issue:
    """How many lines of a manifest share one problem, and the first of them (file:line and detail)."""

    count: int = 0
    first: str = ""

    def add(self, where: str) -> None:
        self.count += 1
        if self.count == 1:
            self.first = where


@dataclass
class ManifestReport:
    path: str
    split: str  # train, validation or test
    lang: str
    n: int = 0
    seconds: float = 0.0
    min_s: float = float("inf")
    max_s: float = 0.0
    chars: int = 0
    unk_chars: Counter = field(default_factory=Counter)
    sample_rates: Counter = field(default_factory=Counter)
    issues: dict[str, Issue] = field(default_factory=dict)
    # the text as written, and as the normalizer makes it
    tags: Counter = field(default_factory=Counter)
    digits: Counter = field(default_factory=Counter)  # by script: ASCII, DEVANAGARI, ...
    joiners: int = 0  # utterances holding a ZWJ, ZWNJ, BOM, ...
    words: int = 0
    latin_words: int = 0
    changed: int = 0
    dropped: Counter = field(default_factory=Counter)  # by reason (enhi.text)
    unk_after: int = 0  # utterances that still hold a character the tokenizer cannot write

    def issue(self, kind: str, where: str) -> None:
        self.issues.setdefault(kind, Issue()).add(where)

    def count(self, kind: str) -> int:
        return self.issues[kind].count if kind in self.issues else 0


class UnkChars:
    """Which characters a SentencePiece model cannot represent (each character is encoded once, then cached)."""

    def __init__(self, tokenizer_dir: str | Path | None):
        self.sp = None
        if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer.model").is_file():
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_file=str(Path(tokenizer_dir) / "tokenizer.model"))
        self._cache: dict[str, bool] = {}

    def __call__(self, ch: str) -> bool:
        if self.sp is None:
            return False
        if ch not in self._cache:
            self._cache[ch] = self.sp.unk_id() in self.sp.encode(ch)
        return self._cache[ch]


def _audio_info(path: str) -> tuple[int, int, float] | str:
    """(sample rate, channels, seconds) from the header, or the reason it cannot be read."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises several types for unreadable files
        return " ".join(str(e).split()) or type(e).__name__
    return info.samplerate, info.channels, info.frames / info.samplerate


def inspect_manifest(
    path: str | Path,
    split: str,
    lang: str,
    unk: UnkChars,
    min_duration: float | None = None,
    max_duration: float | None = None,
    workers: int = 8,
    norm: TextNormalizer | None = None,
) -> ManifestReport:
    """Read one manifest strictly (malformed lines raise `UserError`) and every audio header; count problems."""
    entries = read_manifest(path, check_audio=False)
    rep = ManifestReport(str(path), split, lang)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # header reads are I/O-bound
        infos = list(pool.map(_audio_info, [e.audio_filepath for e in entries]))
    for n, (e, info) in enumerate(zip(entries, infos, strict=True), 1):
        where = f"{path}:{n}"
        if isinstance(info, str):
            kind = "missing" if not Path(e.audio_filepath).is_file() else "unreadable"
            rep.issue(kind, f"{where}: audio file {e.audio_filepath}" + ("" if kind == "missing" else f" ({info})"))
            continue
        sr, ch, seconds = info
        if ch != 1:
            rep.issue("multichannel", f"{where}: audio file {e.audio_filepath} has {ch} channels")
        if abs(seconds - e.duration) > DURATION_TOLERANCE:
            rep.issue("duration_field", f"{where}: duration {e.duration:g} s, file {seconds:.2f} s")
        _count(rep, e, where, seconds, sr, unk, min_duration, max_duration, norm)
    return rep


def _count(rep: ManifestReport, e, where: str, seconds: float, sample_rate: int | None, unk: UnkChars,
           min_duration: float | None, max_duration: float | None, norm: TextNormalizer | None = None) -> None:
    """Add one utterance to a report: length, sample rate (None: not known without decoding), limits, text."""
    rep.n += 1
    rep.seconds += seconds
    rep.min_s, rep.max_s = min(rep.min_s, seconds), max(rep.max_s, seconds)
    if sample_rate is not None:
        rep.sample_rates[sample_rate] += 1
        if sample_rate != SAMPLE_RATE:
            rep.issue("resampled", f"{where}: {sample_rate} Hz")
    if min_duration is not None and seconds < min_duration:
        rep.issue("too_short", f"{where}: {seconds:.2f} s")
    if max_duration is not None and seconds > max_duration:
        rep.issue("too_long", f"{where}: {seconds:.2f} s")
    _check_text(rep, e, where, unk, norm)


def _check_text(rep: ManifestReport, e: ManifestEntry, where: str, unk: UnkChars,
                norm: TextNormalizer | None = None) -> None:
    text = unicodedata.normalize("NFC", e.text)
    if not text.strip():
        rep.issue("empty_text", where)
        return
    chars = [c for c in text if not c.isspace()]
    rep.chars += len(chars)
    bad = [c for c in chars if unk(c)]
    if bad:
        rep.unk_chars.update(bad)
        rep.issue("unk", f"{where}: {bad[0]!r}")
    rep.tags.update(TAG_RE.findall(text))
    rep.digits.update(unicodedata.name(c, "?").split()[0].replace("DIGIT", "ASCII") for c in text if c.isdigit())
    rep.joiners += any(c in JOINERS for c in text)
    if rep.lang != BASE_LANG:
        words = TAG_RE.sub(" ", text).split()  # a tag's word is not a Latin word of the language
        rep.words += len(words)
        rep.latin_words += sum(bool(LATIN_RE.search(w)) for w in words)
    if norm is None:
        return
    r = norm(e.text)
    if r.text is None:
        rep.dropped[r.dropped] += 1
        rep.issue(f"dropped_{r.dropped}", f"{where}: {e.text[:60]!r}")
        return
    rep.changed += r.text != e.text
    if any(unk(c) for c in r.text if not c.isspace()):
        rep.unk_after += 1
        rep.issue("unk_after", f"{where}: {r.text[:60]!r}")


def inspect_sharded(spec, unk: UnkChars, min_duration: float, max_duration: float,
                    norm: TextNormalizer | None = None) -> ManifestReport:
    """A NeMo tarred or Lhotse Shar source from its metadata: utterances, durations and transcripts from the
    manifests or cut records, tars scanned header by header (`enhi.shards`); no audio is decoded."""
    from enhi.shards import source_entries

    rep = ManifestReport(f"{spec.path} ({spec.type})", "train", spec.lang)
    for e in source_entries(spec):  # Shar records carry the sample rate, NeMo tarred manifests do not
        _count(rep, e, e.where, e.duration, e.sample_rate, unk, min_duration, max_duration, norm)
    return rep


def _eval_manifests(cfg: DictConfig) -> Iterable[tuple[str, str, str]]:
    for split, spec in (("validation", cfg.model.validation_ds), ("test", cfg.model.test_ds)):
        for s in spec.sets:
            yield split, str(s.path), s.lang


def inspect_run(cfg: DictConfig) -> list[ManifestReport]:
    """Inspect every source of a run config (training ones against the duration limits)."""
    unk = UnkChars(cfg.model.tokenizer.dir)
    t = cfg.model.train_ds
    sources = train_manifests(cfg)  # refuses an empty list
    evals = list(_eval_manifests(cfg))
    norms = normalizers_or_none(cfg, {s.lang for s in sources} | {lang for _, _, lang in evals})
    train = [
        inspect_manifest(s.path, "train", s.lang, unk, t.min_duration, t.max_duration, norm=norms.get(s.lang))
        if s.type == "nemo" else inspect_sharded(s, unk, t.min_duration, t.max_duration, norms.get(s.lang))
        for s in sources
    ]
    return train + [inspect_manifest(path, split, lang, unk, norm=norms.get(lang)) for split, path, lang in evals]


def normalizers_or_none(cfg: DictConfig, langs: set[str]) -> dict[str, TextNormalizer]:
    """The run's text normalizers; none when the tokenizer folder is not there yet (the summary then reports the
    text as written only)."""
    from enhi.text import normalizers

    if not (Path(cfg.model.tokenizer.dir) / "tokenizer.model").is_file():
        return {}
    return normalizers(cfg.model.text, langs, cfg.model.tokenizer.dir)


# Problems that stop the run, each with the fix the one-line message gives.
ERRORS = {
    "missing": "not found; fix audio_filepath or remove the line",
    "unreadable": "cannot be read; convert it to WAV or FLAC or remove the line",
}
TRAIN_ERRORS = {
    "multichannel": "in training data; downmix to mono first (e.g. `sox in.wav -c 1 out.wav`)",
}
WARNINGS = {
    "resampled": f"not {SAMPLE_RATE} Hz: resampled on load at every epoch (convert once to save the time)",
    "multichannel": "multi-channel: averaged to mono on load",
    "duration_field": "manifest duration differs from the file: the file's length is used",
    "too_short": "shorter than train_ds.min_duration: dropped from training",
    "too_long": "longer than train_ds.max_duration: dropped from training",
    "empty_text": "empty transcript",
    "unk": "transcripts as written with characters the tokenizer cannot write",
    "unk_after": "transcripts that still hold such characters after model.text's settings (trained as <unk>; "
                 "see `python -m enhi.text --lang LANG --why`)",
}


def first_error(reports: list[ManifestReport]) -> str | None:
    """The one-line message for the first problem that would break training, or None."""
    for r in reports:
        errors = {**ERRORS, **(TRAIN_ERRORS if r.split == "train" else {})}
        for kind, fix in errors.items():
            if kind in r.issues:
                i = r.issues[kind]
                more = f" (and {i.count - 1} more line(s) in this manifest)" if i.count > 1 else ""
                return f"{i.first} {fix}{more}"
        if r.split == "train" and r.n and sum(r.dropped.values()) >= r.n:
            return (f"{r.path}: model.text.{r.lang} drops every transcript "
                    f"({', '.join(f'{k} {n}' for k, n in r.dropped.most_common())}); change those settings")
        if r.split == "train" and r.n and r.count("too_short") + r.count("too_long") >= r.n:
            return (
                f"{r.path}: every utterance is outside train_ds.min_duration..max_duration "
                f"({r.min_s:.2f}-{r.max_s:.2f} s); widen the limits or fix the durations"
            )
    return None


def format_summary(reports: list[ManifestReport]) -> str:
    """Per language and split: utterances, hours, duration range, sample rates, <unk> rate; then warnings."""
    rows = ["| split | lang | utterances | hours | seconds (min-max) | sample rates | <unk> chars | manifest |",
            "|---|---|---:|---:|---|---|---:|---|"]
    for r in reports:
        rates = ", ".join(f"{sr // 1000 if sr % 1000 == 0 else sr / 1000:g}k×{c}" for sr, c in sorted(r.sample_rates.items()))
        unk = sum(r.unk_chars.values())
        span = f"{r.min_s:.2f}-{r.max_s:.2f}" if r.n else "-"
        rows.append(
            f"| {r.split} | {r.lang} | {r.n} | {r.seconds / 3600:.3f} | {span} | {rates or '-'} | "
            f"{unk / max(r.chars, 1):.2%} | {Path(r.path).name} |"
        )
    notes = []
    for r in reports:
        for kind, text in WARNINGS.items():
            if kind in r.issues and not (kind == "multichannel" and r.split == "train"):
                i = r.issues[kind]
                line = f"- {r.split}/{r.lang}: {i.count} × {text}; first {i.first}"
                if kind == "unk":
                    line += "; all: " + ", ".join(f"{c!r}×{n}" for c, n in r.unk_chars.most_common())
                notes.append(line)
        for kind, i in r.issues.items():
            if kind.startswith("dropped_"):
                notes.append(f"- {r.split}/{r.lang}: {i.count} × dropped by model.text.{r.lang} "
                             f"({kind.removeprefix('dropped_')}); first {i.first}")
    return "\n".join(rows + ["", *text_summary(reports)] + (["", "warnings:", *notes] if notes else ["", "no warnings"]))


def text_summary(reports: list[ManifestReport]) -> list[str]:
    """Per manifest: the text as written (tags, digits by script, joiners, Latin words) and what the run's
    normalizer does to it (changed, dropped by reason)."""
    rows = ["text (model.text; enhi/text.py):",
            "| split | lang | changed | dropped | tags | digits | joiners | Latin words | manifest |",
            "|---|---|---:|---|---|---|---:|---:|---|"]
    for r in reports:
        tags = ", ".join(f"{t}×{n}" for t, n in r.tags.most_common(6)) + (" …" if len(r.tags) > 6 else "")
        digits = ", ".join(f"{s}×{n}" for s, n in r.digits.most_common())
        dropped = f"{sum(r.dropped.values())}" + (
            " (" + ", ".join(f"{k} {n}" for k, n in r.dropped.most_common()) + ")" if r.dropped else "")
        latin = f"{r.latin_words / r.words:.1%}" if r.words else "-"
        rows.append(f"| {r.split} | {r.lang} | {r.changed} | {dropped} | {tags or '-'} | {digits or '-'} | "
                    f"{r.joiners} | {latin} | {Path(r.path).name} |")
    return rows


def check_data(cfg: DictConfig, verbose: bool = True) -> list[ManifestReport]:
    """Inspect every manifest, print the summary, and raise `UserError` on a problem that would break training."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    reports = inspect_run(cfg)
    if verbose and rank_zero_only.rank == 0:  # under DDP every rank checks, one prints
        print("[data check]\n" + format_summary(reports), flush=True)
    error = first_error(reports)
    if error:
        raise UserError(error)
    return reports
