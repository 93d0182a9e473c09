"""The English stand-in shipped in assets/standin/: what it is, how it was made, and that it really transcribes."""

from __future__ import annotations

import json

import pytest
from conftest import EN_MODEL

from demo import standin
from demo.corpus import corpus_plan, plan_sha256, synthesize
from enhi.evaluate import error_rates, transcribe_audio

RECORD = json.loads(standin.RECORD.read_text(encoding="utf-8"))

# Written for this test (not from the corpus templates or the hand-written sentences), spoken in validation voices
# that training never heard.
UNSEEN = [
    "The small boat sailed slowly across the quiet lake.",
    "My neighbour bought a new red bicycle last week.",
    "Please close the kitchen window before you leave.",
    "The children played football in the park after school.",
    "We will visit our grandmother next Sunday morning.",
    "There is a large brown dog sleeping near the door.",
    "She forgot her umbrella at the station yesterday.",
    "The teacher wrote a long letter to the parents.",
]


@pytest.fixture(scope="module")
def model():
    from nemo.collections.asr.models import ASRModel

    from enhi.transplant import install_cpu_tdt_loss

    m = ASRModel.restore_from(str(standin.SHIPPED), map_location="cpu")
    install_cpu_tdt_loss(m)
    return m.eval()


def test_it_is_a_small_parakeet_with_the_real_english_tokenizer(model):
    import sentencepiece as spm

    assert standin.SHIPPED.stat().st_size <= 25 * 2**20
    assert type(model).__name__ == "EncDecHybridRNNTCTCBPEModel"
    enc = model.cfg.encoder
    assert enc._target_.endswith("ConformerEncoder") and enc.self_attention_model == "rel_pos"
    assert (enc.subsampling, enc.subsampling_factor, enc.d_model, enc.n_layers) == (
        "dw_striding", 8, standin.SIZES["d_model"], standin.SIZES["n_layers"])
    assert model.cfg.loss.loss_name == "tdt" and list(model.cfg.model_defaults.tdt_durations) == [0, 1, 2, 3, 4]
    assert model.joint.num_extra_outputs == 5 and hasattr(model, "ctc_decoder")
    en = spm.SentencePieceProcessor(model_file=str(EN_MODEL))
    assert [model.tokenizer.ids_to_tokens([i])[0] for i in range(model.tokenizer.vocab_size)] == [
        en.id_to_piece(i) for i in range(en.get_piece_size())]
    assert RECORD["parameters"] == sum(p.numel() for p in model.parameters())


def test_the_record_matches_the_corpus_the_repository_would_build():
    """The corpus hash in the record is the plan of today's text assets and voices: editing them makes it stale."""
    plan = corpus_plan(RECORD["corpus"]["n_train"], RECORD["corpus"]["n_val"], 0, ("en",))
    assert plan_sha256(plan) == RECORD["corpus"]["plan_sha256"]
    assert RECORD["command"] == standin.COMMAND and RECORD["steps"] == standin.STEPS


def test_the_shipped_model_was_trained_with_what_its_command_uses_today(model):
    """The command in the record must make this model again: its loss mix and augmentation are the module's
    (before 2026-12-04 the command took the CTC share from the YAML, whose default had become the fine-tune's 0.1)."""
    assert model.cfg.aux_ctc.ctc_loss_weight == standin.CTC_WEIGHT
    assert {k: model.cfg.spec_augment[k] for k in standin.SPEC_AUGMENT} == standin.SPEC_AUGMENT
    assert (RECORD["lr"], RECORD["warmup_steps"], RECORD["batch_duration_s"]) == (
        standin.LR, standin.WARMUP, standin.BATCH_DURATION)


def test_it_scores_its_recorded_wer_on_a_fresh_synthesis(model):
    val = corpus_plan(RECORD["corpus"]["n_train"], RECORD["corpus"]["n_val"], 0, ("en",))["en"]["val"]
    audio = [synthesize(u["source"], "en", u["voice"], u["rate"], u["pitch"], u["pitch_range"]) for u in val]
    hyps = transcribe_audio(model, audio, batch_size=16)
    wer = error_rates([u["text"] for u in val], hyps)["wer"]
    # eSpeak NG's audio is not bit-reproducible (the same text and voice twice in one process differ in samples);
    # over this set that moved WER by up to 0.008 between runs.
    assert abs(wer - RECORD["val_en"]["wer"]) <= 0.03, (wer, RECORD["val_en"]["wer"])
    assert wer <= 0.25


def test_on_sentences_written_for_this_test_it_spells_more_than_it_misses(model):
    """Sentences outside the corpus templates, with words the corpus never uses, in unseen voices. The issue's
    goal (transcribing such sentences well) is NOT reached yet: this stand-in gets 0.67 WER (TDT) and 0.41 CER
    (CTC) here, against 0.064 WER on the templated validation set; its prediction network has learned the
    templates. This bounds where it is, so a regression fails, until a stand-in trained on freer text replaces it."""
    from demo.corpus import VOICES
    from demo.text import normalize_text

    voices = VOICES["en"]["val"]
    audio = [synthesize(s, "en", voices[i % len(voices)], rate=160) for i, s in enumerate(UNSEEN)]
    refs = [normalize_text(s, "en") for s in UNSEEN]
    tdt = error_rates(refs, transcribe_audio(model, audio))
    ctc = error_rates(refs, transcribe_audio(model, audio, decoder="ctc"))
    assert tdt["wer"] <= 0.75 and ctc["cer"] <= 0.5, (tdt, ctc)
