"""Transcribe audio of any length with a NeMo ASR model (built for BiRWKV7 encoders, works with any).

``transcribe_long(model, audio, chunk_s=None)``:

* **One pass** when ``chunk_s`` is None or the audio is no longer than ``chunk_s``. With a BiRWKV7 encoder the
  encoder's memory grows linearly with length, so hours fit where attention would need quadratic memory.
  The steepest linear term was not the recurrence but NeMo's conv subsampling front end (its first conv's
  output is 64x the encoder's hidden state); the BiRWKV7 encoder evaluates it in exact time chunks at
  inference (:mod:`birwkv7.chunked_subsampling`), so the layers' own activations now set the limit.
  If that pass runs out of memory, it falls back to chunks of ``fallback_chunk_s`` (480 s by default).
* **Chunks** otherwise: the audio is cut at fixed, non-overlapping boundaries every ``chunk_s`` seconds (a
  tail shorter than ``min_tail_s`` joins the previous chunk, so no chunk is too short to subsample),
  chunks go through the model ``batch_size`` at a time, and the chunk texts are joined with one space.

Why no overlap: chunks are long (minutes), so there is one boundary every few minutes, and the only error a
hard cut can cause is at the word straddling it (split in two or dropped). An overlap would need a
merge rule (token timestamps, midpoint cut); that machinery is not worth it for one word per 8 minutes.
Stitching is therefore exact by construction: the result is the concatenation of what the model says for
each chunk alone (padding in a batch does not change a chunk's result beyond float rounding).

Reports ``duration_s``, ``wall_s`` and ``rtfx`` (= duration / wall); an optional ``progress`` callback hears
about each batch of chunks. :func:`peak_memory_bytes` measures the peak memory of a call deterministically
(CUDA allocator on GPU, the profiler's allocator events on CPU).

The command line is `transcribe_long.py` at the repository root (transcript on stdout, a progress bar over
chunks on stderr when there is more than one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tarfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enhi.errors import UserError

DEFAULT_FALLBACK_CHUNK_S = 480.0
DEFAULT_MIN_TAIL_S = 1.0

# progress(chunks_done, n_chunks, audio_seconds_done, audio_seconds_total)
ProgressFn = Callable[[int, int, float, float], None]


def model_sample_rate(model: Any) -> int:
    """The sample rate the model's preprocessor expects."""
    sr = model.cfg.get("sample_rate") or model.cfg.preprocessor.get("sample_rate")
    return int(sr)


def chunk_bounds(n_samples: int, chunk_samples: int, min_tail_samples: int = 0) -> list[tuple[int, int]]:
    """Fixed, non-overlapping [start, end) chunks covering ``n_samples``; a short tail joins the last chunk."""
    if chunk_samples <= 0:
        raise ValueError(f"chunk length must be positive, got {chunk_samples} samples")
    bounds = [(s, min(s + chunk_samples, n_samples)) for s in range(0, n_samples, chunk_samples)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_tail_samples:
        bounds.pop()
        bounds[-1] = (bounds[-1][0], n_samples)
    return bounds


def _decode(model: Any, encoded: torch.Tensor, encoded_len: torch.Tensor) -> list[str]:
    """Texts from encoder output with the model's active decoder (hybrid: ``cur_decoder``)."""
    if getattr(model, "cur_decoder", None) == "ctc":
        log_probs = model.ctc_decoder(encoder_output=encoded)
        hyps = model.ctc_decoding.ctc_decoder_predictions_tensor(
            log_probs, decoder_lengths=encoded_len, return_hypotheses=False
        )
    elif hasattr(model.decoding, "rnnt_decoder_predictions_tensor"):
        hyps = model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=encoded_len, return_hypotheses=False
        )
    else:  # a pure CTC model
        log_probs = model.decoder(encoder_output=encoded)
        hyps = model.decoding.ctc_decoder_predictions_tensor(
            log_probs, decoder_lengths=encoded_len, return_hypotheses=False
        )
    if isinstance(hyps, tuple):  # older NeMo returned (best, all)
        hyps = hyps[0]
    return [h.text if hasattr(h, "text") else str(h) for h in hyps]


def transcribe_arrays(model: Any, arrays: Sequence[np.ndarray]) -> list[str]:
    """One batched forward + decode of 1-D float arrays at the model's sample rate (zero-padded to the longest)."""
    device = next(model.parameters()).device
    lengths = [len(a) for a in arrays]
    batch = np.zeros((len(arrays), max(lengths)), dtype=np.float32)
    for i, a in enumerate(arrays):
        batch[i, : len(a)] = a
    signal = torch.from_numpy(batch).to(device)
    signal_len = torch.tensor(lengths, dtype=torch.long, device=device)
    with torch.inference_mode():
        encoded, encoded_len = model.forward(input_signal=signal, input_signal_length=signal_len)
        return _decode(model, encoded, encoded_len)


def _is_oom(e: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, oom_type) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def transcribe_long(
    model: Any,
    audio: np.ndarray | str | os.PathLike,
    chunk_s: float | None = None,
    batch_size: int = 4,
    fallback_chunk_s: float = DEFAULT_FALLBACK_CHUNK_S,
    min_tail_s: float = DEFAULT_MIN_TAIL_S,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Transcribe ``audio`` (1-D float array at the model's sample rate, or a file path) of any length.

    ``progress``, when given and the audio goes in chunks, is called with ``(0, n, 0.0, duration_s)`` before the
    first batch and with the chunks and audio seconds done after each batch.

    Returns ``{"text", "duration_s", "wall_s", "rtfx", "n_chunks", "chunk_s", "mode", "chunk_texts"}``;
    ``mode`` is "single" or "chunked", ``chunk_s`` the chunk length used (None for one pass). Wall time
    covers the model work (forward and decoding), not reading the file.
    """
    if chunk_s is not None and chunk_s <= 0:
        raise UserError(f"chunk_s must be positive, got {chunk_s}")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    sr = model_sample_rate(model)
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise UserError(f"audio array must be 1-D (mono samples), got shape {audio.shape}")
        samples = np.ascontiguousarray(audio, dtype=np.float32)
    else:
        from enhi.manifest import load_audio

        samples = load_audio(audio, sr)
    if samples.size == 0:
        raise UserError(
            "audio is empty" if isinstance(audio, np.ndarray) else f"{audio}: audio file has no samples"
        )
    duration_s = samples.size / sr

    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        mode, used_chunk_s, texts = "single", None, None
        if chunk_s is None or duration_s <= chunk_s:
            try:
                texts = transcribe_arrays(model, [samples])
            except RuntimeError as e:
                retry_s = chunk_s or fallback_chunk_s
                if not _is_oom(e) or duration_s <= retry_s:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                chunk_s = retry_s
        if texts is None:
            mode, used_chunk_s = "chunked", float(chunk_s)
            bounds = chunk_bounds(samples.size, round(chunk_s * sr), round(min_tail_s * sr))
            texts = []
            if progress is not None:
                progress(0, len(bounds), 0.0, duration_s)
            for i in range(0, len(bounds), batch_size):
                batch = bounds[i : i + batch_size]
                texts += transcribe_arrays(model, [samples[s:e] for s, e in batch])
                if progress is not None:
                    progress(len(texts), len(bounds), batch[-1][1] / sr, duration_s)
    finally:
        model.train(was_training)
    wall_s = time.perf_counter() - t0
    return {
        "text": " ".join(t.strip() for t in texts if t.strip()),
        "duration_s": duration_s,
        "wall_s": wall_s,
        "rtfx": duration_s / wall_s if wall_s > 0 else float("inf"),
        "n_chunks": len(texts),
        "chunk_s": used_chunk_s,
        "mode": mode,
        "chunk_texts": texts,
    }


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated above the starting level while ``fn()`` runs.

    CUDA: the caching allocator's peak counter. CPU: the profiler's allocator events (every allocation and
    free with the allocator's running total), which is exact and repeatable, unlike RSS.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start

    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    allocs = []
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            allocs.append(node)
        stack.extend(node.children)
    if not allocs:
        return 0
    allocs.sort(key=lambda n: n.start_time_ns)
    first = allocs[0].extra_fields
    baseline = first.total_allocated - first.alloc_size
    return max(n.extra_fields.total_allocated for n in allocs) - baseline


def format_report(result: dict[str, Any]) -> str:
    """One line: duration, wall time, RTFx and how it ran."""
    how = (
        "one pass"
        if result["mode"] == "single"
        else f"{result['n_chunks']} chunks of {result['chunk_s']:g} s"
    )
    return (
        f"duration {result['duration_s']:.1f} s, wall {result['wall_s']:.2f} s, "
        f"RTFx {result['rtfx']:.1f} ({how})"
    )


class ChunkBar:
    """A ``progress`` callback drawing a tqdm bar on stderr (stdout stays the transcript).

    Drawn only for more than one chunk: a one-pass run is one forward call with nothing to count, and a bar
    jumping from 0/1 to 1/1 says no more than the report line. Updates come once per batch of chunks (minutes
    of audio each), so every one is drawn (``mininterval=0``).
    """

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int, done_s: float, total_s: float) -> None:
        if total < 2:
            return
        audio = f"audio {done_s:.0f}/{total_s:.0f} s"
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                postfix=audio,
                bar_format="transcribing: chunk {n_fmt}/{total_fmt}{postfix} |{bar:20}| [{elapsed}<{remaining}]",
                mininterval=0,
                file=sys.stderr,
            )
        if done > self.bar.n:  # the first call only opens the bar (update(0) would draw it twice)
            self.bar.set_postfix_str(audio, refresh=False)
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _unreadable_nemo(path: Path, e: BaseException) -> UserError:
    return UserError(f"{path}: not a readable .nemo checkpoint ({e}); give a .nemo file saved by NeMo")


def check_model_file(path: Path) -> None:
    """One-line errors for a model path that is missing or not a .nemo, before the slow NeMo import."""
    if not path.exists():
        raise UserError(f"{path}: model not found; give the path of a .nemo file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the .nemo file itself")
    try:
        # A .nemo is a tar archive with model_config.yaml; listing the members also reads to the end of the
        # archive, so a truncated download fails here rather than halfway through restoring.
        with tarfile.open(path, "r:*") as tar:
            names = {os.path.basename(m.name) for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise _unreadable_nemo(path, e) from None
    if "model_config.yaml" not in names:
        raise UserError(
            f"{path}: not a NeMo checkpoint (no model_config.yaml inside); give a .nemo file saved by NeMo"
        )


def check_audio_file(path: Path) -> None:
    """One-line errors for an audio path that is missing, unreadable or empty, before the model is loaded."""
    if not path.exists():
        raise UserError(f"{path}: audio file not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give one audio file")
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for files it cannot parse
        raise UserError(f"{path}: cannot read audio ({e}); convert it to WAV or FLAC") from None
    if info.frames == 0:
        raise UserError(f"{path}: audio file has no samples")


@contextlib.contextmanager
def _quiet_library_logs() -> Iterator[None]:
    """Keep NeMo's INFO/WARNING lines (NeMo writes INFO to stdout, where the transcript goes) and the telemetry
    notes of its OneLogger dependency off the terminal while the model is imported and restored; errors still
    show."""
    one_logger = logging.getLogger("nv_one_logger")
    before = one_logger.level
    one_logger.setLevel(logging.ERROR)
    try:
        from nemo.utils import logging as nemo_logging

        with nemo_logging.temp_verbosity(logging.ERROR), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        one_logger.setLevel(before)


def load_model_quietly(path: Path, device: str) -> Any:
    """Restore a .nemo (BiRWKV7 or not) without NeMo's messages on stdout, where the transcript goes."""
    with _quiet_library_logs():
        from birwkv7.convert import restore

        try:
            return restore(path, map_location=device)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise _unreadable_nemo(path, e) from None
