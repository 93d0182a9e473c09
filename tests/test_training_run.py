"""A short Lightning + exp_manager run on CPU: checkpoints, the final .nemo, and resume_if_exists."""

from __future__ import annotations

import threading

from conftest import MERGED_DIR, ROOT, assert_averaged

from demo.common import DEMO_SETTINGS
from enhi.config import load_run_config


def _cfg(tmp_path, corpus, max_steps: int):
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [
        f"model.tokenizer.dir={MERGED_DIR}",
        f"model.train_ds.manifests=[{{path: {corpus['en_train']}, lang: en}}, {{path: {corpus['hi_train']}, lang: hi}}]",
        f"model.validation_ds.sets=[{{name: en, path: {corpus['en_val']}, lang: en}}, {{name: hi, path: {corpus['hi_val']}, lang: hi}}]",
        "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1",
        f"trainer.max_steps={max_steps}", "trainer.val_check_interval=3", "trainer.log_every_n_steps=3",
        f"exp_manager.exp_dir={tmp_path}", "exp_manager.name=run",
    ])
    return cfg


def test_run_logs_per_language_checkpoints_and_resumes(standin_nemo, small_corpus, tmp_path):
    from enhi.training import configure_model, fit, load_model
    from enhi.transplant import change_vocabulary

    def start(max_steps: int):
        cfg = _cfg(tmp_path, small_corpus, max_steps)
        cfg.init_from_nemo_model = str(standin_nemo)
        model = load_model(cfg)
        change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True)
        configure_model(model, cfg, bnb_optim=False)
        return fit(model, cfg, history_path=str(tmp_path / "history.jsonl"))

    trainer, val, timer = start(3)
    assert trainer.global_step == 3 and len(timer.times) == 3
    # No non-daemon thread outlives training (Lhotse's concurrent bucketer would keep the command from exiting).
    lingering = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    assert lingering == []
    assert [h["step"] for h in val.history] == [0, 3]
    assert {"val_en_wer", "val_en_cer", "val_hi_wer", "val_hi_cer", "val_wer"} <= set(val.history[-1])
    run_dir = tmp_path / "run"
    assert list(run_dir.rglob("*last.ckpt")) and list(run_dir.rglob("events.out.tfevents*"))
    # The final model, saved on train end, works in stock NeMo from file paths (its config has the inference
    # sections NeMo's transcribe reads): the transcripts the project itself makes.
    from nemo.collections.asr.models import ASRModel

    from enhi.evaluate import transcribe_audio
    from enhi.manifest import load_audio, read_manifest
    from enhi.training import load_nemo_file

    (final,) = run_dir.rglob("*.nemo")
    audio = [e.audio_filepath for e in read_manifest(small_corpus["en_val"])][:3]
    stock = ASRModel.restore_from(str(final), map_location="cpu").transcribe(audio, batch_size=3, verbose=False)
    assert [h.text for h in stock] == transcribe_audio(load_nemo_file(final), [load_audio(a) for a in audio], batch_size=1)

    # The same command with more steps continues from the checkpoint instead of starting over.
    trainer, val, timer = start(6)
    assert trainer.global_step == 6 and len(timer.times) == 3


def test_bf16_on_a_cpu_without_bf16_lstm_is_one_line_naming_the_fix(standin_nemo, small_corpus, tmp_path, monkeypatch):
    """Any CPU: where oneDNN has no bf16 LSTM, `trainer.precision=bf16-mixed` stops before training with the
    setting to use instead (simulated here, so the message is checked on every machine)."""
    import pytest

    from enhi import training
    from enhi.errors import UserError

    monkeypatch.setattr(training, "cpu_runs_bf16_lstm", lambda: False)
    cfg = _cfg(tmp_path, small_corpus, max_steps=1)
    cfg.init_from_nemo_model = str(standin_nemo)
    cfg.trainer.precision = "bf16-mixed"
    model = training.load_model(cfg)
    training.configure_model(model, cfg, bnb_optim=False)
    with pytest.raises(UserError, match=r"^trainer.precision=bf16-mixed: this CPU cannot run .*set trainer.precision=32"):
        training.fit(model, cfg, eval_at_start=False)
    assert not (tmp_path / "run").exists()  # refused before exp_manager made the run folder


def test_bf16_mixed_precision_trains(standin_nemo, small_corpus, tmp_path):
    """The precision GPU runs get by default (`precision: auto` = bf16-mixed there), run on CPU autocast: the
    model keeps fp32 master weights, the TDT loss stays fp32, and the loss is finite and moves."""
    import pytest
    import torch

    from enhi.training import cpu_runs_bf16_lstm

    if not cpu_runs_bf16_lstm():
        pytest.skip("this CPU cannot run a bf16 LSTM (oneDNN needs AVX-512 BF16 or AMX); the refusal is tested above")

    from enhi.training import configure_model, fit, load_model
    from enhi.transplant import change_vocabulary

    cfg = _cfg(tmp_path, small_corpus, max_steps=4)
    cfg.init_from_nemo_model = str(standin_nemo)
    cfg.trainer.precision = "bf16-mixed"
    cfg.trainer.log_every_n_steps = 1
    model = load_model(cfg)
    change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True)
    configure_model(model, cfg, bnb_optim=False)
    before = {k: v.clone() for k, v in model.named_parameters()}
    trainer, _, _ = fit(model, cfg, eval_at_start=False)
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 4
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert sum(not torch.equal(before[k], p) for k, p in model.named_parameters()) > 0.9 * len(before)
    assert torch.isfinite(trainer.logged_metrics["train_loss"])


def test_average_with_pretrained_is_what_the_last_validation_and_checkpoint_see(standin_nemo, small_corpus, tmp_path):
    """Two identical runs, one with average_with_pretrained=0.5: its final weights are the mean of the other's
    and the adapted model's before training (new rows as trained), and its last validation and last checkpoint
    are of those averaged weights."""
    import torch

    from enhi.evaluate import evaluate_sets
    from enhi.training import configure_model, eval_sets, fit, load_model
    from enhi.transplant import change_vocabulary

    def run(name: str, weight: float):
        cfg = _cfg(tmp_path, small_corpus, max_steps=2)
        cfg.init_from_nemo_model, cfg.exp_manager.name = str(standin_nemo), name
        cfg.trainer.val_check_interval = 2
        cfg.model.adaptation.average_with_pretrained = weight
        model = load_model(cfg)
        change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True)
        configure_model(model, cfg, bnb_optim=False)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        _, val, _ = fit(model, cfg, eval_at_start=False)
        return cfg, model, start, val

    _, trained, start, _ = run("plain_end", 0.0)
    cfg, averaged, _, val = run("averaged", 0.5)
    assert_averaged(averaged, trained, start, 0.5, atol=1e-6, rtol=1e-5)
    assert [h["step"] for h in val.history] == [2]
    fresh = evaluate_sets(averaged, eval_sets(cfg.model.validation_ds), cfg.model.validation_ds.batch_size)
    assert val.history[-1]["val_en_wer"] == fresh["en"]["wer"] and val.history[-1]["val_hi_cer"] == fresh["hi"]["cer"]
    (last,) = (tmp_path / "averaged").rglob("*last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(state[n], p.detach()) for n, p in averaged.named_parameters())
