"""The decode-time language hint: greedy TDT and CTC write only the hinted language's tokens, the weights come back
exactly, and eval_nemo.py reports hinted scores beside the plain ones."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import MERGED_DIR, ROOT, run_main

from demo.standin import SHIPPED as STANDIN
from enhi.lang_hint import allowed_token_ids, restricted_to

DEVANAGARI = re.compile("[\u0900-\u097f]")
LATIN = re.compile("[a-z]")


@pytest.fixture(scope="module")
def mixed_model():
    """The shipped stand-in adapted to en1024_hi256, its Hindi rows raised so it writes both scripts."""
    from enhi.rows import new_token_rows
    from enhi.training import load_nemo_file
    from enhi.transplant import change_vocabulary

    model = load_nemo_file(STANDIN)
    change_vocabulary(model, str(MERGED_DIR), transplant=True, new_rows="romanized")
    for p, rows in new_token_rows(model):
        if p.dim() == 1:  # the joint's and the CTC head's biases: the new tokens become likely
            with torch.no_grad():
                p[rows] += 16.0
    return model.eval()


def test_allowed_tokens_are_the_base_pieces_or_the_new_ones_plus_the_script_free_shared_ones(mixed_model):
    sp, old = mixed_model.tokenizer.tokenizer, int(mixed_model.cfg.vocab_transplant.old_vocab_size)
    en, hi = allowed_token_ids(mixed_model, "en"), allowed_token_ids(mixed_model, "hi")
    assert en.numel() == hi.numel() == 1278 and en[:old].all() and not en[old:].any()
    assert hi[old:].all() and hi[sp.piece_to_id("▁")] and hi[0]  # the word boundary and <unk> are shared
    assert not hi[sp.piece_to_id("▁the")] and not hi[sp.piece_to_id("a")]


def test_greedy_tdt_and_ctc_write_only_the_hinted_language_and_the_weights_come_back(mixed_model, small_corpus):
    from enhi.evaluate import transcribe_audio
    from enhi.manifest import load_audio, read_manifest

    audio = [load_audio(e.audio_filepath) for lang in ("en", "hi") for e in read_manifest(small_corpus[f"{lang}_val"])]
    before = {k: v.clone() for k, v in mixed_model.state_dict().items()}
    for decoder in ("tdt", "ctc"):
        free = transcribe_audio(mixed_model, audio, batch_size=8, decoder=decoder)
        assert any(DEVANAGARI.search(t) for t in free) and any(LATIN.search(t) for t in free), decoder
        with restricted_to(mixed_model, "en"):
            en = transcribe_audio(mixed_model, audio, batch_size=8, decoder=decoder)
        with restricted_to(mixed_model, "hi"):
            hi = transcribe_audio(mixed_model, audio, batch_size=8, decoder=decoder)
        assert not any(DEVANAGARI.search(t) for t in en) and sum(len(t.split()) for t in en) > 20, decoder
        assert not any(LATIN.search(t) for t in hi) and sum(len(t.split()) for t in hi) > 10, decoder
    after = mixed_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_eval_nemo_reports_hinted_scores_beside_the_plain_ones(mixed_model, small_corpus, tmp_path, capsys):
    from enhi.training import save_model

    path = save_model(mixed_model, tmp_path / "mixed.nemo")
    out = tmp_path / "preds.jsonl"
    code, stdout, stderr = run_main(ROOT / "eval_nemo.py", ["--model", str(path), "--manifest", str(small_corpus["en_val"]),
                                                            "--out", str(out), "--lang-hint"], capsys)
    assert code == 0, stderr[-2000:]
    assert stdout.splitlines()[0].split() == ["lang", "utts", "WER", "CER", "standard", "WER", "CER", "WER", "(hint)",
                                                 "CER", "(hint)"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 and all("pred_text_hint" in r and not DEVANAGARI.search(r["pred_text_hint"]) for r in rows)
    assert any(DEVANAGARI.search(r["pred_text"]) for r in rows)  # the hint changed something here
    code, _, stderr = run_main(ROOT / "eval_nemo.py", ["--model", str(STANDIN), "--manifest", str(small_corpus["en_val"]),
                                                       "--out", str(tmp_path / "p.jsonl"), "--lang-hint"], capsys)
    assert code == 2 and "the language hint needs a model adapted by this recipe" in stderr
