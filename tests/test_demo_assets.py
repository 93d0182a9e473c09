"""The tokenizers shipped for the offline demo are the reference ones, byte for byte."""

from __future__ import annotations

import pytest
from conftest import EN_MODEL, HI_DIR, SHARED


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference is not beside this checkout")
def test_shipped_tokenizers_are_the_references():
    assert EN_MODEL.read_bytes() == (SHARED / "parakeet-tdt_ctc-110m-en1024" / "tokenizer.model").read_bytes()
    for name in ("tokenizer.model", "tokenizer.vocab", "vocab.txt"):
        assert (HI_DIR / name).read_bytes() == (SHARED / "indicvoices-hi256" / name).read_bytes()
