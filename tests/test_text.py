"""Real transcripts: the training-text normalizer (enhi/text.py), the benchmark scores (enhi/scoring.py), the data
check's text report, `eval_nemo.py --score`, and a training run on IndicVoices-style text."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import unicodedata

import pytest
from conftest import MERGED_DIR, ROOT, run_main

from enhi.errors import UserError
from enhi.scoring import score, score_all
from enhi.text import TextNormalizer, normalized_entries

ZWJ, ZWNJ = "\u200d", "\u200c"
# IndicVoices-style Hindi transcripts (tags, danda, digits in both scripts, ZWJ, hyphen, Latin, currency)
IV_HINDI = [
    "[noise] हाँ मैं २०२४ में दिल्ली गया।",
    f"क्{ZWJ}ष ई-मेल भेजो <laugh>",
    "<unintelligible> कुछ तो",
    "मेरा computer ठीक है॥",
    "₹500 का 20% है",
    "वह 3.5 किलो लाया",
]


@pytest.fixture(scope="module")
def hi():
    return TextNormalizer("hi", MERGED_DIR)


@pytest.fixture(scope="module")
def en():
    return TextNormalizer("en", MERGED_DIR)


@pytest.fixture(scope="module")
def sp():
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(MERGED_DIR / "tokenizer.model"))


def test_iv_style_hindi_becomes_trainable_text(hi, sp):
    out = [hi(t) for t in IV_HINDI]
    assert [o.text for o in out] == [
        "हाँ मैं दो हज़ार चौबीस में दिल्ली गया",
        "क्ष ई मेल भेजो",
        None,
        "मेरा computer ठीक है",
        "पाँच सौ रुपये का बीस प्रतिशत है",
        "वह तीन दशमलव पाँच किलो लाया",
    ]
    assert out[2].dropped == "unintelligible"
    for o in out:
        if o.text is not None:
            assert sp.unk_id() not in sp.encode(o.text), o.text
    # the same lines as written do hold <unk>: what the normalizer is for
    assert sum(sp.unk_id() in sp.encode(t) for t in IV_HINDI) == len(IV_HINDI)


def test_english_keeps_what_parakeet_writes(en):
    assert en("Mr. Smith paid $20 on the 3rd of May, 2024 — it's “great”!").text == (
        "Mr. Smith paid twenty dollars on the third of May, twenty twenty four it's great!")
    assert en("[music] I'd say 20% of 1,000 is 3.5 (no).").text == (
        "I'd say twenty percent of one thousand is three point five no.")
    assert en("call 0123").text == "call zero one two three"  # a code: digit by digit
    assert en("<inaudible> yes").dropped == "unintelligible"


def test_zwj_words_stay_one_word(hi):
    word = f"क्{ZWJ}ष"
    assert hi(word).text == "क्ष" and len(hi(f"{word} और").text.split()) == 2
    for scheme in ("project", "vistaar"):
        assert score([f"{word} और"], ["क्ष और"], scheme, "hi") == {"wer": 0.0, "cer": 0.0}
    # the scheme before the fix turned the joiner into a space: two words for one
    assert score([f"{word} और"], ["क्ष और"], "project", "hi")["wer"] == 0.0
    assert score(["क् ष और"], ["क्ष और"], "project", "hi")["wer"] > 0  # a real split is still an error


def test_precomposed_and_decomposed_nukta_score_and_encode_equal(hi, sp):
    pre, dec = "\u095b\u0930\u0942\u0930", "\u091c\u093c\u0930\u0942\u0930"  # ज़रूर both ways
    assert pre != dec
    for scheme in ("project", "vistaar"):
        assert score([pre], [dec], scheme, "hi") == {"wer": 0.0, "cer": 0.0}
    assert sp.encode(hi(pre).text) == sp.encode(hi(dec).text)


@pytest.mark.parametrize(("settings", "text", "expected"), [
    ({}, "[noise] हाँ <laugh>", "हाँ"),
    ({"tags": "keep", "punctuation": "keep"}, "[noise] हाँ", "noise हाँ"),  # no piece writes a bracket
    ({}, "<unintelligible> हाँ", None),
    ({"unintelligible": "strip"}, "<unintelligible> हाँ", "हाँ"),
    ({"unintelligible": "strip"}, "[Unintelligible] हाँ", "हाँ"),
    ({"digits": "drop_utterance"}, "२ बजे", None),
    ({"digits": "keep", "unwritable": "delete"}, "२ बजे", "बजे"),
    ({"latin": "strip"}, "मेरा computer ठीक", "मेरा ठीक"),
    ({"latin": "drop_utterance"}, "मेरा computer ठीक", None),
    ({"joiners": "keep", "unwritable": "delete"}, f"क्{ZWJ}ष", "क्ष"),  # the tokenizer cannot write a ZWJ
    ({}, "ॲ बात", None),
    ({"unwritable": "delete"}, "ॲ बात", "बात"),
    ({}, "। ॥ [noise]", None),
])
def test_settings_do_what_they_say(settings, text, expected):
    assert TextNormalizer("hi", MERGED_DIR, settings)(text).text == expected


def test_devanagari_digits_never_crash_and_verbalize_fully(hi, sp):
    digits = "०१२३४५६७८९"
    for n in [*range(0, 1200, 7), 99999, 100000, 1234567, 10**9, 10**12 + 7, 2024]:
        deva = "".join(digits[int(d)] for d in str(n))
        for written in (deva, str(n), f"{deva}.५", f"₹{deva}", f"{deva}%", f"0{deva}"):
            out = hi(f"कुल {written} हैं").text
            assert out and not any(c.isdigit() for c in out), (written, out)
            assert sp.unk_id() not in sp.encode(out), (written, out)


def test_default_output_for_devanagari_and_ascii_never_holds_unk(hi, en, sp):
    chars = [chr(c) for c in range(0x0900, 0x0980)] + [chr(c) for c in range(0x20, 0x7F)]
    for norm in (hi, en):
        for ch in chars:
            for text in (ch, f"क{ch}", f"अब {ch} तो", f"a{ch}b c"):
                out = norm(text).text
                if out is not None:
                    assert sp.unk_id() not in sp.encode(out), (norm.lang, repr(text), out)
        # nothing that the tokenizer writes is lost: a Devanagari letter stays
        assert norm("अब क तो").text == "अब क तो"


def _vistaar_reference(refs, hyps, lang):
    """Vistaar's evaluation.py, step by step, with its packages (indic-nlp, jiwer)."""
    import re

    import jiwer
    from indicnlp.normalize.indic_normalize import IndicNormalizerFactory

    def norm(s):
        s = s.translate(str.maketrans("", "", string.punctuation + "।۔'-॥"))
        s = IndicNormalizerFactory().get_normalizer(lang).normalize(s)
        return re.sub(" +", " ", s)

    r, h = [norm(x) or "<empty>" for x in refs], [norm(x) for x in hyps]
    return {"wer": jiwer.wer(r, h), "cer": jiwer.cer(r, h)}


def _whisper_reference(refs, hyps):
    """The Open ASR Leaderboard's English scoring: Whisper's normalizer, empty references left out, jiwer."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    n = EnglishTextNormalizer()
    pairs = [(n(r), n(h)) for r, h in zip(refs, hyps, strict=True) if n(r).strip()]
    return {"wer": jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]),
            "cer": jiwer.cer([r for r, _ in pairs], [h for _, h in pairs])}


HI_PAIRS = [
    ("यह २०२४ में हुआ।", "यह 2024 में हुआ"),
    ("ई-मेल भेजो, जल्दी!", "ईमेल भेजो जल्दी"),
    (f"क्{ZWJ}षमा करें", "क्षमा करे"),
    ("\u095bरूर आना", "\u091c\u093cरूर आओ ना"),
    ("हाँ, हां", "हां हाँ"),
    ("राम's घर", "राम घर"),
    ("मैं  घर गया", "मै घर  गया"),
]
EN_PAIRS = [
    ("Mr. Smith paid $20.", "mister smith paid twenty dollars"),
    ("It's the colour of 3rd-rate paint, uh, honestly.", "its the color of third rate paint honestly"),
    ("[noise] OK, 100%!", "okay a hundred percent"),
    ("Twenty-five people came.", "25 people came"),
]


def test_vistaar_and_whisper_schemes_match_the_reference_procedures():
    refs, hyps = zip(*HI_PAIRS, strict=True)
    ours, ref = score(refs, hyps, "vistaar", "hi"), _vistaar_reference(refs, hyps, "hi")
    assert ours == pytest.approx(ref, abs=1e-12) and ours["wer"] > 0
    refs, hyps = zip(*EN_PAIRS, strict=True)
    ours, ref = score(refs, hyps, "whisper", "en"), _whisper_reference(refs, hyps)
    assert ours == pytest.approx(ref, abs=1e-12) and ours["wer"] > 0
    # the schemes differ where they should: Vistaar deletes a hyphen, the project's scheme spaces it
    assert score(["ई-मेल"], ["ईमेल"], "vistaar", "hi")["wer"] == 0 < score(["ई-मेल"], ["ईमेल"], "project", "hi")["wer"]
    assert score(["Mr. Smith"], ["mister smith"], "whisper", "en")["wer"] == 0
    assert score(["Mr. Smith"], ["mister smith"], "project", "en")["wer"] == 0.5


def test_the_golden_check_fails_on_a_broken_scheme(monkeypatch):
    """The comparison above can fail: a scheme that spaces punctuation instead of deleting it disagrees."""
    import enhi.scoring as scoring

    monkeypatch.setattr(scoring, "_VISTAAR_DELETE", {ord(c): " " for c in string.punctuation + "।॥"})
    refs, hyps = zip(*HI_PAIRS, strict=True)
    assert score(refs, hyps, "vistaar", "hi") != pytest.approx(_vistaar_reference(refs, hyps, "hi"), abs=1e-12)


def test_eval_nemo_rescores_a_predictions_file(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    rows = [{"text": r, "pred_text": h, "lang": "hi"} for r, h in HI_PAIRS]
    rows += [{"text": r, "pred_text": h, "lang": "en"} for r, h in EN_PAIRS]
    preds.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, out, _ = run_main(ROOT / "eval_nemo.py", ["--score", str(preds)], capsys)
    assert code == 0
    last = json.loads(out.strip().splitlines()[-1])
    hi_refs, hi_hyps = zip(*HI_PAIRS, strict=True)
    en_refs, en_hyps = zip(*EN_PAIRS, strict=True)
    assert last == {"hi": score_all(hi_refs, hi_hyps, "hi"), "en": score_all(en_refs, en_hyps, "en")}
    assert set(last["hi"]) == {"project", "vistaar"} and set(last["en"]) == {"project", "whisper"}
    # with the manifest's own reference beside the training text: the project scores the one, Vistaar the other
    (tmp_path / "raw.jsonl").write_text(json.dumps({"text": "दो हज़ार चौबीस", "raw_text": "२०२४", "lang": "hi",
                                                    "pred_text": "दो हज़ार चौबीस"}, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    code, out, _ = run_main(ROOT / "eval_nemo.py", ["--score", str(tmp_path / "raw.jsonl")], capsys)
    assert json.loads(out.strip().splitlines()[-1])["hi"] == {"project": {"wer": 0.0, "cer": 0.0},
                                                             "vistaar": {"wer": 3.0, "cer": 3.5}}
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "pred_text": "y"}\n', encoding="utf-8")
    code, _, err = run_main(ROOT / "eval_nemo.py", ["--score", str(tmp_path / "bad.jsonl")], capsys)
    assert code == 2 and "bad.jsonl:1: missing lang" in err


def test_text_command_normalizes_stdin_lines():
    lines = "\n".join(IV_HINDI[:3]) + "\n"
    r = subprocess.run([sys.executable, "-m", "enhi.text", "--lang", "hi"], input=lines, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["हाँ मैं दो हज़ार चौबीस में दिल्ली गया", "क्ष ई मेल भेजो", ""]
    r = subprocess.run([sys.executable, "-m", "enhi.text", "--lang", "hi", "--why", "model.text.hi.digits=drop_utterance"],
                       input=lines, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.split("\n")[:3] == ["<dropped: digits>", "क्ष ई मेल भेजो", "<dropped: unintelligible>"]
    r = subprocess.run([sys.executable, "-m", "enhi.text", "--lang", "hi", "model.text.hi.digits=spell"],
                       input=lines, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "model.text.hi.digits='spell'; expected one of verbalize, drop_utterance, keep")


def test_settings_are_checked():
    with pytest.raises(UserError, match=r"model.text.hi.punct"):
        TextNormalizer("hi", MERGED_DIR, {"punct": "strip"})
    with pytest.raises(UserError, match=r"model.text.xx.digits=verbalize: no number words for 'xx'"):
        TextNormalizer("xx", MERGED_DIR)
    TextNormalizer("xx", MERGED_DIR, {"digits": "drop_utterance"})  # any language with digits dropped


def _iv_manifest(small_corpus, tmp_path):
    """IndicVoices-style transcripts on real audio of the small corpus."""
    from enhi.manifest import read_manifest, write_manifest

    base = read_manifest(small_corpus["hi_train"])
    entries = [type(base[0])(e.audio_filepath, e.duration, IV_HINDI[i % len(IV_HINDI)], "hi")
               for i, e in enumerate(base[:24])]
    path = tmp_path / "iv_hi.json"
    write_manifest(path, entries)
    return path, entries


def test_data_check_reports_the_text(small_corpus, tmp_path):
    from enhi.config import load_run_config
    from enhi.datacheck import format_summary, inspect_run

    path, entries = _iv_manifest(small_corpus, tmp_path)
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", [
        f"model.tokenizer.dir={MERGED_DIR}", f"model.train_ds.manifests=[{{path: {path}, lang: hi}}]"])
    (r,) = inspect_run(cfg)
    n = len(entries)
    per = {t: sum(e.text == t for e in entries) for t in IV_HINDI}
    assert r.dropped == {"unintelligible": per[IV_HINDI[2]]}
    assert r.changed == n - per[IV_HINDI[2]]
    assert r.tags == {"[noise]": per[IV_HINDI[0]], "<laugh>": per[IV_HINDI[1]], "<unintelligible>": per[IV_HINDI[2]]}
    assert r.digits == {"DEVANAGARI": 4 * per[IV_HINDI[0]], "ASCII": 5 * per[IV_HINDI[4]] + 2 * per[IV_HINDI[5]]}
    assert r.joiners == per[IV_HINDI[1]] and r.unk_after == 0
    from enhi.text import TAG_RE

    words = sum(len(TAG_RE.sub(" ", unicodedata.normalize("NFC", e.text)).split()) for e in entries)
    assert (r.latin_words, r.words) == (per[IV_HINDI[3]], words)
    assert r.unk_chars["।"] == per[IV_HINDI[0]] and r.unk_chars[ZWJ] == per[IV_HINDI[1]]
    text = format_summary([r])
    assert f"| train | hi | {r.changed} | {per[IV_HINDI[2]]} (unintelligible {per[IV_HINDI[2]]}) |" in text
    assert "'\\u200d'×" in text and "'॥'×" in text  # every character, not a top few
    # digits kept where no piece writes them: those utterances are dropped as unwritable, never trained as <unk>
    _, keep = load_run_config({}, ROOT / "ft_110M_enhi.yaml", [
        f"model.tokenizer.dir={MERGED_DIR}", f"model.train_ds.manifests=[{{path: {path}, lang: hi}}]",
        "model.text.hi.digits=keep"])
    (k,) = inspect_run(keep)
    assert k.dropped == {"unwritable": per[IV_HINDI[0]] + per[IV_HINDI[4]] + per[IV_HINDI[5]],
                         "unintelligible": per[IV_HINDI[2]]} and k.unk_after == 0
    # a normalizer that let <unk> through would be caught and named
    from enhi.text import Normalized

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TextNormalizer, "__call__", lambda self, text: Normalized(text))
        (broken,) = inspect_run(cfg)
    assert broken.unk_after == n and "after model.text's settings (trained as <unk>" in format_summary([broken])


@pytest.mark.parametrize("kind", ["nemo", "lhotse_shar"])
def test_training_batches_hold_normalized_text(small_corpus, tmp_path, kind):
    """The loader NeMo builds for training (plain and sharded sources): token ids without <unk>, the
    <unintelligible> utterances gone; with the normalizer's digits kept, the same loader gives <unk>."""
    from demo.common import DEMO_SETTINGS
    from enhi import shards
    from enhi.config import load_run_config
    from enhi.training import train_dataloader

    path, entries = _iv_manifest(small_corpus, tmp_path)
    source = f"{{path: {path}, lang: hi}}"
    if kind == "lhotse_shar":
        shards.write_shar(path, tmp_path / "shar", shard_size=8)
        source = f"{{type: lhotse_shar, path: {tmp_path / 'shar'}, lang: hi}}"

    def batches(*extra):
        _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [
            f"model.tokenizer.dir={MERGED_DIR}", f"model.train_ds.manifests=[{source}]", "model.train_ds.shuffle=false",
            "model.train_ds.batch_duration=1000", "model.train_ds.num_buckets=1", "trainer.max_steps=1", *extra])
        seen, ids = 0, []
        for b in train_dataloader(cfg):
            tokens, lens = b[2], b[3]
            seen += len(lens)
            ids += [tokens[i, : lens[i]].tolist() for i in range(len(lens))]
            if seen >= len(entries):
                break
        return ids

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(MERGED_DIR / "tokenizer.model"))
    ids = batches()
    texts = sorted(sp.decode(x) for x in ids)
    kept = [TextNormalizer("hi", MERGED_DIR)(e.text).text for e in entries]
    assert not any(sp.unk_id() in x for x in ids), texts
    assert set(texts) == {t for t in kept if t is not None}
    assert "कुछ तो" not in " ".join(texts)  # the <unintelligible> line is dropped
    # the same loader without the normalization (a broken wiring): <unk> in the batches, the line not dropped
    import contextlib

    from enhi import training

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "normalized_training_text", lambda cfg: contextlib.nullcontext())
        raw = batches()
    assert any(sp.unk_id() in x for x in raw) and "कुछ तो" in " ".join(sp.decode(x) for x in raw)


def test_validation_references_are_training_text_and_standard_scores_use_the_manifests(small_corpus, tmp_path):
    from enhi.evaluate import score_predictions

    path, entries = _iv_manifest(small_corpus, tmp_path)
    kept, dropped = normalized_entries(entries, TextNormalizer("hi", MERGED_DIR))
    assert dropped == {"unintelligible": sum(e.text == IV_HINDI[2] for e in entries)}
    assert all(e.raw_text in IV_HINDI and e.text != e.raw_text for e in kept)
    # a model that writes exactly the training text: 0 under the project's scheme; Vistaar, on the manifest's own
    # reference (digits as digits), counts the verbalized numbers as errors, as a benchmark would
    preds = [{"text": e.text, "raw_text": e.raw_text, "pred_text": e.text, "pred_text_ctc": e.text} for e in kept]
    r = score_predictions(preds, "hi")
    assert r["wer"] == 0 and r["std_scheme"] == "vistaar" and r["std_wer"] > 0
    assert r["std_wer"] == score([e.raw_text for e in kept], [e.text for e in kept], "vistaar", "hi")["wer"]
    assert "std_wer" not in score_predictions(preds)  # no language, no standard score


def test_a_training_run_trains_on_normalized_text_and_logs_the_standard_score(standin_nemo, small_corpus, tmp_path):
    """fit() on an IndicVoices-style manifest: every batch's token ids free of <unk>, the settings in the run
    folder's record, and validation logging Vistaar's score beside the project's."""
    import lightning.pytorch as pl

    from demo.common import DEMO_SETTINGS
    from enhi.config import load_run_config
    from enhi.training import configure_model, fit, load_model
    from enhi.transplant import change_vocabulary

    path, _ = _iv_manifest(small_corpus, tmp_path)
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [
        f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}", "model.adaptation.new_rows=mean",
        f"model.train_ds.manifests=[{{path: {path}, lang: hi}}]",
        f"model.validation_ds.sets=[{{name: hi, path: {path}, lang: hi}}]",
        "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1", "trainer.max_steps=2",
        "trainer.val_check_interval=2", f"exp_manager.exp_dir={tmp_path}", "exp_manager.name=run",
        "trainer.enable_progress_bar=false"])
    model = load_model(cfg)
    change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True, new_rows="mean")
    configure_model(model, cfg, bnb_optim=False)
    unk = model.tokenizer.tokenizer.unk_id()

    class Tokens(pl.Callback):
        ids: list[list[int]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            tokens, lens = batch[2], batch[3]
            self.ids += [tokens[i, : lens[i]].tolist() for i in range(len(lens))]

    seen = Tokens()
    _, val, _ = fit(model, cfg, callbacks=[seen])
    assert seen.ids and not any(unk in x for x in seen.ids)
    record = json.loads((tmp_path / "run" / "run_record.json").read_text(encoding="utf-8"))
    assert record["text"]["hi"]["digits"] == "verbalize" and record["text"]["hi"]["marks_kept"] == "॰"
    assert {"val_hi_std_wer", "val_hi_std_cer", "val_hi_wer"} <= set(val.history[-1])
