"""Pronunciation-informed new rows: which English rows a new piece borrows, and the step-0 mass bound."""

from __future__ import annotations

import math

import pytest
import sentencepiece as spm
import torch
from conftest import EN_MODEL, MERGED_DIR

from enhi.new_rows import borrowed_rows
from enhi.transplant import _init_new_output_rows, mass_offsets

EN = spm.SentencePieceProcessor(model_file=str(EN_MODEL))


def _pieces(ids: list[int]) -> list[str]:
    return [EN.id_to_piece(i) for i in ids]


def test_hindi_pieces_borrow_the_english_pieces_of_their_romanization():
    new = ["▁क", "ने", "▁है", "ता", "▁भ", "ों"]
    rows = borrowed_rows(new, str(EN_MODEL), EN.get_piece_size())
    # Word-start pieces borrow word-start pieces; word-internal ones never pick up a "▁" piece by accident.
    assert [_pieces(r) for r in rows] == [["▁k", "a"], ["ne"], ["▁ha", "i"], ["t", "a", "a"], ["▁b", "h", "a"], ["om"]]


def test_every_merged_hindi_piece_gets_rows_or_falls_back():
    merged = spm.SentencePieceProcessor(model_file=str(MERGED_DIR / "tokenizer.model"))
    n_old = EN.get_piece_size()
    new = [merged.id_to_piece(i) for i in range(n_old, merged.get_piece_size())]
    rows = borrowed_rows(new, str(MERGED_DIR / "tokenizer.model"), n_old)
    assert len(rows) == len(new) == 254
    assert all(0 < i < n_old for r in rows for i in r)  # English ids only, never <unk> (0)
    empty = [p for p, r in zip(new, rows, strict=True) if not r]
    assert 0 < len(empty) <= 10, empty  # a few signs (e.g. the nukta) have no reading of their own
    assert sum(bool(r) for r in rows) >= 244


def test_a_script_without_a_romanizer_falls_back_to_the_mean_row():
    rows = borrowed_rows(["▁ꯀ", "ꯅ"], str(EN_MODEL), EN.get_piece_size(), romanize=lambda s: "")
    assert rows == [[], []]
    # Text the base cannot spell (outside its alphabet) counts as no romanization, not as <unk> rows.
    rows = borrowed_rows(["▁x"], str(EN_MODEL), EN.get_piece_size(), romanize=lambda s: "ɮɮ")
    assert rows == [[]]


def test_mass_offsets_are_the_derived_bound():
    off = mass_offsets([[5], [5, 6], []], n_old=1025, mass_bound=2e-4)
    want = [math.log(3 / 2e-4) - math.log(k) for k in (1, 2, 1025)]
    assert torch.allclose(off, torch.tensor(want, dtype=torch.float32))


@pytest.mark.parametrize("sources_kind", ["borrowed", "mean"])
def test_new_tokens_never_take_more_than_the_bound_and_the_bound_is_tight(sources_kind):
    """Any hidden vector: the new rows' total probability relative to the old tokens is <= the bound. When the
    hidden vector makes one source row dominate, a row borrowed from it alone comes within 2x of its share of
    the bound (the offset is not looser than it must be); one nat less offset breaks the bound there."""
    g = torch.Generator().manual_seed(0)
    n_old, n_new, dim, bound = 40, 6, 16, 2e-4
    w = torch.zeros(n_old + n_new, dim)
    b = torch.zeros(n_old + n_new)
    w[:n_old] = torch.randn(n_old, dim, generator=g)
    b[:n_old] = torch.randn(n_old, generator=g)
    old, new = list(range(n_old)), list(range(n_old, n_old + n_new))
    sources = [[3], [3, 7], [10, 11, 12], [0], [39], [5]] if sources_kind == "borrowed" else [[] for _ in new]
    _init_new_output_rows(w, b, old, new, sources, bound)

    def new_mass(h: torch.Tensor) -> torch.Tensor:
        z = h @ w.T + b
        return torch.exp(torch.logsumexp(z[:, n_old:], 1) - torch.logsumexp(z[:, :n_old], 1))

    h = torch.randn(4000, dim, generator=g) * 3
    assert float(new_mass(h).max()) <= bound
    if sources_kind == "borrowed":
        dominant = 40 * w[3] / w[3].norm()  # row 3's logit far above every other
        z = dominant @ w.T + b
        share = float(torch.exp(z[n_old] - torch.logsumexp(z[:n_old], 0)))
        assert bound / n_new / 2 < share <= bound / n_new * (1 + 1e-4)  # float32 rounding
        b[n_old] += 1.0  # an offset one nat short
        z = dominant @ w.T + b
        assert float(torch.exp(z[n_old] - torch.logsumexp(z[:n_old], 0))) > bound / n_new
