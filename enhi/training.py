"""Loading, configuring and training a hybrid TDT-CTC model from the run config (see ft_110M_enhi.yaml)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from enhi.adaptation import adaptation_callbacks, adapter_width, new_language, optimizer_param_groups
from enhi.config import sharded_sources, train_manifests
from enhi.console import StepProgressBar, open_library_log, say
from enhi.decoding import DEFAULT_DECODER_CUDA_GRAPHS, apply_nemo_workarounds, set_decoder_cuda_graphs
from enhi.errors import UserError
from enhi.evaluate import evaluate_sets, score_predictions
from enhi.language_gate import install as install_language_gate
from enhi.manifest import read_manifest
from enhi.portable import add_inference_ds_sections
from enhi.resilience import (
    AtomicCheckpointIO,
    NonFiniteGuard,
    RankAgreement,
    ResumeState,
    make_saves_atomic,
)
from enhi.text import CutText, TextNormalizer, kept_cut, normalized_entries, normalizers, settings_record
from enhi.transplant import install_cpu_tdt_loss, rebuild_transducer_loss

BNB_OPTIMIZER = "adamw8bit"


def load_model(cfg: DictConfig, map_location: str = "cpu", decoder_cuda_graphs: str | None = None):
    """The starting model from `init_from_nemo_model` (a local file) or `init_from_pretrained_model` (a hub name),
    decoding with the CUDA-graph mode `decoder_cuda_graphs` (default: the config's `model.decoder_cuda_graphs`,
    else the recipe's default; enhi/decoding.py)."""
    from nemo.collections.asr.models import ASRModel

    import birwkv7.nemo_encoder  # noqa: F401  (lets NeMo build a BiRWKV7 encoder saved in a .nemo)

    apply_nemo_workarounds()

    if cfg.init_from_nemo_model:
        model = ASRModel.restore_from(cfg.init_from_nemo_model, map_location=map_location)
    elif cfg.init_from_pretrained_model:
        try:
            model = ASRModel.from_pretrained(cfg.init_from_pretrained_model, map_location=map_location)
        except Exception as e:  # NeMo raises several types when the hub cannot be reached
            raise UserError(
                f"{cfg.init_from_pretrained_model}: could not fetch the pretrained model ({type(e).__name__}); "
                "when offline, download the .nemo elsewhere and set init_from_nemo_model instead"
            ) from None
    else:
        raise UserError("no starting model: set init_from_pretrained_model or init_from_nemo_model in the YAML")
    install_cpu_tdt_loss(model)
    install_language_gate(model)  # a .nemo saved in the gated mode (a no-op for any other)
    make_saves_atomic(model)
    add_inference_ds_sections(model.cfg)  # model.transcribe(paths) reads cfg.validation_ds (enhi.portable)
    mode = decoder_cuda_graphs or OmegaConf.select(cfg, "model.decoder_cuda_graphs", default=DEFAULT_DECODER_CUDA_GRAPHS)
    set_decoder_cuda_graphs(model, mode)
    return model


def load_nemo_file(path: str | os.PathLike, map_location: str = "cpu", decoder_cuda_graphs: str | None = None):
    """`load_model` for one local `.nemo` (the user scripts' --model); a missing, truncated or foreign file is a
    one-line error (`enhi.inputs.check_model_file`)."""
    from enhi.inputs import check_model_file

    check_model_file(Path(path))
    cfg = OmegaConf.create({"init_from_nemo_model": str(path), "init_from_pretrained_model": None})
    return load_model(cfg, map_location=map_location, decoder_cuda_graphs=decoder_cuda_graphs)


def register_bnb_optimizer() -> str:
    """Register bitsandbytes' AdamW8bit in NeMo's optimizer registry (a plain optimizer swap: no module is
    replaced, so the transplanted embedding stays as it is); returns its registry name."""
    import bitsandbytes as bnb
    from nemo.core.config.optimizers import AdamWParams
    from nemo.core.optim.optimizers import AVAILABLE_OPTIMIZERS, register_optimizer

    if BNB_OPTIMIZER not in AVAILABLE_OPTIMIZERS:
        register_optimizer(BNB_OPTIMIZER, bnb.optim.AdamW8bit, AdamWParams())
    return BNB_OPTIMIZER


def configure_model(model, cfg: DictConfig, bnb_optim: bool) -> None:
    """Apply the YAML's model settings to a loaded model: spec-augment, loss, CTC weight and optimizer."""
    from nemo.collections.asr.modules import SpectrogramAugmentation

    m = cfg.model
    make_saves_atomic(model)  # every .nemo NeMo writes for this model (exp_manager's included) appears whole
    with open_dict(model.cfg):
        model.cfg.spec_augment = OmegaConf.merge(
            {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation"}, m.spec_augment
        )
        model.spec_augmentation = SpectrogramAugmentation(**m.spec_augment)

        loss_cfg = model.cfg.get("loss") or OmegaConf.create({"loss_name": "default"})
        if loss_cfg.get("loss_name") == "tdt":
            loss_cfg.tdt_kwargs.sigma = m.loss.sigma
            loss_cfg.tdt_kwargs.omega = m.loss.omega
        model.cfg.loss = loss_cfg
        rebuild_transducer_loss(model)

        model.cfg.aux_ctc.ctc_loss_weight = m.ctc_loss_weight
        model.ctc_loss_weight = m.ctc_loss_weight

        optim = OmegaConf.to_container(m.optim, resolve=True)
        if optim["sched"].get("max_steps") is None:
            optim["sched"]["max_steps"] = int(cfg.trainer.max_steps)
        if bnb_optim:
            optim["name"] = register_bnb_optimizer()
        model.cfg.optim = optim
        width = adapter_width(cfg)
        if width > 0 and model.cfg.get("vocab_transplant") is not None:
            from enhi.adapters import add_adapters

            add_adapters(model, width, m.adaptation.adapter_l2, m.adaptation.adapter_dropout)
            if m.adaptation.gate_by_language:
                from enhi.language_gate import mark

                mark(model, new_language(cfg))
        groups = optimizer_param_groups(model, cfg)  # encoder and heads of a transplanted model at their own rates
        model.cfg.pop("optim_param_groups", None)
        if groups:
            model.cfg.optim_param_groups = groups
    # Last, after every change of layers (vocabulary, BiRWKV7, adapters): a fresh decoding in the YAML's mode.
    set_decoder_cuda_graphs(model, m.decoder_cuda_graphs)


def _input_cfg(s) -> dict[str, Any]:
    """One `model.train_ds.manifests` entry as an item of NeMo's Lhotse `input_cfg`, tagged with its language."""
    item = {"weight": float(s.weight), "tags": {"lang": s.lang}}
    if s.type == "lhotse_shar":
        return {"type": "lhotse_shar", "shar_path": str(s.path), **item}
    if s.type == "nemo_tarred":
        return {"type": "nemo_tarred", "manifest_filepath": str(s.path),
                "tarred_audio_filepaths": str(s.tarred_audio_filepaths), **item}
    return {"type": "nemo", "manifest_filepath": str(s.path), **item}


def train_ds_config(cfg: DictConfig, rank: int = 0, resumed_step: int = 0) -> dict[str, Any]:
    """NeMo's Lhotse config: the training sources mixed by weight, tagged with `lang`, bucketed by duration.

    Plain manifests are sampled in the training process (workers only load audio), so a resumed run
    fast-forwards the sampler to the exact batch, whatever `num_workers` (`enhi.resilience.ResumeState`).
    A sharded source (nemo_tarred, lhotse_shar) makes the dataset iterable: each worker reads its own stream
    of shuffled shards, seeded from `seed`, its worker id and the rank (Lhotse's "randomized"), so neither
    workers nor DDP ranks repeat each other's data; with `num_workers: 0` the stream is the training process's
    own (seed + 100000 x rank) and is fast-forwarded on resume like a sampler. With workers it cannot be: a
    resumed run (`resumed_step` > 0) draws a new stream from seed + resumed_step instead of replaying the
    batches before the kill. Weights, optimizer, schedule and step still resume exactly; the data order not.
    """
    t = cfg.model.train_ds
    sources = train_manifests(cfg)
    iterable = sharded_sources(cfg)
    if not iterable:
        seed, shard_seed = cfg.seed, cfg.seed
    elif not streams_in_workers(cfg):
        seed, shard_seed = cfg.seed, cfg.seed + 100000 * rank
    else:
        seed, shard_seed = cfg.seed + resumed_step, "randomized"
    return {
        "use_lhotse": True,
        "input_cfg": [_input_cfg(s) for s in sources if s.weight > 0],  # weight 0: listed, not trained on
        "sample_rate": 16000,
        "batch_duration": t.batch_duration,
        "use_bucketing": t.num_buckets > 1,
        "num_buckets": t.num_buckets,
        "num_cuts_for_bins_estimate": 2000,
        "bucket_buffer_size": 2000,
        # Lhotse's background bucketing thread is not a daemon: it busy-waits and keeps the process alive
        # after training ends. Bucketing in the loader's own thread costs little at these batch sizes.
        "concurrent_bucketing": False,
        "shuffle_buffer_size": 2000,
        "min_duration": t.min_duration,
        "max_duration": t.max_duration,
        "shuffle": t.shuffle,
        "num_workers": t.num_workers,
        "seed": seed,
        "shard_seed": shard_seed,
        # NeMo refuses to mix streamed and indexed sources unless told which to make of the mix.
        "force_iterable_dataset": iterable,
    }


def streams_in_workers(cfg: DictConfig) -> bool:
    """Whether the training data is read by streams inside dataloader workers (sharded sources, `num_workers` > 0),
    which a resumed run cannot fast-forward."""
    return sharded_sources(cfg) and cfg.model.train_ds.num_workers > 0


def train_dataloader(cfg: DictConfig, resumed_step: int = 0):
    """The training dataloader NeMo builds from `train_ds_config` for one process, without a model (for benchmarks
    and tests)."""
    from nemo.collections.asr.data.audio_to_text_lhotse import LhotseSpeechToTextBpeDataset
    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config
    from nemo.collections.common.tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer(str(Path(cfg.model.tokenizer.dir) / "tokenizer.model"))
    with normalized_training_text(cfg):
        return get_lhotse_dataloader_from_config(OmegaConf.create(train_ds_config(cfg, resumed_step=resumed_step)),
                                                 global_rank=0, world_size=1, dataset=LhotseSpeechToTextBpeDataset(tok))


@contextlib.contextmanager
def normalized_training_text(cfg: DictConfig) -> Iterator[None]:
    """While NeMo builds a training loader: every source's cuts (plain, tarred, Shar) get their language's training
    text (`model.text`, enhi/text.py), and utterances the settings drop are left out. NeMo reads the sources in
    one function of its Lhotse dataloader module; the wrapped version maps and filters its cut set lazily."""
    import nemo.collections.common.data.lhotse.dataloader as nemo_loader

    text = CutText(OmegaConf.to_container(cfg.model.text, resolve=True), cfg.model.tokenizer.dir)
    original = nemo_loader.read_cutset_from_config

    def read(config):
        cuts, is_tarred = original(config)
        return cuts.map(text, apply_fn=None).filter(kept_cut), is_tarred

    nemo_loader.read_cutset_from_config = read
    try:
        yield
    finally:
        nemo_loader.read_cutset_from_config = original


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step a Lightning checkpoint was saved at (memory-mapped: the weights are not read)."""
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])


def eval_sets(spec: DictConfig, cfg: DictConfig | None = None) -> dict[str, list]:
    """The named sets of `spec` (validation_ds or test_ds). With the run config `cfg`, references are training text
    (`model.text`) and an utterance the settings drop is left out of the score, as it is out of training; without
    it, references as the manifests write them."""
    out = {}
    for s in spec.sets:
        entries = read_manifest(s.path)
        if cfg is not None:
            norm = TextNormalizer(s.lang, cfg.model.tokenizer.dir, cfg.model.text.get(s.lang))
            entries = normalized_entries(entries, norm)[0]
        out[s.name] = entries
    return out


def set_langs(spec: DictConfig) -> dict[str, str]:
    return {s.name: s.lang for s in spec.sets}


class ValidationByLanguage(pl.Callback):
    """Every `every_n_steps` training steps (and at the end), WER/CER per validation language.

    Logs `val_<name>_wer`, `val_<name>_cer` (TDT head), `val_<name>_ctc_wer`, `val_<name>_ctc_cer` (CTC head),
    `val_<name>_std_wer`, `val_<name>_std_cer` (TDT head, the language's benchmark scheme: Vistaar or the Open
    ASR Leaderboard's, enhi/scoring.py) and `val_wer` (mean TDT WER over the sets, what checkpoints rank by),
    prints one line per evaluation, keeps the last predictions, and appends each evaluation to `history_path` as
    JSON lines for plots.
    """

    def __init__(self, sets: dict[str, list], every_n_steps: int, batch_size: int, history_path: str | None = None,
                 label: str = "validation", langs: dict[str, str] | None = None):
        self.sets, self.every, self.batch_size = sets, max(1, int(every_n_steps)), batch_size
        self.langs = langs or {}
        self.history_path, self.label = history_path, label
        self.history: list[dict] = []
        self.last_predictions: dict[str, list[dict]] = {}
        self._last_step = -1

    def run(self, trainer: pl.Trainer, pl_module, log: bool = True) -> dict[str, float]:
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            # Each rank transcribes its share; every rank then scores the whole set, so all log the same values
            # (ModelCheckpoint on every rank ranks by them, and they must agree to save together).
            rank, world = trainer.global_rank, trainer.world_size
            mine = evaluate_sets(pl_module, {n: e[rank::world] for n, e in self.sets.items()}, self.batch_size,
                                 self.langs)
            gathered: list[dict] = [{}] * world
            torch.distributed.all_gather_object(gathered, {n: r["predictions"] for n, r in mine.items()})
            results = {n: score_predictions([p for g in gathered for p in g[n]], self.langs.get(n)) for n in self.sets}
        else:
            results = evaluate_sets(pl_module, self.sets, self.batch_size, self.langs)
        metrics = {}
        for name, r in results.items():
            metrics[f"val_{name}_wer"] = r["wer"]
            metrics[f"val_{name}_cer"] = r["cer"]
            metrics[f"val_{name}_ctc_wer"] = r["ctc_wer"]
            metrics[f"val_{name}_ctc_cer"] = r["ctc_cer"]
            if "std_wer" in r:
                metrics[f"val_{name}_std_wer"] = r["std_wer"]
                metrics[f"val_{name}_std_cer"] = r["std_cer"]
            for k in ("auto_wer", "auto_cer", "routed"):  # a gated model without the language (enhi/language_gate.py)
                if k in r:
                    metrics[f"val_{name}_{k}"] = r[k]
        metrics["val_wer"] = sum(r["wer"] for r in results.values()) / max(len(results), 1)
        self.last_predictions = {name: r["predictions"] for name, r in results.items()}
        step = trainer.global_step
        if trainer.is_global_zero:
            say(f"[{self.label}] step {step}: " + "  ".join(
                f"{name} WER {r['wer']:.3f} CER {r['cer']:.3f}"
                + (f" ({r['std_scheme']} {r['std_wer']:.3f}/{r['std_cer']:.3f})" if "std_wer" in r else "")
                for name, r in results.items()))
        if log:
            pl_module.log_dict({k: float(v) for k, v in metrics.items()}, on_step=True, on_epoch=False)
        record = {"step": step, **metrics}
        self.history.append(record)
        if self.history_path and trainer.is_global_zero:
            with open(self.history_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self._last_step = step
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sets and trainer.global_step % self.every == 0 and trainer.global_step != self._last_step:
            self.run(trainer, pl_module)


class StepTimer(pl.Callback):
    """Wall seconds per optimizer step, excluding evaluation callbacks' time as far as Lightning allows."""

    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._t)


@functools.cache
def cpu_runs_bf16_lstm() -> bool:
    """Whether this CPU's PyTorch can run a bf16 LSTM (the prediction network) forward and backward: oneDNN's
    bf16 LSTM needs AVX-512 BF16 or AMX, and on other CPUs it fails deep inside the first training step."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.randn(1, 3, 8, requires_grad=True))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def check_precision(precision: str, accelerator: str) -> None:
    """Refuse bf16 training on a CPU that cannot run it, with the setting to use instead."""
    on_cpu = accelerator == "cpu" or (accelerator in ("auto", None) and not torch.cuda.is_available())
    if on_cpu and "bf16" in str(precision) and not cpu_runs_bf16_lstm():
        raise UserError(
            f"trainer.precision={precision}: this CPU cannot run the model's bf16 LSTM (oneDNN needs AVX-512 BF16 "
            "or AMX); set trainer.precision=32 (bf16 is for GPUs; on CPU it saves little)"
        )


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A Lightning trainer from `cfg.trainer`, with NeMo's exp_manager (logs, checkpoints, resume, final .nemo)."""
    from nemo.utils.exp_manager import exp_manager

    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    t.pop("val_check_interval", None)  # consumed by ValidationByLanguage
    if t.get("precision", "auto") == "auto":
        t["precision"] = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32"
    check_precision(t["precision"], t.get("accelerator", "auto"))
    if sharded_sources(cfg) and "limit_train_batches" not in t:
        # Sharded sources are an endless stream (NeMo repeats them), so an "epoch" is whatever Lightning is told;
        # without a number NeMo would ask the stream its length. One epoch for the whole run (max_steps is
        # required for them by enhi.config).
        t["limit_train_batches"] = int(t["max_steps"]) * int(t.get("accumulate_grad_batches", 1))
    if t.get("enable_progress_bar", True):
        callbacks = [*callbacks, StepProgressBar(cfg.exp_manager.name)]
    trainer = pl.Trainer(
        **t,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # Lhotse shards data per rank itself
    )
    em = OmegaConf.to_container(cfg.exp_manager, resolve=True)
    ckpt = em.setdefault("checkpoint_callback_params", {})
    ckpt.setdefault("every_n_train_steps", int(cfg.trainer.get("val_check_interval", 50)))
    ckpt.setdefault("every_n_epochs", None)
    log_dir = exp_manager(trainer, OmegaConf.create(em))
    if trainer.is_global_zero:
        open_library_log(Path(log_dir) / "library.log")
        write_run_record(Path(log_dir), cfg)
    return trainer


def write_run_record(log_dir: Path, cfg: DictConfig) -> Path:
    """`run_record.json` in the run folder: the resolved config and the text settings each language trained with
    (`auto` spelled out). Rewritten by a resumed run, which must use the same settings to resume exactly."""
    from enhi.atomic import atomic_file

    langs = {s.lang for s in cfg.model.train_ds.manifests} | set(set_langs(cfg.model.validation_ds).values())
    record = {"config": OmegaConf.to_container(cfg, resolve=True),
              "text": settings_record(normalizers(cfg.model.text, langs, cfg.model.tokenizer.dir))}
    path = log_dir / "run_record.json"
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
    return path


def fit(
    model, cfg: DictConfig, history_path: str | None = None, eval_at_start: bool = True,
    callbacks: Sequence[pl.Callback] = (),
) -> tuple[pl.Trainer, ValidationByLanguage, StepTimer]:
    """Attach data and optimizer from the config and train; returns the trainer and the two callbacks.
    `callbacks` run after the project's own (e.g. a stop at a checkpoint for a training split over sittings)."""
    pl.seed_everything(cfg.seed, workers=True)
    # Manifests and audio are checked by enhi.datacheck.check_data, which the script runs before loading a model;
    # the validation sets are read here, before the trainer creates any folder.
    val = ValidationByLanguage(
        eval_sets(cfg.model.validation_ds, cfg),
        cfg.trainer.get("val_check_interval", 50),
        cfg.model.validation_ds.batch_size,
        history_path,
        label=cfg.exp_manager.name,
        langs=set_langs(cfg.model.validation_ds),
    )
    timer = StepTimer()
    guards = [ResumeState(), NonFiniteGuard(cfg.max_consecutive_nonfinite), RankAgreement()]
    # Adaptation first: a step's new-row scaling and the final weight average land before that step's validation.
    trainer = build_trainer(cfg, [*adaptation_callbacks(model, cfg), val, timer, *guards, *callbacks])
    model.set_trainer(trainer)
    # Only streams in workers need the resumed step (to draw new ones); exp_manager sets ckpt_path when resuming.
    resumed = checkpoint_step(trainer.ckpt_path) if trainer.ckpt_path and streams_in_workers(cfg) else 0
    with normalized_training_text(cfg):  # transcripts as model.text sets them (enhi/text.py)
        model.setup_training_data(OmegaConf.create(train_ds_config(cfg, trainer.global_rank, resumed)))
    model.setup_optimization(optim_config=model.cfg.optim)
    if val.sets and eval_at_start and not trainer.ckpt_path:  # exp_manager sets ckpt_path when resuming
        val.run(trainer, model, log=False)  # the step-0 point of the curves: the adapted model before training
    model.train()  # Lightning keeps each module's mode as found; a restored or freshly built model is in eval
    trainer.fit(model)
    # NeMo's epoch-end hook re-enables its own choice of CUDA graphs; decode after training as the YAML says.
    set_decoder_cuda_graphs(model, cfg.model.decoder_cuda_graphs)
    if val.sets and val._last_step != trainer.global_step:
        val.run(trainer, model, log=False)
    return trainer, val, timer


def save_model(model, path: str | os.PathLike) -> Path:
    """`model.save_to` under a temporary name, then renamed: the .nemo appears whole or not at all."""
    make_saves_atomic(model)
    model.save_to(str(path))
    return Path(path)


def evaluate_test_sets(model, cfg: DictConfig) -> dict[str, dict]:
    """WER/CER of the trained model on `model.test_ds.sets`, printed per set and returned."""
    sets = eval_sets(cfg.model.test_ds, cfg)
    if not sets:
        return {}
    results = evaluate_sets(model, sets, cfg.model.test_ds.batch_size, set_langs(cfg.model.test_ds))
    for name, r in results.items():
        std = f"  {r['std_scheme']}: WER {r['std_wer']:.3f}  CER {r['std_cer']:.3f}" if "std_wer" in r else ""
        print(f"test {name}: WER {r['wer']:.3f}  CER {r['cer']:.3f}{std}  ({r['n']} utterances)")
    return results
