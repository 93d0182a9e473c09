"""Merge a pretrained model's English SentencePiece BPE tokenizer with a new-language one, keeping every English id.

The merged model is the base model proto (pieces, scores, types, normalizer, trainer spec) with the new
language's pieces appended after it. Ids `0 .. V_base-1` are therefore the base pieces, which is what lets the
weight transplant carry every English row across unchanged.

Why English segmentation cannot change (and why the checks below are a proof, not a sample):

- SentencePiece BPE encodes by repeatedly merging the adjacent pair whose concatenation is the highest-scoring
  piece, leftmost first on ties (`bpe_model.cc`). The score rule (`merge_models`) puts every new piece below
  every base piece, so on any text the merged model first performs exactly the base model's merges.
- Every appended piece contains a character the base does not have (`conflicting_pieces` refuses inputs
  where this fails). So a new piece never forms inside text the base covers, and the merges after the base
  phase only grow tokens that contain such a character: base tokens change only where they touch one.
- Symmetrically, every base piece that can form by merging contains a character the new tokenizer does not
  have, so on new-language text no base merge fires and the new pieces merge in their own order.

`verify_merge` re-checks all of this on every run (structure, scores, alphabets, then encodings of built-in
English, Hindi and mixed text, every piece of both models and the new-language text), and
`verify_nemo_folder` loads the written folder in NeMo; a failed check is a `UserError`, so nothing is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import sentencepiece as spm
from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from enhi.atomic import atomic_dir
from enhi.errors import UserError

ModelProto = spm_pb2.ModelProto
_PIECE = ModelProto.SentencePiece
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (
    _PIECE.NORMAL,
    _PIECE.UNKNOWN,
    _PIECE.CONTROL,
    _PIECE.USER_DEFINED,
    _PIECE.UNUSED,
    _PIECE.BYTE,
)
# Piece types that take part in encoding text (the others are ids only: unk, control, byte fallback).
TEXT_TYPES = (NORMAL, USER_DEFINED, UNUSED)

DEFAULT_NEW_VOCAB_SIZE = 256
REPORT_NAME = "merge_report.json"
FOLDER_FILES = ("tokenizer.model", "tokenizer.vocab", "vocab.txt")
# NeMo's create_spt_model leaves these out of vocab.txt.
NEMO_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>")

ENGLISH_SAMPLE = (
    "Hello, World! This is a test.",
    "The quick brown fox jumps over the lazy dog.",
    "NASA launched 3 rockets in 2024, didn't it?",
    "I can't believe it's already 10:30 PM.",
    "Dr. Smith's patients, e.g. John O'Neil, paid $1,250.00.",
    "UPPER CASE, lower case, and MiXeD CaSe words.",
    "Is it 42? Yes! It's 3.14159... roughly.",
    "well, um, you know, I think so",
    'She said: "Don\'t go there!" (and left).',
    "Email me at test@example.com or call +1-555-0100.",
    "Parakeet and FastConformer models transcribe speech.",
    "  extra   spaces   around   words  ",
    "Ｆｕｌｌｗｉｄｔｈ letters and ligatures like ﬁne are normalized.",
)
# Used when the new tokenizer covers Devanagari; for another script these are simply text it does not know.
HINDI_SAMPLE = (
    "नमस्ते, आप कैसे हैं?",
    "भारत एक विशाल देश है।",
    "मैं कल सुबह दिल्ली जाऊँगा",
    "क्या आपने खाना खा लिया",
    "ज़िंदगी में ख़ुशी ज़रूरी है",
    "श्री राम ने कहा कि हम साथ चलेंगे",
    "हिंदी और अंग्रेज़ी दोनों भाषाएँ",
    "ऋषि ऑफिस में ॐ लिखते हैं",
    "बच्चे स्कूल जा रहे हैं",
    "पंद्रह अगस्त को स्वतंत्रता दिवस मनाया जाता है",
)
MIXED_SAMPLE = (
    "मैं office जा रहा हूँ, okay?",
    "Hello दोस्तों, how are you?",
    "यह phone बहुत अच्छा है",
    "Parakeetहिंदी",
    "COVID के बाद सब कुछ बदल गया",
    "the meeting कल है at ten",
    "हाँ! Yes, I'm ready.",
    "abcकखग xyz the",
)
SYNTHETIC_TEXTS_PER_MODEL = 300  # random piece sequences per model, on top of every piece on its own
SYNTHETIC_SEED = 1234


# ----------------------------------------------------------------------------------------------- inputs


@dataclass
class Tokenizer:
    """A resolved input: the model proto, where it came from, and (when trained here) the text it was trained on."""

    proto: ModelProto
    source: str
    trained_from: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)


def parse_model_bytes(data: bytes, source: str) -> ModelProto:
    """A validated SentencePiece ModelProto from bytes; `UserError` if they are not a loadable model."""
    proto = ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        proto = None
    # Arbitrary bytes sometimes parse as an (empty) proto, so also require pieces and a clean load.
    if proto is None or len(proto.pieces) == 0:
        raise UserError(f"{source}: not a SentencePiece model (pass a tokenizer .model file)")
    try:
        spm.SentencePieceProcessor(model_proto=data)
    except (RuntimeError, OSError) as e:
        raise UserError(f"{source}: not a loadable SentencePiece model ({e})") from None
    return proto


def load_model_file(path: str | os.PathLike) -> ModelProto:
    """A SentencePiece `.model` file as a validated proto."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return parse_model_bytes(path.read_bytes(), str(path))


def _model_from_folder(folder: Path) -> ModelProto:
    """A NeMo tokenizer folder (`tokenizer.model`) or an extracted `.nemo` folder (`model_config.yaml`)."""
    if (folder / "tokenizer.model").is_file():
        return load_model_file(folder / "tokenizer.model")
    if (folder / "model_config.yaml").is_file():
        files = {p.name: p for p in folder.rglob("*") if p.is_file()}
        name = _tokenizer_member_name((folder / "model_config.yaml").read_text(encoding="utf-8"), list(files), str(folder))
        return parse_model_bytes(files[name].read_bytes(), f"{folder}/{name}")
    if (folder / "vocab.txt").is_file():
        raise UserError(
            f"{folder}: a WordPiece tokenizer folder (vocab.txt, no tokenizer.model); "
            "only SentencePiece BPE tokenizers can be merged"
        )
    raise UserError(f"{folder}: no tokenizer.model in this folder; pass a SentencePiece .model or a NeMo tokenizer folder")


def _tokenizer_member_name(config_yaml: str, names: Sequence[str], source: str) -> str:
    """The file name of the SentencePiece model a NeMo checkpoint's config points at."""
    import yaml

    try:
        cfg = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        cfg = {}
    tok = cfg.get("tokenizer") or {}
    if "langs" in tok:
        raise UserError(f"{source}: has an aggregate (multi-tokenizer) vocabulary; pass one tokenizer's .model instead")
    if str(tok.get("type", "bpe")).lower() == "wpe":
        raise UserError(f"{source}: uses a WordPiece tokenizer; only SentencePiece BPE tokenizers can be merged")
    basenames = {os.path.basename(n): n for n in names}
    wanted = str(tok.get("model_path") or "")
    wanted = os.path.basename(wanted.removeprefix("nemo:"))
    if wanted in basenames:
        return os.path.basename(basenames[wanted])
    candidates = sorted(b for b in basenames if b.endswith("tokenizer.model"))
    if len(candidates) == 1:
        return candidates[0]
    raise UserError(f"{source}: cannot find the tokenizer .model in this checkpoint; extract it and pass the .model")


def _model_from_nemo(path: Path) -> ModelProto:
    """The tokenizer inside a `.nemo` checkpoint (a tar archive), read without restoring the model."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            if "model_config.yaml" not in members:
                raise UserError(f"{path}: not a NeMo checkpoint (no model_config.yaml inside)")
            config = tar.extractfile(members["model_config.yaml"]).read().decode("utf-8")
            name = _tokenizer_member_name(config, list(members), str(path))
            data = tar.extractfile(members[name]).read()
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{path}: not a readable .nemo checkpoint ({e})") from None
    return parse_model_bytes(data, f"{path}:{name}")


def _looks_like_pretrained_name(spec: str) -> bool:
    # "nvidia/parakeet-tdt_ctc-110m" (Hugging Face) or "stt_en_fastconformer_..." (NGC); not a file name.
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", spec)) and Path(spec).suffix not in (
        ".model",
        ".nemo",
        ".json",
        ".jsonl",
        ".txt",
    )


def _model_from_pretrained(name: str) -> ModelProto:
    """Fetch a pretrained checkpoint through NeMo (its cache first) and read its tokenizer."""
    try:
        from nemo.collections.asr.models import ASRModel

        location = ASRModel.from_pretrained(name, return_model_file=True)
    except Exception as e:  # noqa: BLE001 - any failure to fetch (offline, unknown name) gets the same advice
        raise UserError(
            f"{name}: not a local file or folder, and fetching it as a pretrained NeMo model failed "
            f"({type(e).__name__}); when offline, pass the checkpoint's .nemo file or its tokenizer .model instead"
        ) from None
    location = Path(location)
    return _model_from_folder(location) if location.is_dir() else _model_from_nemo(location)


def resolve_base(spec: str) -> Tokenizer:
    """The base tokenizer from a `.model`, a tokenizer folder, a `.nemo` file or a pretrained model name."""
    path = Path(spec)
    if path.is_dir():
        proto = _model_from_folder(path)
    elif path.is_file():
        proto = _model_from_nemo(path) if path.suffix == ".nemo" else load_model_file(path)
    elif _looks_like_pretrained_name(spec):
        proto = _model_from_pretrained(spec)
    else:
        raise UserError(f"{spec}: no such file or folder")
    return Tokenizer(proto=proto, source=spec)


def _read_lines(path: str | os.PathLike) -> list[str]:
    # Split on newlines only: str.splitlines() would also split inside JSON strings holding U+2028 and kin.
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (nor a SentencePiece .model)") from None
    return [line.rstrip("\r") for line in text.split("\n")]


def read_manifest_texts(path: str | os.PathLike) -> list[str]:
    """The `text` of every line of a NeMo manifest (JSON lines); blank lines are skipped."""
    texts = []
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not a JSON line ({e.msg}); a manifest has one JSON object per line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            raise UserError(f'{path}:{lineno}: no "text" string in this manifest line')
        texts.append(entry["text"])
    if not any(t.strip() for t in texts):
        raise UserError(f"{path}: the manifest is empty (no line with a non-empty text)")
    return texts


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of a UTF-8 text file."""
    texts = [line for line in _read_lines(path) if line.strip()]
    if not texts:
        raise UserError(f"{path}: the text file is empty")
    return texts


def _new_input_kind(path: Path) -> str:
    """'model', 'manifest' or 'text' for a --new file, by suffix and then by content."""
    if path.suffix == ".model":
        return "model"
    if path.suffix in (".json", ".jsonl"):
        return "manifest"
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "model"  # binary: a SentencePiece model or nothing (parse_model_bytes says which)
    first = next((line for line in text.splitlines() if line.strip()), "")
    return "manifest" if first.lstrip().startswith("{") else "text"


def resolve_new(spec: str, base: ModelProto, vocab_size: int | None = None) -> Tokenizer:
    """The new-language tokenizer: a `.model` or tokenizer folder, or one trained here from a manifest or text."""
    path = Path(spec)
    if not path.exists():
        raise UserError(f"{spec}: no such file or folder")
    kind = "model" if path.is_dir() else _new_input_kind(path)
    if kind == "model":
        if vocab_size is not None:
            raise UserError("--new-vocab-size applies only when --new is a manifest or a text file, not a tokenizer")
        proto = _model_from_folder(path) if path.is_dir() else load_model_file(path)
        return Tokenizer(proto=proto, source=spec)
    texts = read_manifest_texts(path) if kind == "manifest" else read_text_lines(path)
    size = DEFAULT_NEW_VOCAB_SIZE if vocab_size is None else vocab_size
    proto = train_new_tokenizer(texts, base, size, source=spec)
    return Tokenizer(proto=proto, source=spec, trained_from={"kind": kind, "lines": len(texts), "vocab_size": size}, texts=texts)


# --------------------------------------------------------------------------------------------- training


def alphabet(proto: ModelProto) -> frozenset[str]:
    """Every character that appears in a piece that can match text."""
    return frozenset(ch for p in proto.pieces if p.type in TEXT_TYPES for ch in p.piece)


def _processor(proto: ModelProto) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def training_text(texts: Iterable[str], base: ModelProto) -> list[str]:
    """New-language text with the characters the base already has blanked out, and tags, joiners, punctuation,
    symbols and digits too.

    Leaving them to the base is what makes every trained piece contain a new character, the condition under
    which English ids provably stay the same (see the module docstring). Text is normalized with the base's
    normalizer first, so e.g. a full-width Latin letter counts as the base letter it becomes.
    """
    from enhi.text import JOINERS, TAG_RE

    sp = _processor(base)
    known = alphabet(base) | {"▁"}
    lines = []
    for text in texts:
        # Transcripts as corpora write them: tags, joiners, punctuation, symbols and digits are not the language's
        # letters (enhi.text verbalizes or removes them before training), so no piece is spent on them.
        text = TAG_RE.sub(" ", "".join(ch for ch in text if ch not in JOINERS))
        normalized = sp.normalize(text)
        masked = "".join(" " if ch in known or unicodedata.category(ch)[0] in "PSN" else ch for ch in normalized)
        if masked.strip():
            lines.append(" ".join(masked.split()))
    return lines


def train_new_tokenizer(texts: Sequence[str], base: ModelProto, vocab_size: int, source: str = "text") -> ModelProto:
    """Train a BPE tokenizer of `vocab_size` pieces on new-language text, with exactly the base's normalizer.

    The text is normalized by the base model itself (`training_text`), SentencePiece trains on it without
    normalizing again ("identity"), and the trained model gets the base's normalizer spec. Training with the
    normalizer's name instead would not do: SentencePiece versions ship different nmt_nfkc tables (the
    Parakeet tokenizer's differs from the one in today's sentencepiece), and the merge needs them identical.
    """
    norm = base.normalizer_spec
    if base.trainer_spec.model_type != spm_pb2.TrainerSpec.BPE:
        raise UserError("the base tokenizer is not BPE; only BPE tokenizers can be merged")
    lines = training_text(texts, base)
    if not lines:
        raise UserError(f"{source}: has no characters the base tokenizer does not already cover; nothing to add")
    chars = {ch for line in lines for ch in line if not ch.isspace()}
    # SentencePiece needs one piece per character, plus the whitespace marker and <unk>.
    needed = len(chars) + 2
    if vocab_size < needed:
        raise UserError(
            f"--new-vocab-size {vocab_size} is smaller than the {len(chars)} characters of the new-language text "
            f"(plus ▁ and <unk>): use at least {needed}"
        )
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=out,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=1.0,
            normalization_rule_name="identity",
            add_dummy_prefix=norm.add_dummy_prefix,
            remove_extra_whitespaces=norm.remove_extra_whitespaces,
            treat_whitespace_as_suffix=base.trainer_spec.treat_whitespace_as_suffix,
            byte_fallback=base.trainer_spec.byte_fallback,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            # Deterministic: all sentences, in order, one thread.
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=1,
            max_sentence_length=1 << 20,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "Vocabulary size too high" in msg:
            raise UserError(
                f"--new-vocab-size {vocab_size} is more than BPE can learn from {source} ({msg.split('] ')[-1]})"
            ) from None
        raise UserError(f"{source}: SentencePiece training failed: {msg}") from None
    proto = parse_model_bytes(out.getvalue(), f"tokenizer trained on {source}")
    for spec in ("normalizer_spec", "denormalizer_spec"):
        proto.ClearField(spec)
        if base.HasField(spec):
            getattr(proto, spec).CopyFrom(getattr(base, spec))
    return proto


# ------------------------------------------------------------------------------------------------ merge


@dataclass
class MergeResult:
    proto: ModelProto
    duplicates: list[dict[str, Any]]  # new pieces already in the base: dropped, the base id stands
    dropped_specials: list[dict[str, Any]]  # the new model's own unk/bos/eos/pad: the base's specials stand
    score_offset: float
    new_ids: list[int]  # ids, in the new model, of the pieces appended (in order)


def _type_name(t: int) -> str:
    return _PIECE.Type.Name(t)


def _special_ids(proto: ModelProto) -> dict[str, int]:
    sp = _processor(proto)
    return {"unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id()}


def conflicting_pieces(base: ModelProto, new: ModelProto) -> tuple[list[str], list[str]]:
    """Pieces that would let one language's text be segmented differently in the merged model.

    Returns (new pieces spelled only with base characters, base pieces spelled only with new characters).
    The first could form inside English text; the second could form inside new-language text and, scoring
    above all new pieces, take characters the new model would have merged otherwise. Single characters never
    form by merging, so only longer pieces count, except user-defined ones, which are matched whole.
    """
    base_chars, new_chars = alphabet(base), alphabet(new)
    base_types = {p.piece: p.type for p in base.pieces}
    new_types = {p.piece: p.type for p in new.pieces}
    risky_new = [p.piece for p in new.pieces if p.type in TEXT_TYPES and p.piece not in base_types and set(p.piece) <= base_chars]
    risky_base = [
        p.piece
        for p in base.pieces
        if p.type in TEXT_TYPES
        and set(p.piece) <= new_chars
        and (len(p.piece) > 1 or p.type == USER_DEFINED)
        and not (p.type == USER_DEFINED and new_types.get(p.piece) == USER_DEFINED)
    ]
    return risky_new, risky_base


def _examples(pieces: Sequence[str], n: int = 8) -> str:
    return ", ".join(repr(p) for p in pieces[:n]) + (", ..." if len(pieces) > n else "")


def check_compatible(base: ModelProto, new: ModelProto) -> None:
    """Refuse inputs the merge cannot make safe: other model types, other normalizers, conflicting pieces."""
    bt, nt = base.trainer_spec, new.trainer_spec
    if bt.model_type != spm_pb2.TrainerSpec.BPE or nt.model_type != spm_pb2.TrainerSpec.BPE:
        raise UserError(
            f"the base tokenizer is {spm_pb2.TrainerSpec.ModelType.Name(bt.model_type)} and the new one "
            f"{spm_pb2.TrainerSpec.ModelType.Name(nt.model_type)}: both must be BPE (Parakeet's are)"
        )
    for spec in ("normalizer_spec", "denormalizer_spec"):
        b, n = _spec_values(getattr(base, spec)), _spec_values(getattr(new, spec))
        if b != n:
            same_name = b["name"] == n["name"] and b["precompiled_charsmap"] != n["precompiled_charsmap"]
            detail = (
                f"both {b['name']!r}, but with different character tables (e.g. from different SentencePiece versions)"
                if same_name
                else f"base {b['name']!r}, new {n['name']!r}" + (" or other settings" if b["name"] == n["name"] else "")
            )
            raise UserError(
                f"the tokenizers {'normalize' if spec == 'normalizer_spec' else 'denormalize'} text differently ({detail}); "
                "pass new-language text (a manifest or text file) instead of a .model: it is trained here with "
                "the base's own normalizer"
            )
    for flag in ("treat_whitespace_as_suffix", "byte_fallback"):
        if getattr(bt, flag) != getattr(nt, flag):
            raise UserError(f"the tokenizers differ in {flag} (base {getattr(bt, flag)}, new {getattr(nt, flag)}); retrain the new one to match")
    base_types = {p.piece: p.type for p in base.pieces}
    clash = [p.piece for p in new.pieces if p.piece in base_types and base_types[p.piece] != p.type and p.type != UNKNOWN]
    if clash:
        raise UserError(f"pieces in both tokenizers with different types: {_examples(clash)}; the merged model cannot keep both")
    risky_new, risky_base = conflicting_pieces(base, new)
    if risky_new:
        raise UserError(
            f"{len(risky_new)} pieces of the new tokenizer are spelled only with characters the base tokenizer has "
            f"({_examples(risky_new)}); they could re-segment English text. Pass new-language text instead of a "
            ".model: the tokenizer trained here leaves those characters to the base"
        )
    if risky_base:
        raise UserError(
            f"{len(risky_base)} base pieces are spelled only with characters of the new tokenizer "
            f"({_examples(risky_base)}); they could re-segment new-language text. Pass new-language text instead "
            "of a .model: the tokenizer trained here leaves the base's characters to the base"
        )


def _spec_values(spec: Any) -> dict[str, Any]:
    # By value, not by bytes: a field left at its default and one set to the default mean the same.
    return {f.name: getattr(spec, f.name) for f in spec.DESCRIPTOR.fields}


def merge_models(base: ModelProto, new: ModelProto) -> MergeResult:
    """The base proto with the new model's pieces appended (duplicates and the new model's specials dropped)."""
    check_compatible(base, new)
    base_ids = {p.piece: i for i, p in enumerate(base.pieces)}
    new_specials = {i for i in (new.trainer_spec.bos_id, new.trainer_spec.eos_id, new.trainer_spec.pad_id) if i >= 0}
    duplicates, dropped, kept = [], [], []
    for i, p in enumerate(new.pieces):
        if p.piece in base_ids:
            duplicates.append({"piece": p.piece, "base_id": base_ids[p.piece], "new_id": i, "type": _type_name(p.type)})
        elif p.type == UNKNOWN or (p.type == CONTROL and i in new_specials):
            dropped.append({"piece": p.piece, "new_id": i, "type": _type_name(p.type)})
        else:
            kept.append(i)
    if not kept:
        raise UserError("the new tokenizer adds no pieces the base does not already have")

    # Score rule: every appended piece gets its own score plus one offset, chosen so the highest new score lands
    # 1 below the lowest base score. BPE merges the highest-scoring pair first, so every base merge outranks
    # every new one (base text segments as before), while the new pieces keep their order among themselves
    # (new-language text segments as in the new model). Scores are float32 in the proto; verify_merge re-checks
    # both properties on the stored values.
    lowest_base = min(p.score for p in base.pieces)
    highest_new = max(new.pieces[i].score for i in kept)
    offset = float(lowest_base) - float(highest_new) - 1.0

    merged = ModelProto()
    merged.CopyFrom(base)
    for i in kept:
        p = new.pieces[i]
        q = merged.pieces.add()
        q.piece, q.score, q.type = p.piece, p.score + offset, p.type
    # Metadata only (encoding never reads it), but keep it truthful.
    merged.trainer_spec.vocab_size = len(merged.pieces)
    return MergeResult(proto=merged, duplicates=duplicates, dropped_specials=dropped, score_offset=offset, new_ids=kept)


# ----------------------------------------------------------------------------------------- verification


class MergeCheckError(UserError):
    """A merged tokenizer failed a check; nothing is written."""


def _fail(what: str, examples: Sequence[str] = ()) -> NoReturn:
    raise MergeCheckError(f"merge check failed: {what}" + (f" (e.g. {'; '.join(examples[:3])})" if examples else ""))


def _tokens(sp: spm.SentencePieceProcessor, text: str, by_id: bool) -> list[tuple[int, int, Any, str]]:
    """(begin, end, key, characters) per token; key is the id, or the piece string (None for unknown)."""
    out = []
    for p in sp.encode(text, return_type="proto").pieces:
        key = p.id if by_id else (None if sp.is_unknown(p.id) else p.piece)
        out.append((p.begin, p.end, key, p.piece + p.surface))
    return out


def _overlaps(s: int, e: int, a: int, b: int) -> bool:
    if s == e:  # an empty-surface token (the leading ▁) sits at one offset
        return a <= s < b
    return s < b and a < e


def segmentation_diff(
    ref: spm.SentencePieceProcessor, merged: spm.SentencePieceProcessor, text: str, foreign: frozenset[str], by_id: bool
) -> tuple[bool, int, int, bool]:
    """Compare `merged` with `ref` on `text`, away from characters `ref` does not know (`foreign`).

    Every token of either model that contains a foreign character marks a stretch of text as touched; all
    tokens (of both) that do not overlap a touched stretch must be the same: same offsets and same id (or
    piece). Returns (same, tokens compared, tokens exempt, identical everywhere).
    """
    a, b = _tokens(ref, text, by_id), _tokens(merged, text, by_id)
    touched = [(s, e) for s, e, _, chars in a + b if not foreign.isdisjoint(chars)]

    def clean(tokens: list[tuple[int, int, Any, str]]) -> list[tuple[int, int, Any]]:
        return [(s, e, k) for s, e, k, _ in tokens if not any(_overlaps(s, e, x, y) for x, y in touched)]

    ca, cb = clean(a), clean(b)
    identical = [t[:3] for t in a] == [t[:3] for t in b]
    return ca == cb, len(ca), len(a) - len(ca), identical


def _expected_decode(sp: spm.SentencePieceProcessor, proto: ModelProto, text: str) -> str:
    """What decode(encode(text)) must give: the text after the model's own normalization."""
    s = sp.normalize(text).replace("▁", " ")
    if proto.normalizer_spec.add_dummy_prefix:
        s = s[:-1] if proto.trainer_spec.treat_whitespace_as_suffix and s.endswith(" ") else s.removeprefix(" ")
    return s


def synthetic_texts(proto: ModelProto, n_random: int = SYNTHETIC_TEXTS_PER_MODEL, seed: int = SYNTHETIC_SEED) -> list[str]:
    """Every text piece of a model on its own, then seeded random runs of pieces: text that exercises every merge."""
    surfaces = [p.piece.replace("▁", " ") for p in proto.pieces if p.type in TEXT_TYPES]
    rng = random.Random(seed)
    runs = ["".join(rng.choice(surfaces) for _ in range(rng.randint(2, 8))) for _ in range(n_random)]
    return [s for s in surfaces + runs if s.strip()]


def _dedupe(texts: Iterable[str]) -> list[str]:
    return [t for t in dict.fromkeys(texts) if t.strip()]


def verify_merge(base: ModelProto, new: ModelProto, result: MergeResult, new_texts: Sequence[str] = ()) -> dict[str, Any]:
    """Check every guarantee of the merge; `MergeCheckError` on the first that fails, else the numbers."""
    merged = result.proto
    n_base, n_merged = len(base.pieces), len(merged.pieces)
    kept = [new.pieces[i] for i in result.new_ids]

    # Structure: base ids untouched, new pieces appended once each in order, nothing else.
    bad = [str(i) for i in range(n_base) if merged.pieces[i].SerializeToString() != base.pieces[i].SerializeToString()]
    if bad:
        _fail("base pieces changed at ids", bad)
    if n_merged != n_base + len(kept):
        _fail(f"merged size {n_merged} != {n_base} base + {len(kept)} new pieces")
    for j, p in enumerate(kept):
        q = merged.pieces[n_base + j]
        if (q.piece, q.type) != (p.piece, p.type):
            _fail(f"new piece {p.piece!r} not at id {n_base + j} with type {_type_name(p.type)}")
    pieces = [p.piece for p in merged.pieces]
    if len(set(pieces)) != n_merged:
        _fail("duplicate pieces (NeMo's piece->id vocabulary would silently shrink)")
    for spec in ("normalizer_spec", "denormalizer_spec"):
        if _spec_values(getattr(merged, spec)) != _spec_values(getattr(base, spec)):
            _fail(f"{spec} differs from the base's")

    # Scores, as stored (float32): all new below all base, and the new pieces' order unchanged.
    lowest_base = min(p.score for p in base.pieces)
    new_scores = [merged.pieces[n_base + j].score for j in range(len(kept))]
    if max(new_scores) >= lowest_base:
        _fail(f"a new piece scores {max(new_scores)} >= the lowest base score {lowest_base}")
    order_kept = all(
        (kept[j].score > kept[j + 1].score) == (new_scores[j] > new_scores[j + 1])
        and (kept[j].score == kept[j + 1].score) == (new_scores[j] == new_scores[j + 1])
        for j in range(len(kept) - 1)
    )
    if not order_kept:
        _fail("the new pieces' score order changed (float32 rounding of the offset)")

    # Loads in SentencePiece, with the base's special ids.
    sp_merged = _processor(merged)
    if sp_merged.get_piece_size() != n_merged:
        _fail(f"SentencePiece reports {sp_merged.get_piece_size()} pieces, not {n_merged}")
    specials = _special_ids(base)
    if _special_ids(merged) != specials:
        _fail(f"special ids {_special_ids(merged)} differ from the base's {specials}")

    # Alphabets: the conditions that make the encoding checks below hold for all text, not just these samples.
    risky_new, risky_base = conflicting_pieces(base, new)
    if risky_new or risky_base:
        _fail("pieces spelled only with the other language's characters", list(risky_new + risky_base))
    base_chars, new_chars = alphabet(base), alphabet(new)
    new_only, base_only = new_chars - base_chars, base_chars - new_chars

    sp_base, sp_new = _processor(base), _processor(new)
    groups = {
        "english_sample": list(ENGLISH_SAMPLE),
        "every_base_piece": synthetic_texts(base),
        "hindi_sample": list(HINDI_SAMPLE),
        "every_new_piece": synthetic_texts(new),
        "mixed_sample": list(MIXED_SAMPLE),
    }
    if new_texts:
        # Each line whole, and each word on its own (English words in new-language text are base text too).
        groups["new_language_text"] = _dedupe(list(new_texts) + [w for t in new_texts for w in t.split()])
    checks: dict[str, Any] = {}
    for name, texts in groups.items():
        checks[name] = _check_texts(_dedupe(texts), sp_base, sp_new, sp_merged, merged, new_only, base_only)
    return {
        "base_ids_unchanged": n_base,
        "new_pieces_appended": len(kept),
        "distinct_pieces": len(set(pieces)),
        "special_ids": specials,
        "lowest_base_score": float(lowest_base),
        "highest_new_score": float(max(new_scores)),
        "new_score_order_kept": order_kept,
        "characters": {
            "base_only": len(base_only),
            "new_only": len(new_only),
            "shared": sorted(base_chars & new_chars),
            "new_pieces_of_base_characters_only": len(risky_new),
            "base_pieces_of_new_characters_only": len(risky_base),
        },
        "encodings": checks,
    }


def _check_texts(
    texts: Sequence[str],
    sp_base: spm.SentencePieceProcessor,
    sp_new: spm.SentencePieceProcessor,
    sp_merged: spm.SentencePieceProcessor,
    merged: ModelProto,
    new_only: frozenset[str],
    base_only: frozenset[str],
) -> dict[str, Any]:
    """Base ids, new pieces and round trip on one group of texts; `MergeCheckError` on a difference."""
    stats = {
        "texts": len(texts),
        "base_ids": {"identical_texts": 0, "tokens_compared": 0, "tokens_next_to_new_characters": 0},
        "new_pieces": {"identical_texts": 0, "tokens_compared": 0, "tokens_next_to_base_characters": 0},
        "round_trip": {"ok": 0, "skipped_unknown_characters": 0},
    }
    for text in texts:
        for ref, foreign, by_id, key, exempt in (
            (sp_base, new_only, True, "base_ids", "tokens_next_to_new_characters"),
            (sp_new, base_only, False, "new_pieces", "tokens_next_to_base_characters"),
        ):
            same, compared, skipped, identical = segmentation_diff(ref, sp_merged, text, foreign, by_id)
            if not same:
                what = "English ids" if by_id else "new-language pieces"
                ref_pieces = [ref.id_to_piece(i) for i in ref.encode(text)]
                got = [sp_merged.id_to_piece(i) for i in sp_merged.encode(text)]
                _fail(f"{what} changed on {text!r}: {ref_pieces} -> {got}")
            stats[key]["tokens_compared"] += compared
            stats[key][exempt] += skipped
            stats[key]["identical_texts"] += identical
        ids = sp_merged.encode(text)
        if any(sp_merged.is_unknown(i) for i in ids):
            stats["round_trip"]["skipped_unknown_characters"] += 1
            continue
        expected = _expected_decode(sp_merged, merged, text)
        if sp_merged.decode(ids) != expected:
            _fail(f"decode(encode(x)) != x on {text!r}: {sp_merged.decode(ids)!r} vs {expected!r}")
        stats["round_trip"]["ok"] += 1
    return stats


def verify_nemo_folder(folder: str | os.PathLike, merged: ModelProto, english: Sequence[str] = ENGLISH_SAMPLE) -> dict[str, Any]:
    """Load a written folder with NeMo's SentencePieceTokenizer: every piece distinct, ids as SentencePiece's."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

    tok = SentencePieceTokenizer(model_path=str(Path(folder) / "tokenizer.model"))
    n = len(merged.pieces)
    if tok.vocab_size != n:
        _fail(f"NeMo reports vocab_size {tok.vocab_size}, not {n}")
    # NeMo's ASR models build a piece->id dict from exactly these; a repeat would shrink the vocabulary.
    distinct = len({tok.ids_to_tokens([i])[0] for i in range(n)})
    if distinct != n:
        _fail(f"NeMo sees {distinct} distinct pieces, not {n}")
    sp = _processor(merged)
    bad = [t for t in english if tok.text_to_ids(t) != sp.encode(t)]
    if bad:
        _fail("NeMo and SentencePiece encode differently", bad)
    return {"vocab_size": tok.vocab_size, "distinct_pieces": distinct}


# ---------------------------------------------------------------------------------------------- writing


def _as_proto(model: ModelProto | bytes | str | os.PathLike) -> ModelProto:
    if isinstance(model, ModelProto):
        return model
    if isinstance(model, bytes):
        return parse_model_bytes(model, "model bytes")
    return load_model_file(model)


def _score_text(score: float) -> str:
    # As spm_train writes tokenizer.vocab (C++ ostream, 6 significant digits): 0, -0, -1, -2.5, -1.23457e+06.
    return f"{score:g}"


def nemo_vocab_lines(proto: ModelProto) -> list[str]:
    """vocab.txt as NeMo's create_spt_model writes it: specials left out, '▁x' -> 'x', other pieces -> '##x'."""
    lines = []
    for p in proto.pieces:
        if p.piece in NEMO_SPECIAL_TOKENS or p.type in (UNKNOWN, CONTROL, USER_DEFINED):
            continue
        token = p.piece[1:] if p.piece.startswith("▁") else f"##{p.piece}"
        lines.append(token if token else p.piece[0])  # a bare '▁' stays '▁'
    return lines


def write_nemo_tokenizer_folder(model_proto_or_path: ModelProto | bytes | str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write `tokenizer.model`, `tokenizer.vocab` and `vocab.txt` for `change_vocabulary(new_tokenizer_dir=...)`.

    Accepts a ModelProto, serialized bytes or a `.model` path. `out_dir` is created if needed; existing files
    of these names are overwritten (wrap the call in `atomic_dir` for all-or-nothing).
    """
    proto = _as_proto(model_proto_or_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(proto.SerializeToString(deterministic=True))
    vocab = "".join(f"{p.piece}\t{_score_text(p.score)}\n" for p in proto.pieces)
    (out / "tokenizer.vocab").write_text(vocab, encoding="utf-8", newline="\n")
    (out / "vocab.txt").write_text("".join(f"{t}\n" for t in nemo_vocab_lines(proto)), encoding="utf-8", newline="\n")
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_report(base: Tokenizer, new: Tokenizer, result: MergeResult, verification: dict[str, Any]) -> dict[str, Any]:
    """merge_report.json: sizes, what was dropped, the score rule and the check results (no paths, no times)."""
    merged = result.proto
    n_base = len(base.proto.pieces)
    return {
        "base": {
            "source": base.source,
            "size": n_base,
            "sha256": _sha256(base.proto.SerializeToString(deterministic=True)),
            "model_type": spm_pb2.TrainerSpec.ModelType.Name(base.proto.trainer_spec.model_type),
            "normalizer": base.proto.normalizer_spec.name,
        },
        "new": {
            "source": new.source,
            "size": len(new.proto.pieces),
            "sha256": _sha256(new.proto.SerializeToString(deterministic=True)),
            "trained_here": new.trained_from,
        },
        "merged_size": len(merged.pieces),
        "merged_sha256": _sha256(merged.SerializeToString(deterministic=True)),
        "new_piece_ids": [n_base, len(merged.pieces) - 1],
        "duplicates": result.duplicates,
        "dropped_specials": result.dropped_specials,
        "score_rule": {
            "rule": "new score = score in the new model + offset; offset puts the highest new score 1 below the lowest base score",
            "offset": result.score_offset,
        },
        "verification": verification,
    }


def merge_to_folder(
    base: str, new: str, out_dir: str | os.PathLike, new_vocab_size: int | None = None, force: bool = False
) -> dict[str, Any]:
    """The whole merge: resolve inputs, merge, verify, write `out_dir` all at once. Returns the report."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:  # before any work (atomic_dir checks again when writing)
        raise UserError(f"{out_dir}: output folder exists; pass --force to replace it or choose another --out")
    if new_vocab_size is not None and new_vocab_size < 1:
        raise UserError(f"--new-vocab-size must be positive, not {new_vocab_size}")
    base_tok = resolve_base(base)
    new_tok = resolve_new(new, base_tok.proto, new_vocab_size)
    result = merge_models(base_tok.proto, new_tok.proto)
    verification = verify_merge(base_tok.proto, new_tok.proto, result, new_tok.texts)
    # Write and load-check in a scratch folder first, so a failure leaves nothing beside --out.
    with tempfile.TemporaryDirectory(prefix="merge_token-") as scratch:
        write_nemo_tokenizer_folder(result.proto, scratch)
        verification["nemo"] = verify_nemo_folder(scratch, result.proto)
        report = build_report(base_tok, new_tok, result, verification)
        with atomic_dir(out_dir, force=force) as tmp:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # a plain folder's mode, not mkdtemp's private 0700
            for name in FOLDER_FILES:
                shutil.copyfile(Path(scratch) / name, tmp / name)
            (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report
