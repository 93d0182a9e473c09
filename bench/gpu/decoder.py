"""The `decoder-ladder` part: NeMo's greedy TDT decoder in every CUDA-graph mode, in one process, on the unadapted
110m-shaped model (random weights) and the same utterances, from the safest step to the riskiest.

Why: the one GPU fine-tune so far died of an illegal memory access at its first transcription, inside NeMo's
label-looping decoder with its default CUDA graphs. The steps tell the causes apart: the encoder alone (then a
synchronize, so an earlier fault shows here), then decoding with graphs disabled, NeMo's `no_graphs`,
`no_while_loops` and `full_graph` forced (no silent fallback), then NeMo's own choice, as the fine-tune part and
a user's `transcribe` get it. A CUDA fault leaves the context unusable, so every later step is recorded as not
run. Transcripts must agree with the graph-free decoder's; the safe modes (ran, same transcripts) and the fastest
of them are what the recipe's default (`enhi.decoding.DEFAULT_DECODER_CUDA_GRAPHS`) is set from.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.gpu.common import ROOT, PartLog, Sizes, is_cuda_fault, quiet_nemo, sync, versions

LADDER = ("encoder", "disabled", "no_graphs", "no_while_loops", "full_graph", "nemo")


def ladder_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The safe decoding modes (ran, transcripts equal to the graph-free decoder's) and the fastest of them."""
    safe = [r for r in rows if r["step"] != "encoder" and r["status"] == "ok" and r.get("same_as_disabled")]
    fastest = min(safe, key=lambda r: r["wall_s"])["step"] if safe else None
    return {"safe": [r["step"] for r in safe], "fastest_safe": fastest,
            "failed": [r["step"] for r in rows if r["status"].startswith("failed")]}


def run_ladder(model: Any, audios: list, batch: int, log: PartLog, steps: tuple[str, ...] = LADDER) -> list[dict[str, Any]]:
    """Each step of the ladder on `model` and `audios`; one row per step (status, wall seconds, transcripts equal
    to the disabled mode's, the whole traceback of a failure)."""
    import torch

    from enhi.decoding import decoder_cuda_graphs, nemo_log_buffer_intact, set_decoder_cuda_graphs
    from enhi.evaluate import audio_batch, transcribe_audio

    device = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    reference: list[str] | None = None
    lost = None  # the step after which the CUDA context was lost
    for step in steps:
        row: dict[str, Any] = {"step": step}
        rows.append(row)
        if lost is not None:
            row["status"] = f"not run: CUDA context lost at {lost}"
            continue
        t0 = time.perf_counter()
        try:
            if step == "encoder":
                with torch.no_grad():
                    for i in range(0, len(audios), batch):
                        sig, lens = audio_batch(audios[i : i + batch], device)
                        model.forward(input_signal=sig, input_signal_length=lens)
            else:
                set_decoder_cuda_graphs(model, step)
                row["mode_in_force"] = decoder_cuda_graphs(model)
                texts = transcribe_audio(model, audios, batch)
                row["same_as_disabled"] = texts == reference if reference is not None else True
                row["chars"] = sum(map(len, texts))
                if step == "disabled":
                    reference = texts
            sync()
            row["status"] = "ok"
        except Exception as exc:
            row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            row["traceback"] = traceback.format_exc()  # the whole chain, causes included
            if is_cuda_fault(row["traceback"]):
                lost = step
        row["wall_s"] = round(time.perf_counter() - t0, 4)
        # NeMo 3.0.0's NVRTC bug shows as a NUL in its one-byte constant (enhi/decoding.py); watch it at every step.
        row["space_byte_intact"] = nemo_log_buffer_intact()
        log.note(f"{step}: {row['status']} ({row['wall_s']:.2f} s"
                 + ("" if row.get("same_as_disabled", True) else ", transcripts DIFFER from disabled") + ")")
        log.put(rows=rows)
    return rows


def part_decoder_ladder(sz: Sizes, log: PartLog, deadline: float) -> None:
    import torch

    from bench.gpu.finetune import _build
    from demo.corpus import build_corpus
    from enhi.decoding import apply_nemo_workarounds
    from enhi.manifest import load_audio, read_manifest
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="gpu_check_ladder_"))
    try:
        log.put(device=device, versions=versions(), nemo_workarounds=list(apply_nemo_workarounds()))
        info = build_corpus(work / "corpus", n_train_per_lang=sz.n_train_per_lang, n_val_per_lang=sz.n_val_per_lang, seed=0)
        entries = [e for key in ("en_train", "hi_train") for e in read_manifest(info["manifests"][key])]
        audios = sorted((load_audio(e.audio_filepath) for e in entries), key=len)[-sz.transcribe_n:]
        quiet_nemo()
        en_dir = write_nemo_tokenizer_folder(ROOT / "assets" / "tokenizers" / "en1024" / "tokenizer.model", work / "en1024")
        model = _build(sz, en_dir, device)
        log.note(f"{len(audios)} utterances, {sum(map(len, audios)) / 16000:.0f} s, {sz.model} model on {device}")
        rows = run_ladder(model, audios, 16, log)
        verdict = ladder_verdict(rows)
        log.put(rows=rows, **verdict)
        agree = all(r.get("same_as_disabled", True) for r in rows if r["status"] == "ok")
        log.finish(("ok" if not verdict["failed"] and agree else "failed")
                   + f": safe {', '.join(verdict['safe']) or 'none'}; fastest safe {verdict['fastest_safe']}"
                   + (f"; failed {', '.join(verdict['failed'])}" if verdict["failed"] else "")
                   + ("" if agree else "; transcripts differ between modes"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
