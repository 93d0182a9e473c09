"""The YAML and the command line: every key reaches the model, a misspelled key is an error."""

from __future__ import annotations

import shutil

import pytest
from conftest import MERGED_DIR, ROOT

from enhi.config import load_run_config
from enhi.errors import UserError

YAML = ROOT / "ft_110M_enhi.yaml"
SWITCHES = {"bnb_optim": False, "transplant": True, "config": str(YAML)}


def _load(*argv: str, yaml=YAML):
    return load_run_config({**SWITCHES, "config": str(yaml)}, yaml, list(argv))


def test_switches_and_keys_from_the_command_line():
    sw, cfg = _load("bnb_optim=true", "transplant=false", "trainer.max_steps=77", "model.optim.lr=1e-5")
    assert sw["bnb_optim"] is True and sw["transplant"] is False
    assert cfg.trainer.max_steps == 77 and cfg.model.optim.lr == 1e-5


@pytest.mark.parametrize(
    "arg, message",
    [
        ("model.optim.lrr=1", "lrr"),
        ("model.train_ds.batch_duraton=5", "batch_duraton"),
        ("trainer.max_step=5", "unknown key trainer.max_step"),
        ("model.spec_augment.freq_mask=1", "unknown key model.spec_augment.freq_mask"),
        ("exp_manager.resume_if_exist=true", "resume_if_exist"),
        ("bnb_optim", "expected key=value"),
    ],
)
def test_unknown_or_misspelled_keys_are_errors(arg, message):
    with pytest.raises(UserError, match=message):
        _load(arg)


@pytest.mark.parametrize(
    "arg, message",
    [
        ("model.adaptation.distill_on=decoder", r"distill_on='decoder'; expected joint, ctc or encoder"),
        ("model.adaptation.distill_weight=-1", r"distill_weight=-1.0 must be >= 0"),
        ("model.adaptation.anchor_weight=-0.5", r"anchor_weight=-0.5 must be >= 0"),
        ("model.adaptation.adapter_dim=-8", r"adapter_dim=-8 must be >= 0"),
        ("model.adaptation.adapter_dropout=1.0", r"adapter_dropout=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_forgetting_settings_are_one_line_errors(arg, message):
    with pytest.raises(UserError, match=r"ft_110M_enhi.yaml: model.adaptation." + message):
        _load(arg)


def test_a_misspelled_key_in_the_yaml_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.read_text().replace("weight_decay:", "weight_decy:"))
    with pytest.raises(UserError, match=r"bad.yaml: .*weight_decy"):
        _load(yaml=bad)


def test_both_or_missing_init_models_are_errors(tmp_path):
    nemo = tmp_path / "m.nemo"
    nemo.write_bytes(b"x")
    with pytest.raises(UserError, match="both init_from_pretrained_model and init_from_nemo_model"):
        _load("init_from_pretrained_model=nvidia/parakeet-tdt_ctc-110m", f"init_from_nemo_model={nemo}")
    with pytest.raises(UserError, match="init_from_nemo_model not found"):
        _load(f"init_from_nemo_model={tmp_path / 'missing.nemo'}")


def test_every_setting_reaches_the_model(en_tok_dir, small_corpus, tmp_path):
    from enhi.tiny_model import build_parakeet_model
    from enhi.training import build_trainer, configure_model, eval_sets, train_ds_config
    from enhi.transplant import change_vocabulary

    _, cfg = _load(
        f"model.tokenizer.dir={MERGED_DIR}",
        f"model.train_ds.manifests=[{{path: {small_corpus['en_train']}, lang: en, weight: 0.3}}, "
        f"{{path: {small_corpus['hi_train']}, lang: hi, weight: 0.7}}]",
        "model.train_ds.batch_duration=33",
        "model.train_ds.num_buckets=3",
        f"model.validation_ds.sets=[{{name: english, path: {small_corpus['en_val']}, lang: en}}]",
        "model.spec_augment.freq_masks=3",
        "model.spec_augment.time_masks=4",
        "model.loss.sigma=0.05",
        "model.loss.omega=0.25",
        "model.ctc_loss_weight=0.4",
        "model.optim.lr=2e-4",
        "model.adaptation.encoder_lr_scale=0.5",
        "model.adaptation.heads_lr_scale=0.25",
        "model.optim.weight_decay=0.01",
        "model.optim.sched.warmup_steps=7",
        "trainer.max_steps=123",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=0.5",
        f"exp_manager.exp_dir={tmp_path}",
    )
    model = build_parakeet_model(en_tok_dir)
    change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True)
    configure_model(model, cfg, bnb_optim=False)
    assert model.tokenizer.vocab_size == 1278
    sa = model.spec_augmentation.spec_augment
    assert (sa.freq_masks, sa.time_masks) == (3, 4)
    inner = model.loss._loss.cuda_loss
    assert (inner.sigma, inner.omega) == (0.05, 0.25) and model.loss._loss.cpu_loss.omega == 0.25
    assert model.ctc_loss_weight == 0.4 and model.cfg.aux_ctc.ctc_loss_weight == 0.4

    trainer = build_trainer(cfg, [])
    assert (trainer.max_steps, trainer.accumulate_grad_batches, trainer.gradient_clip_val) == (123, 2, 0.5)
    model.set_trainer(trainer)
    optimizer, scheduler = model.setup_optimization(optim_config=model.cfg.optim)
    assert type(optimizer).__name__ == "AdamW"
    # NeMo's param groups: the modules not named (none here), then the encoder, then the heads.
    encoder = {id(p) for p in model.encoder.parameters()}
    for g in optimizer.param_groups:
        want = 2e-4 * (0.5 if id(g["params"][0]) in encoder else 0.25)
        assert g["initial_lr"] == pytest.approx(want) and g["weight_decay"] == 0.01
    sched = scheduler["scheduler"]
    assert sched.max_steps == 123 and sched.warmup_steps == 7  # the schedule follows trainer.max_steps

    ds = train_ds_config(cfg)
    assert [(c["weight"], c["tags"]["lang"]) for c in ds["input_cfg"]] == [(0.3, "en"), (0.7, "hi")]
    assert (ds["batch_duration"], ds["num_buckets"], ds["use_bucketing"]) == (33, 3, True)
    assert list(eval_sets(cfg.model.validation_ds)) == ["english"]


def test_bnb_optim_uses_8bit_adamw_without_touching_modules(en_tok_dir, tmp_path):
    import bitsandbytes as bnb
    import torch

    from enhi.tiny_model import build_parakeet_model
    from enhi.training import build_trainer, configure_model
    from enhi.transplant import change_vocabulary

    _, cfg = _load(f"exp_manager.exp_dir={tmp_path}", "trainer.max_steps=10")
    model = build_parakeet_model(en_tok_dir)
    change_vocabulary(model, str(MERGED_DIR), transplant=True)
    embed = model.decoder.prediction["embed"]
    rows = embed.weight.detach().clone()
    configure_model(model, cfg, bnb_optim=True)
    model.set_trainer(build_trainer(cfg, []))
    optimizer, _ = model.setup_optimization(optim_config=model.cfg.optim)
    assert isinstance(optimizer, bnb.optim.AdamW8bit)
    assert model.decoder.prediction["embed"] is embed and type(embed) is torch.nn.Embedding
    assert torch.equal(embed.weight, rows)


def test_offline_pretrained_name_gives_a_one_line_fix(tmp_path):
    from enhi.training import load_model

    _, cfg = _load("init_from_pretrained_model=nvidia/no-such-model-offline")
    with pytest.raises(UserError, match="set init_from_nemo_model instead"):
        load_model(cfg)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_an_override_that_is_not_valid_yaml_is_one_line_naming_the_argument_and_the_fix():
    arg = "model.train_ds.manifests=[{path: a.json, lang: hi, type: nemo_tarred, tarred_audio_filepaths: a_{0..3}.tar}]"
    with pytest.raises(UserError) as e:
        _load("trainer.max_steps=5", arg)
    msg = str(e.value)
    assert msg.startswith(f"argument {arg!r}: the value is not valid YAML (") and "_OP_" in msg and "\n" not in msg
    # The fix it names works: NeMo's brace pattern, or the path quoted.
    for fixed in (arg.replace("a_{0..3}.tar", "a_OP_0..3_CL_.tar"), arg.replace("a_{0..3}.tar", '"a_{0..3}.tar"')):
        _, cfg = _load("trainer.max_steps=5", fixed)
        assert cfg.model.train_ds.manifests[0].tarred_audio_filepaths in ("a_OP_0..3_CL_.tar", "a_{0..3}.tar")


def test_library_warnings_such_as_bitsandbytes_cpu_kernels_stay_off_the_terminal(capsys):
    """bitsandbytes warns on import on some CPUs ("Failed to load CPU gemm_4bit_forward ..."); the scripts route
    its logger to the run's library.log like NeMo's."""
    import logging

    from enhi.console import quiet_libraries

    quiet_libraries()
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from kernels")
    logging.getLogger("onnxruntime").warning("advice")
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
