"""The English stand-in shipped in assets/standin/: what it is, how it was made, and that it really transcribes.

Two stages: `standin_templates.nemo` (demo.standin, template sentences) and `standin_en.nemo` (demo.standin_free,
free English on top of it), the model the demo adapts. Each record must describe the training the repository
would run today, and the shipped model must score what its record says on a fresh synthesis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import EN_MODEL

from demo import standin, standin_free
from demo.corpus import SAMPLE_RATE, corpus_plan, plan_sha256
from enhi.evaluate import error_rates, transcribe_audio

RECORD = json.loads(standin.RECORD.read_text(encoding="utf-8"))
STAGE1 = json.loads(standin.TEMPLATES_RECORD.read_text(encoding="utf-8"))

# Written for this test (not from the corpus templates, the hand-written sentences or the free-text generator),
# spoken in validation voices that training never heard.
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


def _restore(path):
    from nemo.collections.asr.models import ASRModel

    from enhi.transplant import install_cpu_tdt_loss

    m = ASRModel.restore_from(str(path), map_location="cpu")
    install_cpu_tdt_loss(m)
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return _restore(standin.SHIPPED)


@pytest.fixture(scope="module")
def free_plan():
    """The stand-in corpus's plan (about 20 s to draw), shared by the record check and the fresh synthesis."""
    from demo import standin_corpus as sc

    return sc.plan(0)


@pytest.fixture(scope="module")
def fresh(free_plan):
    """The stand-in's three validation sets synthesized anew from the plan: (references, audio) per set, the long
    recordings joined from the fresh utterances as the corpus joins them."""
    from demo import standin_corpus as sc

    items = free_plan["en_val"] + free_plan["en_free"]
    audio = sc.render_fresh(items)  # one clean process, seeded: the same bytes on every run
    sets, k = {}, 0
    for name in ("en_val", "en_free"):
        n = len(free_plan[name])
        sets[name] = ([" ".join(x["text"] for x in item["parts"]) for item in free_plan[name]], audio[k:k + n])
        k += n
    refs = sets["en_val"][0] + sets["en_free"][0]
    audio = sets["en_val"][1] + sets["en_free"][1]
    groups = sc.long_groups([len(a) / SAMPLE_RATE for a in audio], 0)
    sets["en_long"] = ([" ".join(refs[j] for j in g) for g, _ in groups],
                       [sc.join([audio[j] for j in g], pauses) for g, pauses in groups])
    sets["groups"] = groups
    return sets


@pytest.fixture(scope="module")
def heard(model, fresh):
    """The shipped model's TDT transcripts of the three fresh sets, made once for the tests that read them."""
    return {name: transcribe_audio(model, fresh[name][1], batch_size=8) for name in ("en_val", "en_free", "en_long")}


def test_it_is_a_small_parakeet_with_the_real_english_tokenizer(model):
    import sentencepiece as spm

    assert standin.SHIPPED.stat().st_size + standin.TEMPLATES.stat().st_size <= 25 * 2**20
    assert type(model).__name__ == "EncDecHybridRNNTCTCBPEModel"
    enc = model.cfg.encoder
    assert enc._target_.endswith("ConformerEncoder") and enc.self_attention_model == "rel_pos"
    assert (enc.subsampling, enc.subsampling_factor, enc.d_model, enc.n_layers) == (
        "dw_striding", 8, standin_free.SIZES["d_model"], standin_free.SIZES["n_layers"])
    assert model.cfg.loss.loss_name == "tdt" and list(model.cfg.model_defaults.tdt_durations) == [0, 1, 2, 3, 4]
    assert model.joint.num_extra_outputs == 5 and hasattr(model, "ctc_decoder")
    en = spm.SentencePieceProcessor(model_file=str(EN_MODEL))
    assert [model.tokenizer.ids_to_tokens([i])[0] for i in range(model.tokenizer.vocab_size)] == [
        en.id_to_piece(i) for i in range(en.get_piece_size())]
    assert RECORD["parameters"] == sum(p.numel() for p in model.parameters())


def test_stage_one_record_matches_the_corpus_and_recipe_the_repository_has():
    """The template corpus's plan hash is that of today's text assets and voices: editing them makes it stale."""
    plan = corpus_plan(STAGE1["corpus"]["n_train"], STAGE1["corpus"]["n_val"], 0, ("en",))
    assert plan_sha256(plan) == STAGE1["corpus"]["plan_sha256"]
    assert STAGE1["command"] == standin.COMMAND and STAGE1["steps"] == standin.STEPS
    assert (STAGE1["lr"], STAGE1["warmup_steps"], STAGE1["batch_duration_s"], STAGE1["sizes"]) == (
        standin.LR, standin.WARMUP, standin.BATCH_DURATION, standin.SIZES)
    templates = _restore(standin.TEMPLATES)
    assert templates.cfg.aux_ctc.ctc_loss_weight == standin.CTC_WEIGHT
    assert {k: templates.cfg.spec_augment[k] for k in standin.SPEC_AUGMENT} == standin.SPEC_AUGMENT


def test_stage_two_record_is_the_training_the_command_runs_today(model, free_plan):
    """Starting model (by hash), stage, corpus mix and plans, loss mix and augmentation: the module's. The sittings
    cover every step once, in order, and the curve reaches the last step."""
    from demo import standin_corpus as sc

    assert RECORD["command"] == standin_free.COMMAND
    assert RECORD["first_stage"] == {"model": "assets/standin/standin_templates.nemo", "command": standin.COMMAND,
                                     "sha256": standin_free.file_sha256(standin.TEMPLATES)}
    assert RECORD["stage"] == standin_free.STAGE.__dict__ and RECORD["mix"] == standin_free.MIX
    assert RECORD["corpus_plan_sha256"] == {
        "free": sc.plan_sha256(free_plan),
        "templates": plan_sha256(corpus_plan(standin.N_TRAIN, standin.N_VAL, 0, ("en",)))}
    assert RECORD["run"] == standin_free.run_name(standin_free.STAGE, json.dumps(RECORD["corpus_plan_sha256"],
                                                  sort_keys=True), RECORD["first_stage"]["sha256"])
    assert model.cfg.aux_ctc.ctc_loss_weight == standin_free.CTC_WEIGHT == RECORD["ctc_loss_weight"]
    assert {k: model.cfg.spec_augment[k] for k in standin_free.SPEC_AUGMENT} == standin_free.SPEC_AUGMENT
    sittings = RECORD["sittings"]
    assert sittings[0]["from_step"] == 0 and sittings[-1]["to_step"] == standin_free.STAGE.steps
    assert all(a["to_step"] == b["from_step"] for a, b in zip(sittings, sittings[1:], strict=False))
    assert RECORD["val_history"][-1]["step"] == standin_free.STAGE.steps


@pytest.mark.parametrize("name", ["en_val", "en_free", "en_long"])
def test_it_scores_its_recorded_wer_on_a_fresh_synthesis(fresh, heard, name):
    wer = error_rates(fresh[name][0], heard[name])["wer"]
    # The fresh audio is seeded and spoken by one clean process, so this test gives the same number on every run;
    # the shipped corpus was synthesized unseeded, a different draw of eSpeak's noise. Measured (AMD EPYC, 2026-12-05):
    # en_val 0.152, en_free 0.788, en_long 0.646 against the record's 0.163, 0.787, 0.659; unseeded runs had moved
    # en_long by up to 0.032 from run to run, which is why the fixture is seeded.
    assert abs(wer - RECORD["scores"][name]["wer"]) <= 0.03, (name, wer, RECORD["scores"][name])


def test_long_recordings_lose_few_words_against_the_same_utterances_one_by_one(fresh, heard):
    """The stage-2 corpus has segments of up to 20 s, so a recording of several sentences loses few more words than
    its sentences one by one: 0.644 against 0.536 WER when this test was written (2026-12-04). Stage 1, trained on
    1-5 s clips only, scored 0.912 on these recordings against 0.066 and 0.886 on the two sets they join."""
    refs = fresh["en_val"][0] + fresh["en_free"][0]
    hyps = heard["en_val"] + heard["en_free"]
    used = sorted(j for g, _ in fresh["groups"] for j in g)
    one_by_one = error_rates([refs[j] for j in used], [hyps[j] for j in used])["wer"]
    long = error_rates(fresh["en_long"][0], heard["en_long"])["wer"]
    assert long <= one_by_one + 0.15, (long, one_by_one)
    assert np.mean([len(a) for a in fresh["en_long"][1]]) / SAMPLE_RATE >= 10


def test_on_sentences_written_for_this_test_it_transcribes_most_words(model, tmp_path):
    """Sentences outside every training text, in unseen voices: TDT WER 0.557, CTC CER 0.329 on the seeded audio
    (AMD EPYC, 2026-12-05; unseeded runs had scored 0.514 to 0.614 WER and once failed this bound in CI). The issue's targets (on free sentences TDT WER <= 0.35 and CTC CER <= 0.15,
    on template sentences WER <= 0.08) are NOT met: see the record's scores and worst transcripts (the TDT head
    drops whole stretches that the CTC head spells). This bounds where the shipped model is, so a regression
    fails."""
    from demo.corpus import VOICES, render
    from demo.text import normalize_text
    from enhi.manifest import load_audio

    voices = VOICES["en"]["val"]
    # Seeded, each voice spoken by a clean process (demo.corpus.render): the same audio, so the same score, every run.
    plan = [(tmp_path / f"{i}.wav", "en", {"source": s, "voice": voices[i % len(voices)], "rate": 160, "pitch": 50,
                                           "pitch_range": 50}) for i, s in enumerate(UNSEEN)]
    render(plan)
    audio = [load_audio(str(path)) for path, _, _ in plan]
    refs = [normalize_text(s, "en") for s in UNSEEN]
    tdt = error_rates(refs, transcribe_audio(model, audio))
    ctc = error_rates(refs, transcribe_audio(model, audio, decoder="ctc"))
    assert tdt["wer"] <= 0.6 and ctc["cer"] <= 0.42, (tdt, ctc)
