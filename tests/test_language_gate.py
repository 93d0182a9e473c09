"""The language-gated mode (enhi/language_gate.py): on the English path the model is the stand-in (transcripts of
both heads identical, loss equal to float rounding) at step 0 and after training; a mixed batch gates per
utterance (fused sub-batches included); the router is fit on training audio; the .nemo restores in stock NeMo on
the new-language path."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import MERGED_DIR, ROOT
from test_adapters import _cfg as adapters_cfg

from demo.common import DEMO_SETTINGS

pytestmark = pytest.mark.xdist_group("adapters")


def _cfg(tmp_path, corpus, standin, *extra: str):
    """test_adapters' run (the stand-in, the merged tokenizer, the small corpus), gated, validated in both languages."""
    return adapters_cfg(tmp_path, corpus, standin, "model.adaptation.gate_by_language=true",
                        "model.adaptation.adapter_dim=8", "model.adaptation.router_utterances=48",
                        f"model.validation_ds.sets=[{{name: en, path: {corpus['en_val']}, lang: en}}, "
                        f"{{name: hi, path: {corpus['hi_val']}, lang: hi}}]",
                        "trainer.max_steps=4", "trainer.val_check_interval=4", *extra)


def _gated(cfg):
    from enhi.training import configure_model, load_model
    from enhi.transplant import change_vocabulary

    model = load_model(cfg)
    change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True, new_rows="mean")
    configure_model(model, cfg, bnb_optim=False)
    return model


def _audio(manifest, n=None):
    from enhi.manifest import load_audio, read_manifest

    entries = read_manifest(manifest)[:n]
    return [load_audio(e.audio_filepath) for e in entries], [e.text for e in entries]


def _english_matches_standin(model, standin, audio, texts) -> None:
    from enhi.evaluate import batch_losses, transcribe_audio
    from enhi.language_gate import language_path
    from enhi.transplant import tdt_omega_off

    with language_path(model, "en"), tdt_omega_off(model):  # omega: NeMo's random switch to the plain RNN-T loss
        got = {d: transcribe_audio(model, audio, decoder=d) for d in ("tdt", "ctc")}
        loss = batch_losses(model, audio[:4], texts[:4])
    want = {d: transcribe_audio(standin, audio, decoder=d) for d in ("tdt", "ctc")}
    assert got == want
    with tdt_omega_off(standin):
        ref = batch_losses(standin, audio[:4], texts[:4])
    # Not bit-equal: the softmax runs over a longer row (the new tokens at exp(-1e4) = 0 add nothing but change
    # how the sum is blocked); measured differences are about 1e-7 relative.
    for k in ("rnnt", "ctc"):
        assert abs(loss[k] - ref[k]) <= 1e-5 * abs(ref[k]), (k, loss[k], ref[k])


def test_english_path_is_the_pretrained_model_before_and_after_training(standin_nemo, small_corpus, tmp_path, capsys):
    from nemo.collections.asr.models import ASRModel

    from enhi.evaluate import batch_losses, transcribe_audio
    from enhi.language_gate import ROUTER_FILE, language_path, route
    from enhi.manifest import read_manifest
    from enhi.training import fit, load_nemo_file
    from enhi.transplant import tdt_omega_off

    random.seed(0)
    cfg = _cfg(tmp_path, small_corpus, standin_nemo)
    standin = load_nemo_file(standin_nemo).eval()
    model = _gated(cfg)
    en_audio, en_texts = _audio(small_corpus["en_val"])
    hi_audio, hi_texts = _audio(small_corpus["hi_val"])
    _english_matches_standin(model, standin, en_audio, en_texts)
    with language_path(model, "hi"), tdt_omega_off(model):
        hi_before = batch_losses(model, hi_audio[:4], hi_texts[:4])["total"]

    fit(model, cfg, eval_at_start=False)
    _english_matches_standin(model.eval(), standin, en_audio, en_texts)
    with language_path(model, "hi"), tdt_omega_off(model):
        hi_after = batch_losses(model, hi_audio[:4], hi_texts[:4])["total"]
    assert hi_after < hi_before - 0.1, (hi_before, hi_after)  # the new-language path learned (unseen voices)

    (final,) = (tmp_path / "run").rglob("*.nemo")
    restored = load_nemo_file(final).eval()
    assert restored.cfg.language_gate.new == "hi" and restored.cfg.language_gate.router is not None
    assert (tmp_path / "run" / ROUTER_FILE).is_file()
    _english_matches_standin(restored, standin, en_audio, en_texts)
    # Stock NeMo restores the adapters enabled and no gate: the new-language path.
    stock = ASRModel.restore_from(str(final), map_location="cpu")
    files = [e.audio_filepath for e in read_manifest(small_corpus["hi_val"])]
    texts = [h.text for h in stock.transcribe(files, batch_size=4, verbose=False)]
    with language_path(restored, "hi"):
        assert texts == transcribe_audio(restored, hi_audio, batch_size=4)
    # The router the run fit (on every training utterance here) is the .nemo's: its decisions are a logistic
    # regression on the English path's (the stand-in's) time-averaged encoder output, recomputed here one utterance
    # at a time. It fits
    # this tiny model's weak features to 0.85 (chance 0.5); how it routes voices it never heard is the bench's.
    r = restored.cfg.language_gate.router
    right = 0
    for lang in ("en", "hi"):
        audio, _ = _audio(small_corpus[f"{lang}_train"])
        feats = []
        for a in audio:
            with torch.no_grad(), language_path(restored, "en"):
                enc, n = restored(input_signal=torch.tensor(a, dtype=torch.float32)[None],
                                  input_signal_length=torch.tensor([len(a)]))
            feats.append(enc[0, :, : int(n)].mean(1))  # the frames of the audio (the features are padded to 16)
        x = (torch.stack(feats) - torch.tensor(list(r.mean))) / torch.tensor(list(r.std))
        logit = (x @ torch.tensor(list(r.weight)) + r.bias).tolist()
        got = route(restored, audio)
        # Batched and one-at-a-time encoder outputs differ by float rounding (about 4e-7): only a logit at the
        # boundary could flip.
        assert [g for g, v in zip(got, logit, strict=True) if abs(v) > 0.05] == [
            "hi" if v > 0 else "en" for v in logit if abs(v) > 0.05], lang
        right += sum(g == lang for g in got)
    assert right >= 0.8 * 96, right

    # eval_nemo.py: each manifest on its language's path by default (English as the stand-in scores it), and
    # --lang auto prints how each set was routed; transcribe_long.py --lang en is the stand-in's transcript.
    import json

    from conftest import load_script

    def evaluate(model_path, *extra):
        load_script(ROOT / "eval_nemo.py").main(["--model", str(model_path), "--manifest", str(small_corpus["en_val"]),
                                                 "--manifest", str(small_corpus["hi_val"]),
                                                 "--out", str(tmp_path / "preds.jsonl"), *extra])
        return capsys.readouterr().out

    ours, theirs = evaluate(final), evaluate(standin_nemo)
    assert json.loads(ours.splitlines()[-1])["en"] == json.loads(theirs.splitlines()[-1])["en"]
    auto = evaluate(final, "--lang", "auto")
    assert any(line.startswith("en: routed to en ") for line in auto.splitlines()), auto
    wav = read_manifest(small_corpus["en_val"])[0].audio_filepath
    texts = []
    for m, extra in ((final, ["--lang", "en"]), (standin_nemo, [])):
        load_script(ROOT / "transcribe_long.py").main(["--model", str(m), "--audio", wav, "--device", "cpu", *extra])
        texts.append(capsys.readouterr().out.splitlines()[0])
    assert texts[0] == texts[1]

    # export_onnx.py --lang en exports the pretrained graph (adapters off); the default, the new language's.
    import onnxruntime as ort
    from conftest import run_main

    from enhi.evaluate import audio_batch

    sig, lens = audio_batch(en_audio[:1], torch.device("cpu"))
    with torch.no_grad():
        feats, flen = standin.preprocessor(input_signal=sig, length=lens)
        want = standin.encoder(audio_signal=feats, length=flen)[0]
    got = {}
    for lang in ("en", None):
        out = tmp_path / f"onnx_{lang}"
        code, _, err = run_main(ROOT / "export_onnx.py", ["--model", str(final), "--out", str(out),
                                                           *(["--lang", lang] if lang else [])], capsys)
        assert code == 0, err[-2000:]
        sess = ort.InferenceSession(str(out / "encoder-model.onnx"))
        names = [i.name for i in sess.get_inputs()]
        got[lang] = torch.from_numpy(sess.run(None, dict(zip(names, [feats.numpy(), flen.numpy()], strict=True)))[0])
    assert (got["en"] - want).abs().max() < 1e-4 < (got[None] - want).abs().max()


def test_a_mixed_batch_gates_each_utterance(standin_nemo, small_corpus, tmp_path):
    """Encoder, prediction network, joint (also as NeMo's fused loss runs it, in sub-batches) and CTC head: an
    utterance's outputs in a mixed batch are those of its own path, whatever shares the batch."""
    from enhi.evaluate import audio_batch, token_batch
    from enhi.language_gate import language_path, rows_gated

    model = _gated(_cfg(tmp_path, small_corpus, standin_nemo)).eval()
    torch.manual_seed(0)
    for n, p in model.named_parameters():  # adapters and new rows away from their start, so the paths differ
        if ".adapter_layer." in n:
            p.data.add_(0.2 * torch.randn_like(p))
    en_audio, en_texts = _audio(small_corpus["en_val"], 4)
    hi_audio, hi_texts = _audio(small_corpus["hi_val"], 4)
    # Hindi where English was in the second half: a sub-batch given the other one's rows would show
    rows = torch.tensor([False, True, False, True, True, False, True, False])
    audio = [(hi_audio if r else en_audio)[i // 2] for i, r in enumerate(rows)]
    texts = [(hi_texts if r else en_texts)[i // 2] for i, r in enumerate(rows)]
    sig, lens = audio_batch(audio, torch.device("cpu"))
    tr, tl = token_batch(model, texts)

    logits = []
    hook = model.joint.joint_net[-1].register_forward_hook(lambda m, i, o: logits.append(o))

    def outputs():
        logits.clear()
        with torch.no_grad():
            enc, enc_len = model(input_signal=sig, input_signal_length=lens)
            dec, _, _ = model.decoder(targets=tr, target_length=tl)
            model.joint.joint(enc.transpose(1, 2), dec.transpose(1, 2))
            ctc = model.ctc_decoder(encoder_output=enc)
        return {"enc": enc, "dec": dec, "joint": logits[0], "ctc": ctc}, enc_len

    with rows_gated(model, rows):
        mixed, enc_len = outputs()
    per_path = {}
    for lang in ("en", "hi"):
        with language_path(model, lang):
            per_path[lang] = outputs()[0]
    for b in range(len(audio)):
        want = per_path["hi" if rows[b] else "en"]
        other = per_path["en" if rows[b] else "hi"]
        for k in mixed:
            assert torch.allclose(mixed[k][b], want[k][b], atol=1e-5), (b, k)
            assert not torch.allclose(mixed[k][b], other[k][b], atol=1e-5), (b, k)  # the paths do differ

    # NeMo's fused joint as training runs it (fused_batch_size 4 here: two sub-batches, each cut to its own longest
    # utterance, each followed by the greedy decoding of the training WER) sees the rows of its sub-batch.
    logits.clear()
    with rows_gated(model, rows):
        model.joint(encoder_outputs=mixed["enc"], decoder_outputs=mixed["dec"], encoder_lengths=enc_len,
                    transcripts=tr, transcript_lengths=tl, compute_wer=True)
    hook.remove()
    logits = [x for x in logits if x.requires_grad]  # the loss's joints (the decoding's run without gradients)
    assert [x.shape[0] for x in logits] == [4, 4]
    for start, sub in zip((0, 4), logits, strict=True):
        for i in range(sub.shape[0]):
            b = start + i
            t, u = int(enc_len[b]), int(tl[b]) + 1
            want = per_path["hi" if rows[b] else "en"]["joint"][b, :t, :u]
            assert torch.allclose(sub[i, :t, :u], want, atol=1e-5), b


def test_mixed_batch_decoding_and_the_gate_is_required_to_fit(standin_nemo, small_corpus, tmp_path):
    from enhi.evaluate import transcribe_audio
    from enhi.language_gate import language_path, rows_gated

    model = _gated(_cfg(tmp_path, small_corpus, standin_nemo)).eval()
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if ".adapter_layer." in n:
            p.data.add_(0.2 * torch.randn_like(p))
    en_audio, _ = _audio(small_corpus["en_val"], 2)
    hi_audio, _ = _audio(small_corpus["hi_val"], 2)
    audio = [en_audio[0], hi_audio[0], en_audio[1], hi_audio[1]]
    rows = torch.tensor([False, True, False, True])
    for d in ("tdt", "ctc"):
        with rows_gated(model, rows):
            mixed = transcribe_audio(model, audio, batch_size=4, decoder=d)
        with language_path(model, "en"):
            en = transcribe_audio(model, audio, batch_size=4, decoder=d)
        with language_path(model, "hi"):
            hi = transcribe_audio(model, audio, batch_size=4, decoder=d)
        assert mixed == [hi[b] if rows[b] else en[b] for b in range(4)], d
    with rows_gated(model, rows), pytest.raises(RuntimeError, match="holds 4 utterances"):
        transcribe_audio(model, audio[:2], batch_size=2)


def test_two_process_ddp_run_in_the_gated_mode(standin_nemo, small_corpus, tmp_path):
    """Under DDP (two gloo processes) the router is fit once by rank 0 and read by both, the ranks stay identical,
    validation runs each set on its path (and routed), and the .nemo's English path is still the stand-in."""
    import json
    import os
    import re
    import subprocess
    import sys

    from demo.common import HISTORY_FILE
    from enhi.training import load_nemo_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "ft_110M_enhi_demo.py"), *DEMO_SETTINGS,
         f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}",
         "model.adaptation.new_rows=mean", "model.adaptation.gate_by_language=true", "model.adaptation.adapter_dim=8",
         "model.adaptation.router_utterances=16",
         f"model.train_ds.manifests=[{{path: {small_corpus['en_train']}, lang: en}}, {{path: {small_corpus['hi_train']}, lang: hi}}]",
         f"model.validation_ds.sets=[{{name: en, path: {small_corpus['en_val']}, lang: en}}, {{name: hi, path: {small_corpus['hi_val']}, lang: hi}}]",
         "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1", "model.optim.lr=0.01",
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
         "trainer.val_check_interval=2", f"exp_manager.exp_dir={tmp_path}", "exp_manager.name=ddp"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(re.findall(r"\[ddp\] 2 ranks hold identical parameters at end", r.stdout)) == 1, r.stdout[-3000:]
    run = tmp_path / "ddp"
    history = [json.loads(line) for line in (run / HISTORY_FILE).read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2]
    assert {"val_en_auto_wer", "val_hi_auto_cer", "val_en_routed", "val_hi_routed"} <= set(history[-1])
    (nemo,) = list(run.rglob("*.nemo"))
    model = load_nemo_file(nemo).eval()
    router = json.loads((run / "router.json").read_text())
    assert dict(model.cfg.language_gate.router) == router  # the one rank 0 fit, in the .nemo
    _english_matches_standin(model, load_nemo_file(standin_nemo).eval(), *_audio(small_corpus["en_val"]))
