"""Non-finite loss or gradients: the step is skipped (weights and optimizer state untouched) and counted; a run
of them stops training with a clear message. First on a one-layer module where the bad steps are chosen, then
through the real recipe with audio that contains NaN samples."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import MERGED_DIR, ROOT

from demo.common import DEMO_SETTINGS
from enhi.errors import UserError
from enhi.resilience import NonFiniteGuard


class Toy(pl.LightningModule):
    """Linear regression; `bad_loss` steps return a NaN loss, `bad_grad` steps a finite loss with NaN grads."""

    def __init__(self, bad_loss=(), bad_grad=()):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)
        self.bad_loss, self.bad_grad = set(bad_loss), set(bad_grad)
        self.before: dict[int, torch.Tensor] = {}  # weights at the start of each step
        self.after: dict[int, torch.Tensor] = {}

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.parameters()]).clone()

    def training_step(self, batch, batch_idx):
        step = self.trainer.global_step
        self.before[step] = self._flat()
        x, y = batch
        out = self.lin(x)
        if step in self.bad_grad:
            out.register_hook(lambda g: g * float("nan"))
        loss = torch.nn.functional.mse_loss(out, y)
        return loss * float("nan") if step in self.bad_loss else loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.after[self.trainer.global_step - 1] = self._flat()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def _fit(model: Toy, steps: int, max_consecutive: int) -> NonFiniteGuard:
    guard = NonFiniteGuard(max_consecutive)
    trainer = pl.Trainer(max_steps=steps, callbacks=[guard], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model)
    return guard


def test_bad_steps_are_skipped_and_counted():
    model = Toy(bad_loss={2, 5}, bad_grad={3})
    guard = _fit(model, steps=8, max_consecutive=3)
    assert guard.skipped == 3 and guard.consecutive == 0
    for step in range(8):
        unchanged = torch.equal(model.before[step], model.after[step])
        assert unchanged == (step in {2, 3, 5}), step
    assert torch.isfinite(model._flat()).all()
    # AdamW's own step counter saw only the five good steps: the moments were not touched either.
    opt = model.trainer.optimizers[0]
    assert {int(s["step"]) for s in opt.state.values()} == {5}


def test_a_run_of_bad_steps_stops_training_with_the_weights_intact():
    model = Toy(bad_loss={2, 3, 4, 5})
    with pytest.raises(UserError, match=r"training stopped at step 4: 3 steps in a row had non-finite loss"):
        _fit(model, steps=8, max_consecutive=3)
    assert torch.equal(model._flat(), model.after[1])  # the weights of the last good step


def _nan_wav(path, seconds=1.5):
    a = 0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32)
    a[1000:1100] = np.nan
    sf.write(path, a, 16000, subtype="FLOAT")
    return str(path)


def test_nan_audio_in_the_real_recipe(standin_nemo, small_corpus, tmp_path):
    from enhi.config import load_run_config
    from enhi.training import configure_model, fit, load_model
    from enhi.transplant import change_vocabulary

    nan_line = {"audio_filepath": _nan_wav(tmp_path / "nan.wav"), "duration": 1.5, "text": "hello"}
    mixed = tmp_path / "mixed.json"
    english = small_corpus["en_train"].read_text(encoding="utf-8")
    # Unshuffled, the NaN utterance is in the first batch only: the 48 others fill more than the 6 steps below.
    assert sum(json.loads(line)["duration"] for line in english.splitlines()) > 6 * 12
    mixed.write_text(json.dumps(nan_line) + "\n" + english, encoding="utf-8")
    only_nan = tmp_path / "only_nan.json"
    only_nan.write_text((json.dumps(nan_line) + "\n") * 8, encoding="utf-8")

    def run(manifest, steps):
        _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [
            f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}",
            f"model.train_ds.manifests=[{{path: {manifest}, lang: en}}]", "model.train_ds.batch_duration=12",
            "model.train_ds.num_buckets=1", "model.train_ds.shuffle=false", f"trainer.max_steps={steps}", "trainer.val_check_interval=1000",
            "max_consecutive_nonfinite=3", f"exp_manager.exp_dir={tmp_path / 'runs'}", f"exp_manager.name={manifest.stem}",
        ])
        model = load_model(cfg)
        change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True)
        configure_model(model, cfg, bnb_optim=False)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            trainer, _, _ = fit(model, cfg)
        except UserError as e:
            return model, start, None, str(e)
        return model, start, trainer, None

    # Six steps of 12 s: the first batch holds the NaN utterance, the other five are clean.
    model, start, trainer, err = run(mixed, 6)
    assert err is None and trainer.global_step == 6
    guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteGuard))
    assert guard.skipped == 1
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert trainer.logged_metrics["nonfinite_skipped"] == 1

    model, start, trainer, err = run(only_nan, 8)
    assert err is not None and "3 steps in a row had non-finite loss or gradients" in err
    state = model.state_dict()
    assert all(torch.equal(start[k], state[k]) for k in start)  # not one weight moved
