"""The reset diagnostic: one part back at its starting weights, the new tokens' rows and every other part kept."""

from __future__ import annotations

import torch
from conftest import MERGED_DIR

from demo.standin import SHIPPED
from enhi.evaluate import transcribe_entries
from enhi.manifest import read_manifest
from enhi.reset import PARTS, reset_part, start_state
from enhi.rows import new_token_rows
from enhi.training import load_nemo_file
from enhi.transplant import change_vocabulary


def test_reset_puts_back_one_part_and_keeps_new_rows(small_corpus):
    start = start_state(str(SHIPPED), str(MERGED_DIR))
    model = load_nemo_file(SHIPPED)
    change_vocabulary(model, str(MERGED_DIR), transplant=True, new_rows="mean")
    model.eval()
    entries = read_manifest(small_corpus["en_val"])
    before = transcribe_entries(model, entries)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # "fine-tuning": every weight moves
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    moved = {n: t.detach().clone() for n, t in model.state_dict().items()}
    assert transcribe_entries(model, entries) != before

    rows = {id(p): r for p, r in new_token_rows(model)}
    params = dict(model.named_parameters())
    for prefix in PARTS.values():
        assert reset_part(model, start, prefix) > 0
    for name, t in model.state_dict().items():
        p = params.get(name)
        r = rows.get(id(p)) if p is not None else None
        if not any(name.startswith(x) for x in PARTS.values()):
            assert torch.equal(t, moved[name]), name  # outside the parts (the preprocessor): untouched
        elif r is None:
            assert torch.equal(t, start[name]), name
        else:  # old rows, blank and durations back at the start; the new tokens' rows as trained
            keep = torch.ones(t.shape[0], dtype=torch.bool)
            keep[r] = False
            assert torch.equal(t[keep], start[name][keep]), name
            assert torch.equal(t[r], moved[name][r]), name
    # With the new rows still low enough (the perturbation moved them by 0.05 only), English is the start's again.
    assert transcribe_entries(model, entries) == before


def test_reset_of_one_part_leaves_the_others(small_corpus):
    start = start_state(str(SHIPPED), str(MERGED_DIR))
    model = load_nemo_file(SHIPPED)
    change_vocabulary(model, str(MERGED_DIR), transplant=True, new_rows="mean")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    moved = {n: t.detach().clone() for n, t in model.state_dict().items()}
    reset_part(model, start, PARTS["joint"])
    for name, t in model.state_dict().items():
        if name.startswith("joint."):
            assert not torch.equal(t, moved[name]), name
        else:
            assert torch.equal(t, moved[name]), name
