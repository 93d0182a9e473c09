"""Regularised adapters (enhi/adapters.py): identity at step 0, pretrained weights held bit for bit while adapters
and new rows learn, NeMo's L2 term as computed independently, and a .nemo that stock NeMo restores."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import MERGED_DIR, ROOT

from demo.common import DEMO_SETTINGS
from enhi.adapters import HoldPretrained, adapter_parameters, add_adapters, bind_l2
from enhi.config import load_run_config

pytestmark = pytest.mark.xdist_group("adapters")


def _cfg(tmp_path, corpus, standin, *extra: str):
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [
        f"init_from_nemo_model={standin}",
        f"model.tokenizer.dir={MERGED_DIR}",
        "model.adaptation.new_rows=mean",
        f"model.train_ds.manifests=[{{path: {corpus['en_train']}, lang: en}}, {{path: {corpus['hi_train']}, lang: hi}}]",
        f"model.validation_ds.sets=[{{name: en, path: {corpus['en_val']}, lang: en}}]",
        "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1", "model.optim.lr=0.01",
        "trainer.max_steps=3", "trainer.val_check_interval=3", f"exp_manager.exp_dir={tmp_path}", "exp_manager.name=run",
        *extra,
    ])
    return cfg


def _adapted(cfg):
    from enhi.training import load_model
    from enhi.transplant import change_vocabulary

    model = load_model(cfg)
    change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True, new_rows="mean")
    return model


def _batch(model, manifest, n=4):
    from enhi.evaluate import audio_batch
    from enhi.manifest import load_audio, read_manifest

    entries = read_manifest(manifest)[:n]
    sig, lens = audio_batch([load_audio(e.audio_filepath) for e in entries], torch.device("cpu"))
    ids = [model.tokenizer.text_to_ids(e.text) for e in entries]
    tok = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for i, x in enumerate(ids):
        tok[i, : len(x)] = torch.tensor(x)
    return sig, lens, tok, torch.tensor([len(x) for x in ids])


def test_adapters_start_as_the_identity(standin_nemo, small_corpus, tmp_path):
    from enhi.evaluate import transcribe_audio
    from enhi.manifest import load_audio, read_manifest

    cfg = _cfg(tmp_path, small_corpus, standin_nemo)
    model = _adapted(cfg).eval()
    sig, lens, tok, tl = _batch(model, small_corpus["en_val"])
    with torch.no_grad():
        enc0, _ = model(input_signal=sig, input_signal_length=lens)
        dec0, _, _ = model.decoder(targets=tok, target_length=tl)
        j0 = model.joint.joint(enc0.transpose(1, 2), dec0.transpose(1, 2))
    audio = [load_audio(e.audio_filepath) for e in read_manifest(small_corpus["en_val"])]
    before = {d: transcribe_audio(model, audio, decoder=d) for d in ("tdt", "ctc")}
    add_adapters(model, dim=8)
    names = {n.split(".adapter_layer.")[0] for n, _ in adapter_parameters(model)}
    assert "decoder" in names and "joint" in names
    assert sum(n.startswith("encoder.layers.") for n in names) == model.cfg.encoder.n_layers
    with torch.no_grad():
        enc1, _ = model(input_signal=sig, input_signal_length=lens)
        dec1, _, _ = model.decoder(targets=tok, target_length=tl)
        j1 = model.joint.joint(enc1.transpose(1, 2), dec1.transpose(1, 2))
    assert torch.equal(enc0, enc1) and torch.equal(dec0, dec1) and torch.equal(j0, j1)
    assert {d: transcribe_audio(model, audio, decoder=d) for d in ("tdt", "ctc")} == before
    n = len(adapter_parameters(model))
    add_adapters(model, dim=8)  # a model that has them is left alone
    assert len(adapter_parameters(model)) == n


def test_l2_term_is_the_squared_change_each_adapter_makes(standin_nemo, small_corpus, tmp_path):
    """NeMo adds l2 x mean over the batch of the summed squared change; recomputed here from hooks."""
    cfg = _cfg(tmp_path, small_corpus, standin_nemo)
    model = _adapted(cfg)
    add_adapters(model, dim=8, l2=0.5)
    torch.manual_seed(0)
    for _, p in adapter_parameters(model):  # move the zero-initialised up-projections off zero
        p.data.add_(0.05 * torch.randn_like(p))
    model.train()
    model.spec_augmentation = None
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
             for n, m in model.named_modules() if n.rsplit(".", 2)[-2:-1] == ["adapter_layer"]]
    sig, lens, tok, tl = _batch(model, small_corpus["en_val"])
    from nemo.core.classes.mixins import AccessMixin

    def l2_term() -> torch.Tensor:
        seen.clear()
        AccessMixin.reset_registry(model)
        model(input_signal=sig, input_signal_length=lens)
        model.decoder(targets=tok, target_length=tl)
        return model.add_auxiliary_losses(torch.zeros(()), reset_registry=True)

    assert float(l2_term()) == 0.0  # NeMo 3.0 as it comes: the term is registered but never added
    bind_l2(model)
    total = l2_term()
    for h in hooks:
        h.remove()
    # The adapter's own output is the change the residual strategy adds (out = x + adapter(x)).
    expected = sum(0.5 * o.square().reshape(o.shape[0], -1).sum(-1).mean() for _, o in seen)
    assert len(seen) == model.cfg.encoder.n_layers + 1  # the encoder layers and the prediction network here
    assert float(total) > 0 and torch.allclose(total, expected, rtol=1e-5)


def test_training_holds_every_pretrained_weight_and_stock_nemo_and_onnx_run_it(standin_nemo, small_corpus, tmp_path,
                                                                               capsys):
    from nemo.collections.asr.models import ASRModel

    from enhi.evaluate import transcribe_audio
    from enhi.manifest import load_audio, read_manifest
    from enhi.rows import new_token_rows
    from enhi.training import configure_model, fit, load_nemo_file

    random.seed(0)
    cfg = _cfg(tmp_path, small_corpus, standin_nemo, "model.adaptation.adapter_dim=8", "model.adaptation.adapter_l2=0.01",
               "model.adaptation.encoder_lr_scale=1", "model.adaptation.heads_lr_scale=1")
    model = _adapted(cfg)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    configure_model(model, cfg, bnb_optim=False)
    adapters_at_start = {n: p.detach().clone() for n, p in adapter_parameters(model)}
    fit(model, cfg, eval_at_start=False)
    end = model.state_dict()
    rows = {id(p): r for p, r in new_token_rows(model)}
    moved = {n for n, p in model.named_parameters() if n in start and not torch.equal(start[n], p.detach())}
    for name, p in model.named_parameters():
        if name not in start:
            continue
        if id(p) in rows:  # old rows held (English tokens before the new rows; blank and durations after), new learned
            r = rows[id(p)]
            assert torch.equal(p.detach()[: r.start], start[name][: r.start]), name
            assert torch.equal(p.detach()[r.stop:], start[name][r.stop:]), f"{name}: blank/duration rows moved"
            assert not torch.equal(p.detach()[r], start[name][r]), name
        else:
            assert name not in moved, name
    for k, v in start.items():  # BatchNorm statistics (buffers) as pretrained
        if "running_" in k:
            assert torch.equal(end[k], v), k
    adapters = adapter_parameters(model)
    # every adapter tensor learned (compared with itself at the start of training, not with zero)
    assert adapters and [n for n, p in adapters if torch.equal(p.detach(), adapters_at_start[n])] == []
    joint_out = model.joint.joint_net[-1].weight
    assert joint_out.shape[0] > rows[id(joint_out)].stop  # the joint has rows after the new ones to hold

    (final,) = (tmp_path / "run").rglob("*.nemo")
    audio = [e.audio_filepath for e in read_manifest(small_corpus["en_val"])][:3]
    stock = ASRModel.restore_from(str(final), map_location="cpu")
    assert stock.is_adapter_available() and stock.get_enabled_adapters()
    texts = [h.text for h in stock.transcribe(audio, batch_size=3, verbose=False)]
    assert texts == transcribe_audio(load_nemo_file(final), [load_audio(a) for a in audio], batch_size=1)
    assert texts == transcribe_audio(model.eval(), [load_audio(a) for a in audio], batch_size=1)

    # NeMo's ONNX export (export_onnx.py) carries the adapters: its encoder gives NeMo's outputs, which differ
    # from the same encoder's with the adapters off.
    import onnxruntime as ort
    from conftest import run_main

    code, _, stderr = run_main(ROOT / "export_onnx.py", ["--model", str(final), "--out", str(tmp_path / "onnx")], capsys)
    assert code == 0, stderr[-2000:]
    from enhi.evaluate import audio_batch

    sig, lens = audio_batch([load_audio(audio[0])], torch.device("cpu"))
    with torch.no_grad():
        feats, flen = model.preprocessor(input_signal=sig, length=lens)
        want = model.encoder(audio_signal=feats, length=flen)[0]
        model.set_enabled_adapters(enabled=False)
        plain = model.encoder(audio_signal=feats, length=flen)[0]
        model.set_enabled_adapters(enabled=True)
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "encoder-model.onnx"))
    names = [i.name for i in sess.get_inputs()]
    got = torch.from_numpy(sess.run(None, dict(zip(names, [feats.numpy(), flen.numpy()], strict=True)))[0])
    err, effect = (got - want).abs().max().item(), (plain - want).abs().max().item()
    print(f"ONNX vs NeMo encoder: {err:.2e}; adapters' effect: {effect:.2e}")
    assert err < 1e-4 < effect


def test_hold_needs_adapters(standin_nemo, small_corpus, tmp_path):
    from enhi.rows import new_token_rows

    model = _adapted(_cfg(tmp_path, small_corpus, standin_nemo))
    with pytest.raises(ValueError, match="adapters"):
        HoldPretrained(model, new_token_rows(model))
