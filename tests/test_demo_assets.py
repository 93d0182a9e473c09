"""The tokenizers shipped under assets/ are the references: the hashes the committed merge report recorded for its
inputs (the README command builds en1024_hi256/ from these copies; the hashes are those of ../shared/reference),
and the files themselves where ../shared sits beside the checkout."""

from __future__ import annotations

import json

import pytest
from conftest import EN_MODEL, HI_DIR, MERGED_DIR, SHARED

from enhi import tokenizer_merge as tm


def test_shipped_tokenizers_have_the_reference_hashes():
    report = json.loads((MERGED_DIR / tm.REPORT_NAME).read_text(encoding="utf-8"))
    for path, side in ((EN_MODEL, "base"), (HI_DIR / "tokenizer.model", "new")):
        digest = tm._sha256(tm.load_model_file(path).SerializeToString(deterministic=True))
        assert digest == report[side]["sha256"], path


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference is not beside this checkout (the hash test above covers a clone)")
def test_shipped_tokenizers_are_the_reference_files():
    assert EN_MODEL.read_bytes() == (SHARED / "parakeet-tdt_ctc-110m-en1024" / "tokenizer.model").read_bytes()
    for name in ("tokenizer.model", "tokenizer.vocab", "vocab.txt"):
        assert (HI_DIR / name).read_bytes() == (SHARED / "indicvoices-hi256" / name).read_bytes()
