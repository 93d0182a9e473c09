"""The `finetune` part: a 110m-shaped model (random weights) adapted with the vocabulary transplant and fine-tuned
through the recipe's own `fit` with AdamW and with bitsandbytes AdamW8bit (median step time, peak GPU memory,
optimizer state, the TDT loss that ran), then transcription RTFx of the adapted models against the unadapted one."""

from __future__ import annotations

import gc
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.gpu.common import ROOT, PartLog, Sizes, median, quiet_nemo, sync
from demo.common import DEMO_SETTINGS
from enhi.decoding import DEFAULT_DECODER_CUDA_GRAPHS, apply_nemo_workarounds, set_decoder_cuda_graphs


def tdt_loss_calls(model) -> dict[str, list[tuple[str, str]]]:
    """Record (device, dtype of acts) for each call of the two branches of the model's TDT loss dispatcher.

    `DeviceDispatchTDTLoss` picks NeMo's numba loss for CUDA tensors and the project's PyTorch loss otherwise;
    counting the calls of each branch proves which one trained the model."""
    from enhi.transplant import DeviceDispatchTDTLoss

    inner = model.loss._loss
    if not isinstance(inner, DeviceDispatchTDTLoss):
        raise AssertionError(f"the model's transducer loss is {type(inner).__name__}, not DeviceDispatchTDTLoss")
    calls: dict[str, list[tuple[str, str]]] = {"cuda_loss": [], "cpu_loss": []}

    def hook(name: str) -> Callable:
        def record(module, args, kwargs, output) -> None:
            acts = kwargs.get("acts", args[0] if args else None)
            calls[name].append((acts.device.type, str(acts.dtype).replace("torch.", "")))

        return record

    inner.cuda_loss.register_forward_hook(hook("cuda_loss"), with_kwargs=True)
    inner.cpu_loss.register_forward_hook(hook("cpu_loss"), with_kwargs=True)
    return calls


def check_tdt_loss(model, calls: dict[str, list[tuple[str, str]]], device_type: str) -> str:
    """Assert the loss that ran is NeMo's CUDA TDT loss (on CUDA) or its PyTorch equivalent (on CPU), with the
    model's durations, sigma and omega; returns a one-line description."""
    inner = model.loss._loss
    tdt = model.cfg.loss.tdt_kwargs
    durations = [int(d) for d in tdt.durations]
    if len(durations) != model.joint.num_extra_outputs:
        raise AssertionError(f"{len(durations)} configured durations, joint has {model.joint.num_extra_outputs} extra outputs")
    if [int(d) for d in model.cfg.decoding.durations] != durations:
        raise AssertionError(f"decoding durations {list(model.cfg.decoding.durations)} != loss durations {durations}")
    used, other, want = (
        ("cuda_loss", "cpu_loss", "TDTLossNumba") if device_type == "cuda" else ("cpu_loss", "cuda_loss", "TDTLossTorch")
    )
    loss = getattr(inner, used)
    if type(loss).__name__ != want:
        raise AssertionError(f"the {used} branch is {type(loss).__name__}, expected {want}")
    if [int(d) for d in loss.durations] != durations:
        raise AssertionError(f"{want} has durations {list(loss.durations)}, the model {durations}")
    for key in ("sigma", "omega"):
        if not math.isclose(float(getattr(loss, key)), float(tdt[key])):
            raise AssertionError(f"{want}.{key} = {getattr(loss, key)}, configured {tdt[key]}")
    if not calls[used] or calls[other]:
        raise AssertionError(f"loss calls: {used} {len(calls[used])}, {other} {len(calls[other])}")
    seen = sorted({f"{d} {t}" for d, t in calls[used]})
    if any(not s.startswith(device_type) for s in seen):
        raise AssertionError(f"{want} ran on {seen}, expected {device_type}")
    where = "NeMo's CUDA" if device_type == "cuda" else "the project's PyTorch (CPU stand-in for NeMo's CUDA)"
    return (f"{where} TDT loss {want}, durations {durations}, sigma {float(tdt.sigma)}, omega {float(tdt.omega)}: "
            f"{len(calls[used])} calls on {', '.join(seen)} acts, none on the other branch")


def optimizer_state_bytes(opt) -> int:
    import torch

    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def record_step_losses(model) -> list:
    """Keep each training step's loss (as a tensor: no extra GPU sync per step). `fit` builds its own trainer,
    so the loss is taken where the model returns it."""
    losses: list = []
    step = model.training_step

    def training_step(batch, batch_idx):
        out = step(batch, batch_idx)
        losses.append(out["loss"].detach())
        return out

    model.training_step = training_step
    return losses


def time_transcription(models: dict[str, Any], audios: list, reps: int, batch_size: int) -> dict[str, dict]:
    """RTFx (audio seconds / wall seconds, median of `reps`) of the recipe's greedy TDT transcription, per model.

    Each model first transcribes everything once untimed (kernels, allocator, decoder set-up); the timed passes
    then alternate between the models, so a drift of the machine (clocks, other load) hits all of them alike."""
    from enhi.evaluate import transcribe_audio

    texts = {name: transcribe_audio(m, audios, batch_size) for name, m in models.items()}
    walls: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(reps):
        for name, m in models.items():
            sync()
            t0 = time.perf_counter()
            texts[name] = transcribe_audio(m, audios, batch_size)
            sync()
            walls[name].append(time.perf_counter() - t0)
    audio_s = sum(len(a) for a in audios) / 16000
    return {
        name: {"rtfx": audio_s / statistics.median(w), "wall_s": statistics.median(w), "audio_s": audio_s,
               "chars": sum(map(len, texts[name])), "texts": texts[name]}
        for name, w in walls.items()
    }


def precision_for(device: str) -> str:
    """bf16-mixed, what `precision: auto` gives on a GPU; on a CPU (the dry run) only where the CPU can run the
    bf16 LSTM (AVX-512 BF16 or AMX), else fp32, which the recipe itself would ask for there."""
    from enhi.training import cpu_runs_bf16_lstm

    return "bf16-mixed" if device == "cuda" or cpu_runs_bf16_lstm() else "32"


def _run_config(sz: Sizes, corpus: dict[str, str], work: Path, name: str, device: str, decoder_graphs: str):
    from enhi.config import load_run_config

    overrides = [
        f"model.tokenizer.dir={ROOT / 'en1024_hi256'}",
        f"model.train_ds.manifests=[{{path: {corpus['en_train']}, lang: en}}, {{path: {corpus['hi_train']}, lang: hi}}]",
        "model.train_ds.num_buckets=1",  # a few dozen utterances: nothing to bucket
        f"trainer.max_steps={sz.steps}",
        f"trainer.val_check_interval={sz.steps}",
        # NeMo decodes a batch for its training WER every log_every_n_steps: not within these steps, whose time
        # is the optimizer step's.
        f"trainer.log_every_n_steps={sz.steps + 1}",
        f"trainer.precision={precision_for(device)}",
        f"model.decoder_cuda_graphs={decoder_graphs}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"exp_manager.exp_dir={work / 'runs'}",
        f"exp_manager.name={name}",
        "exp_manager.resume_if_exists=false",
        "exp_manager.create_tensorboard_logger=false",
        "exp_manager.create_checkpoint_callback=false",  # a 110m checkpoint write is not what is timed here
        "trainer.enable_progress_bar=false",  # the step timer measures; a bar would fill the device log
    ]
    if sz.batch_duration is not None:
        overrides.append(f"model.train_ds.batch_duration={sz.batch_duration}")
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + overrides)
    return cfg


def _build(sz: Sizes, tokenizer_dir: Path, device: str):
    """parakeet-tdt_ctc-110m's architecture (or the tiny one) from config, random weights, with the CPU path of
    its TDT loss, as `load_model` gives a real checkpoint."""
    from enhi.tiny_model import PARAKEET_110M, TINY, build_parakeet_model
    from enhi.transplant import install_cpu_tdt_loss

    model = build_parakeet_model(tokenizer_dir, seed=0, **(PARAKEET_110M if sz.model == "110m" else TINY))
    install_cpu_tdt_loss(model)
    return model.to(device)


def _fine_tune(model, cfg, optimizer: str, device: str) -> dict[str, Any]:
    import torch

    from enhi.resilience import NonFiniteGuard
    from enhi.training import configure_model, fit

    configure_model(model, cfg, bnb_optim=optimizer == "AdamW8bit")
    calls = tdt_loss_calls(model)
    losses = record_step_losses(model)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer, _, timer = fit(model, cfg, eval_at_start=False)
    wall = time.perf_counter() - t0
    values = [float(x) for x in losses]
    guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteGuard))
    opt = trainer.optimizers[0]
    # The first steps compile kernels and fill caches (a dry run's three steps keep all but the first).
    steady = timer.times[3:] if len(timer.times) > 5 else timer.times[1:]
    run = {
        "optimizer": f"{type(opt).__module__.split('.')[0]}.{type(opt).__name__}",
        "batch_duration": float(cfg.model.train_ds.batch_duration),
        "precision": str(trainer.precision),
        "steps": int(trainer.global_step),
        "median_step_s": median(steady),
        "step_s": [round(t, 4) for t in timer.times],
        "fit_wall_s": wall,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "state_bytes": optimizer_state_bytes(opt),
        "losses": values,
        "finite": bool(values) and all(math.isfinite(v) for v in values) and guard.skipped == 0,
        "nonfinite_skipped": guard.skipped,
        "loss_check": check_tdt_loss(model, calls, device),  # raises if another loss ran
    }
    if trainer.precision != cfg.trainer.precision:
        raise AssertionError(f"trained in {trainer.precision}, not {cfg.trainer.precision}")
    return run


def part_finetune(sz: Sizes, log: PartLog, deadline: float, decoder_graphs: str = DEFAULT_DECODER_CUDA_GRAPHS) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="gpu_check_finetune_"))
    try:
        _finetune_in(work, sz, log, device, decoder_graphs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finetune_in(work: Path, sz: Sizes, log: PartLog, device: str, decoder_graphs: str) -> None:
    import torch

    from demo.corpus import build_corpus
    from enhi.manifest import load_audio, read_manifest
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    t0 = time.perf_counter()
    info = build_corpus(work / "corpus", n_train_per_lang=sz.n_train_per_lang, n_val_per_lang=sz.n_val_per_lang, seed=0)
    corpus = info["manifests"]
    entries = [e for key in ("en_train", "hi_train", "en_val", "hi_val") for e in read_manifest(corpus[key])]
    # The longest ones, sorted: little padding per batch.
    audios = sorted((load_audio(e.audio_filepath) for e in entries), key=len)[-sz.transcribe_n:]
    log.put(device=device, model=sz.model, corpus={"utterances": len(entries), "hours": info["total_hours"],
                                                     "seconds_to_build": round(time.perf_counter() - t0, 1)})
    log.note(f"corpus: {len(entries)} utterances, {info['total_hours'] * 3600:.0f} s of speech")
    quiet_nemo()
    en_dir = write_nemo_tokenizer_folder(ROOT / "assets" / "tokenizers" / "en1024" / "tokenizer.model", work / "en1024")
    batch = 16  # the YAML's evaluation batch size

    # Transcription: the unadapted model against the same weights right after the transplant (which promises
    # the same greedy transcripts, so only the larger output layer can change the speed).
    from enhi.transplant import change_vocabulary

    cfgs = {o: _run_config(sz, corpus, work, o, device, decoder_graphs) for o in ("AdamW", "AdamW8bit")}
    unadapted, model = _build(sz, en_dir, device), _build(sz, en_dir, device)  # same seed: the same weights
    # Adapted as ft_110M_enhi_demo.py adapts: the transplant with the YAML's choice of new rows.
    ad = cfgs["AdamW"].model.get("adaptation")
    adapt_args = [cfgs["AdamW"].model.tokenizer.dir, True, *([ad.new_rows, ad.new_token_mass_bound] if ad else [])]
    change_vocabulary(model, *adapt_args)
    log.put(decoder_graphs=decoder_graphs, nemo_workarounds=list(apply_nemo_workarounds()))
    for m in (unadapted, model):
        set_decoder_cuda_graphs(m, decoder_graphs)
    log.note(f"greedy TDT decoder, CUDA graphs: {decoder_graphs}")
    # Both optimizers start from these weights; kept on the CPU so they do not count in the GPU memory peak.
    adapted = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    rtfx = time_transcription({"unadapted": unadapted, "adapted (transplant)": model}, audios, sz.transcribe_reps, batch)
    rtfx["adapted (transplant)"]["same_texts"] = rtfx["adapted (transplant)"]["texts"] == rtfx["unadapted"]["texts"]
    log.put(vocab=int(model.tokenizer.vocab_size), transcribe=rtfx)
    del unadapted

    runs: dict[str, Any] = {}
    for optimizer in ("AdamW", "AdamW8bit"):
        if optimizer == "AdamW8bit":
            model = _build(sz, en_dir, device)
            change_vocabulary(model, *adapt_args)  # the model as the recipe leaves it (config included)
            model.load_state_dict(adapted)  # and exactly AdamW's starting weights
        log.note(f"fine-tuning with {optimizer}: {sz.steps} steps, {cfgs[optimizer].trainer.precision}")
        runs[optimizer] = _fine_tune(model, cfgs[optimizer], optimizer, device)
        r = runs[optimizer]
        log.note(f"{optimizer}: median {r['median_step_s']:.3f} s/step, loss {r['losses'][0]:.2f} -> {r['losses'][-1]:.2f}")
        log.put(runs=runs)
        if optimizer == "AdamW":
            rtfx |= time_transcription({"fine-tuned (AdamW)": model}, audios, sz.transcribe_reps, batch)
            log.put(transcribe=rtfx)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    for r in rtfx.values():
        r.pop("texts", None)  # only needed for the comparison above
    log.put(transcribe=rtfx)
    log.finish("ok" if all(r["finite"] for r in runs.values()) else "failed: non-finite loss")
