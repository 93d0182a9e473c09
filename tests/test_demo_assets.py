"""The tokenizers shipped under assets/ are the published references, byte for byte: SHA-256 pinned here from the
published files (the tokenizer inside nvidia/parakeet-tdt_ctc-110m's checkpoint; AI4Bharat IndicVoices'
tokenizers/hi_256), the committed merge was built from them, and they equal ../shared/reference's copies where
that folder sits beside the checkout."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import EN_MODEL, HI_DIR, MERGED_DIR, SHARED

from enhi import tokenizer_merge as tm

# `sha256sum` of the published files (as kept in ../shared/reference, 2026-12-05), not of the files under test.
PUBLISHED_SHA256 = {
    "en1024/tokenizer.model": "4b97fbc15390829e3b94069fdeccf0d053561d090e12d94789e4e71c531f93fc",
    "hi256/tokenizer.model": "e6b66ffd63ffdf4700680297aea6d477f33f59e78354c4b7c72d3337396c8efd",
    "hi256/tokenizer.vocab": "46fe4b0b1bac2c603e0dac424c84e9df587092db3e510e8d23dfb38ad3be067c",
    "hi256/vocab.txt": "b7c307ff86964f4d57d0547222bcb2bb546feffaae47849167a3391e2f56226a",
}


def test_shipped_tokenizers_are_the_published_files():
    assert EN_MODEL.parent.parent == HI_DIR.parent
    for rel, digest in PUBLISHED_SHA256.items():
        assert hashlib.sha256((HI_DIR.parent / rel).read_bytes()).hexdigest() == digest, rel


def test_the_committed_merge_was_built_from_them():
    report = json.loads((MERGED_DIR / tm.REPORT_NAME).read_text(encoding="utf-8"))
    for path, side in ((EN_MODEL, "base"), (HI_DIR / "tokenizer.model", "new")):
        digest = tm._sha256(tm.load_model_file(path).SerializeToString(deterministic=True))
        assert digest == report[side]["sha256"], path


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference is not beside this checkout (the hash test above covers a clone)")
def test_shipped_tokenizers_are_the_reference_files():
    assert EN_MODEL.read_bytes() == (SHARED / "parakeet-tdt_ctc-110m-en1024" / "tokenizer.model").read_bytes()
    for name in ("tokenizer.model", "tokenizer.vocab", "vocab.txt"):
        assert (HI_DIR / name).read_bytes() == (SHARED / "indicvoices-hi256" / name).read_bytes()
