"""A decode-time language hint: greedy TDT and CTC decoding restricted to one language's tokens.

For a user who knows a file's language. The merged vocabulary keeps the base model's pieces first (ids below
`V_old`, read from the model's transplant record) and the new language's after them, so a language's tokens
are a set of ids:

* the base language (`BASE_LANG`, English for Parakeet): every id below `V_old`;
* the new language: every id from `V_old` on, plus the base pieces that belong to no script (`<unk>` and pieces
  with no letter or digit: the word boundary `▁`, punctuation), which the merge shares between both.

`restricted_to(model, lang)` pushes every other token's output bias, in the joint and in the CTC head, 1e4 below
the rest while the block runs, so greedy decoding can only choose allowed tokens, blank and durations; the
weights are put back afterwards, exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from enhi.errors import UserError

BASE_LANG = "en"  # the pretrained model's language: its tokenizer's pieces are the first V_old ids
PENALTY = 1.0e4


def allowed_token_ids(model: Any, lang: str) -> torch.Tensor:
    """Boolean mask over the token ids (blank excluded) that `lang` may write."""
    record = model.cfg.get("vocab_transplant")
    if record is None:
        raise UserError("the language hint needs a model adapted by this recipe (its transplant record says where "
                        "the new language's tokens start); this model has none")
    old, n = int(record.old_vocab_size), int(model.tokenizer.vocab_size)
    mask = torch.zeros(n, dtype=torch.bool)
    if lang == BASE_LANG:
        mask[:old] = True
        return mask
    mask[old:] = True
    sp = model.tokenizer.tokenizer
    for i in range(old):
        if sp.is_unknown(i) or sp.is_control(i) or not any(ch.isalnum() for ch in sp.id_to_piece(i)):
            mask[i] = True
    return mask


@contextlib.contextmanager
def restricted_to(model: Any, lang: str | None) -> Iterator[None]:
    """Decode `model` with only `lang`'s tokens inside the block (no restriction for `lang` None)."""
    if lang is None:
        yield
        return
    disallowed = ~allowed_token_ids(model, lang)
    n = disallowed.numel()
    biases = [model.joint.joint_net[-1].bias]  # rows: tokens, blank, durations
    if hasattr(model, "ctc_decoder"):
        biases.append(model.ctc_decoder.decoder_layers[-1].bias)  # rows: tokens, blank
    saved = [b.detach()[:n].clone() for b in biases]
    try:
        with torch.no_grad():
            for b in biases:
                b[:n][disallowed] -= PENALTY
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(biases, saved, strict=True):
                b[:n].copy_(s)
