"""Where a new vocabulary row starts: which old rows it borrows from (pronunciation-informed initialization).

A new piece (say Hindi `▁क`) is romanized (`uroman`, any script, offline: " ka"), the romanization is encoded
with the model's own tokenizer (`▁k`, `a`), and the new piece's output and embedding rows start from the mean
of those pieces' rows: the pretrained model already maps "ka"-like sounds to them. Word-start pieces (`▁...`)
are encoded as a word start; word-internal pieces without the dummy prefix, so they do not borrow the base's
word-start pieces by accident. A piece that romanizes to nothing the base can spell (a nukta, a bare sign,
a script uroman does not know) borrows from every old label row instead: the mean-row init.

`uroman` is by Ulf Hermjakob, USC Information Sciences Institute ("This project uses the universal romanizer
software 'uroman' written by Ulf Hermjakob, USC Information Sciences Institute (2015-2020)").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

WORD_START = "\u2581"  # SentencePiece's word-start mark


@functools.cache
def _uroman():
    import uroman

    return uroman.Uroman()


def uroman_romanize(text: str) -> str:
    """Latin-script reading of `text` (lower case; "" when uroman has none)."""
    return _uroman().romanize_string(text).lower()


def _no_prefix_processor(model_file: str):
    """The same SentencePiece model with its dummy word-start prefix turned off, for word-internal text."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    with open(model_file, "rb") as f:
        proto.ParseFromString(f.read())
    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def borrowed_rows(
    new_pieces: Sequence[str],
    base_model_file: str,
    n_old: int,
    romanize: Callable[[str], str] = uroman_romanize,
) -> list[list[int]]:
    """For each new piece, the old token ids whose rows it starts from ([] = no romanization: use the mean row).

    Only ids below `n_old` (the base vocabulary) and other than `<unk>` count: a romanization the base
    tokenizer cannot spell gives [].
    """
    import sentencepiece as spm

    start = spm.SentencePieceProcessor(model_file=base_model_file)
    inner = _no_prefix_processor(base_model_file)
    unk = start.unk_id()
    out: list[list[int]] = []
    for piece in new_pieces:
        is_start = piece.startswith(WORD_START)
        text = romanize(piece.lstrip(WORD_START)).strip()
        text = "".join(c for c in text if c.isalpha() or c == "'")
        if not text:
            out.append([])
            continue
        ids = (start if is_start else inner).encode(text)
        # A lone "▁" says nothing about the sound, and <unk> is not a sound the base knows.
        out.append([i for i in ids if i != unk and i < n_old and start.id_to_piece(i) != WORD_START])
    return out
