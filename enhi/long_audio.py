"""Transcribe audio of any length with a NeMo ASR model (BiRWKV7 or attention encoder).

``transcribe_long(model, audio, mode=...)``:

* **Pauses** (``mode="pauses"``, the command line's default): the recording is cut in the middle of every pause
  (:func:`pause_segments`: quiet 10 ms frames, the threshold set from the file's own levels), each segment
  trimmed to its speech and cut again at inner gaps if longer than 20 s, and the segments go through the model
  ``batch_size`` at a time, shortest together. Why: a transducer's prediction network carries what it wrote
  before, and a model trained on single utterances stops writing after the first sentence end of a long input;
  the demo's stand-in does so on any input longer than one sentence, and also loses words after leading
  silence. Segments that are single utterances keep the per-utterance score, and their times are the
  timestamps (bench/bench_long_form.py measures both). ``pack_s`` joins segments up to that length for a model
  trained on longer segments.
* **One pass** (``"single"``). With a BiRWKV7 encoder the encoder's memory grows linearly with length, so hours
  fit where attention would need quadratic memory. The steepest linear term was not the recurrence but NeMo's
  conv subsampling front end (its first conv's output is 64x the encoder's hidden state); the BiRWKV7 encoder
  evaluates it in exact time chunks at inference (:mod:`birwkv7.chunked_subsampling`), so the layers' own
  activations now set the limit. If that pass runs out of memory, it falls back to chunks of
  ``fallback_chunk_s`` (480 s by default). Whether the decoder keeps writing over that length is the model's
  affair: the demo's stand-in does not.
* **Chunks** (``"chunked"``): the audio is cut at fixed, non-overlapping boundaries every ``chunk_s`` seconds (a
  tail shorter than ``min_tail_s`` joins the previous chunk, so no chunk is too short to subsample), and the
  chunk texts are joined with one space. A cut can split a word; pauses mode avoids that.

Reports ``duration_s``, ``wall_s`` and ``rtfx`` (= duration / wall); an optional ``progress`` callback hears
about each batch of chunks. :func:`peak_memory_bytes` measures the peak memory of a call deterministically
(CUDA allocator on GPU, the profiler's allocator events on CPU).

The command line is `transcribe_long.py` at the repository root (transcript on stdout, a progress bar over
pieces on stderr when there is more than one, segment timestamps as SRT or JSON via :func:`timestamps_text`).
"""

from __future__ import annotations

import contextlib
import copy
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
from omegaconf import OmegaConf, open_dict

from enhi.decoding import DEFAULT_DECODER_CUDA_GRAPHS, apply_nemo_workarounds, set_decoder_cuda_graphs
from enhi.errors import UserError
from enhi.inputs import unreadable_nemo
from enhi.language_gate import decoding_as

DEFAULT_FALLBACK_CHUNK_S = 480.0
DEFAULT_MIN_TAIL_S = 1.0
# Pause segmentation: a pause is a run of quiet 10 ms frames at least this long (stop closures inside words last
# tens of milliseconds); a segment longer than MAX_SEGMENT_S (what Parakeet trains on, about 20 s) is cut again
# at its longest inner pause, or in the middle when it has none. Segments are trimmed to their speech: the
# demo's stand-in, trained on clips that start with speech, loses words after leading silence (bench/RESULTS.md
# long-form: 0.2 s of it before each utterance took English WER from 0.11 to 0.42).
MIN_PAUSE_S = 0.25
MAX_SEGMENT_S = 20.0
FRAME_S = 0.01
# ... but not cut at the last loud frame: a fading vowel or a final fricative sits under the quiet threshold. A
# segment keeps PAD_AFTER_S of the quiet after it, never past the middle of its pause. Chosen on recordings of the
# demo's training utterances, not the bench's (`bench_long_form.py --pads`, 12 pads): of the two pads better than
# none on all three recordings with both encoders, this one and 0.15 s before + 0.1 s after (mean gains 0.009 and
# 0.0095, equal within noise), the one that adds no leading quiet, which the stand-in is known to mishear.
PAD_BEFORE_S = 0.0
PAD_AFTER_S = 0.1

# progress(chunks_done, n_chunks, audio_seconds_done, audio_seconds_total)
ProgressFn = Callable[[int, int, float, float], None]


def model_sample_rate(model: Any) -> int:
    """The sample rate the model's preprocessor expects."""
    sr = model.cfg.get("sample_rate") or model.cfg.preprocessor.get("sample_rate")
    return int(sr)


def chunk_bounds(n_samples: int, chunk_samples: int, min_tail_samples: int = 0,
                 overlap_samples: int = 0) -> list[tuple[int, int]]:
    """Fixed [start, end) chunks covering ``n_samples``, each starting ``chunk - overlap`` samples after the one
    before; a tail adding less than ``min_tail_samples`` of new audio joins the last chunk instead."""
    if chunk_samples <= 0:
        raise ValueError(f"chunk length must be positive, got {chunk_samples} samples")
    if not 0 <= overlap_samples < chunk_samples:
        raise ValueError(f"overlap must be at least 0 and shorter than a chunk, got {overlap_samples} samples")
    bounds = [(0, min(chunk_samples, n_samples))]
    while bounds[-1][1] < n_samples:
        start = bounds[-1][0] + chunk_samples - overlap_samples
        bounds.append((start, min(start + chunk_samples, n_samples)))
    if len(bounds) > 1 and bounds[-1][1] - bounds[-2][1] < min_tail_samples:
        bounds.pop()
        bounds[-1] = (bounds[-1][0], n_samples)
    return bounds


def merge_overlapping(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timed segments of overlapping windows (in order, each with ``words`` in seconds of the recording) as
    non-overlapping ones: the windows are cut in the middle of each overlap, and a word is kept by the window
    on whose side of the cut its middle lies, so a word heard by two windows is written once, by the one that
    heard it further from its edge."""
    cuts = [segments[0]["start"]]
    cuts += [(b["start"] + a["end"]) / 2 for a, b in zip(segments[:-1], segments[1:], strict=True)]
    cuts.append(segments[-1]["end"])
    out = []
    for i, g in enumerate(segments):
        lo, hi, last = cuts[i], cuts[i + 1], i == len(segments) - 1
        kept = [w for w in g["words"] if lo <= (w["start"] + w["end"]) / 2 and ((w["start"] + w["end"]) / 2 < hi or last)]
        out.append({"start": lo, "end": hi, "text": " ".join(w["word"] for w in kept), "words": kept})
    return out


def _decode(model: Any, encoded: torch.Tensor, encoded_len: torch.Tensor, hypotheses: bool = False) -> list:
    """Texts (or NeMo hypotheses) from encoder output with the model's active decoder (hybrid: ``cur_decoder``)."""
    if getattr(model, "cur_decoder", None) == "ctc":
        log_probs = model.ctc_decoder(encoder_output=encoded)
        hyps = model.ctc_decoding.ctc_decoder_predictions_tensor(
            log_probs, decoder_lengths=encoded_len, return_hypotheses=hypotheses
        )
    elif hasattr(model.decoding, "rnnt_decoder_predictions_tensor"):
        hyps = model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=encoded_len, return_hypotheses=hypotheses
        )
    else:  # a pure CTC model
        log_probs = model.decoder(encoder_output=encoded)
        hyps = model.decoding.ctc_decoder_predictions_tensor(
            log_probs, decoder_lengths=encoded_len, return_hypotheses=hypotheses
        )
    if isinstance(hyps, tuple):  # older NeMo returned (best, all)
        hyps = hyps[0]
    if hypotheses:
        return list(hyps)
    return [h.text if hasattr(h, "text") else str(h) for h in hyps]


def _encode(model: Any, arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    lengths = [len(a) for a in arrays]
    batch = np.zeros((len(arrays), max(lengths)), dtype=np.float32)
    for i, a in enumerate(arrays):
        batch[i, : len(a)] = a
    signal = torch.from_numpy(batch).to(device)
    signal_len = torch.tensor(lengths, dtype=torch.long, device=device)
    return model.forward(input_signal=signal, input_signal_length=signal_len)


def transcribe_arrays(model: Any, arrays: Sequence[np.ndarray]) -> list[str]:
    """One batched forward + decode of 1-D float arrays at the model's sample rate (zero-padded to the longest)."""
    with torch.inference_mode():
        return _decode(model, *_encode(model, arrays))


@contextlib.contextmanager
def _decoding_with_timestamps(model: Any) -> Iterator[None]:
    """The model's active decoder computes NeMo's timestamps inside the block (as `transcribe(timestamps=True)`
    sets it up); its decoding settings are put back afterwards. Where timestamps are on already (an outer block:
    one rebuild of the decoding per recording, not per batch) it switches nothing."""
    hybrid = hasattr(model, "cur_decoder")
    kind = model.cur_decoder if hybrid else None
    key = "aux_ctc.decoding" if kind == "ctc" else "decoding"
    saved = copy.deepcopy(OmegaConf.select(model.cfg, key))
    if saved.get("compute_timestamps", False):
        yield
        return
    cfg = copy.deepcopy(saved)
    with open_dict(cfg):
        cfg.compute_timestamps = True

    def switch(c: Any) -> None:
        if hybrid:
            model.change_decoding_strategy(c, decoder_type=kind, verbose=False)
        else:
            model.change_decoding_strategy(c, verbose=False)

    switch(cfg)
    try:
        yield
    finally:
        switch(copy.deepcopy(saved))
        with open_dict(model.cfg):  # NeMo writes its expanded defaults back into the config: keep the user's
            OmegaConf.update(model.cfg, key, saved, merge=False)


def transcribe_arrays_with_words(model: Any, arrays: Sequence[np.ndarray]) -> list[tuple[str, list[dict[str, Any]]]]:
    """As `transcribe_arrays`, with each text's words timed by the decoder (NeMo's word offsets: TDT emission
    frames and durations, or CTC frames): `(text, [{"word", "start", "end"}])`, seconds from the array's start."""
    frame_s = float(model.cfg.preprocessor.window_stride) * int(model.encoder.subsampling_factor)
    with _decoding_with_timestamps(model), torch.inference_mode():
        hyps = _decode(model, *_encode(model, arrays), hypotheses=True)
    out = []
    for h in hyps:
        words = h.timestamp.get("word", []) if isinstance(h.timestamp, dict) else []
        out.append((h.text, [{"word": w["word"], "start": w["start_offset"] * frame_s, "end": w["end_offset"] * frame_s}
                             for w in words]))
    return out


def frame_levels_db(samples: np.ndarray, sr: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of each `frame_s` frame in dB (full scale 0 dB)."""
    n = max(1, round(frame_s * sr))
    frames = samples[: samples.size // n * n].reshape(-1, n) if samples.size >= n else samples[None, :]
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def quiet_frames(levels_db: np.ndarray) -> np.ndarray:
    """Frames below a threshold set from the file itself: 35 dB under its loud speech (95th percentile), but at
    least 10 dB above its floor (1st percentile: a recording may pause for only a few percent of its frames), so
    a steady noise floor counts as quiet."""
    floor, loud = np.percentile(levels_db, 1), np.percentile(levels_db, 95)
    return levels_db < max(floor + 10.0, loud - 35.0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def pause_segments(samples: np.ndarray, sr: int, min_pause_s: float = MIN_PAUSE_S,
                   max_segment_s: float = MAX_SEGMENT_S, pack_s: float = 0.0,
                   pad_s: tuple[float, float] = (PAD_BEFORE_S, PAD_AFTER_S)) -> list[dict[str, float]]:
    """Speech segments of a recording, `{"start", "end"}` in seconds: cut in the middle of every pause of at
    least `min_pause_s`, each then trimmed to its first and last non-quiet frame (the model hears speech, not the
    pause around it) and widened by `pad_s` = (before, after) seconds of the quiet around it, within its cuts.
    Stretches with no speech are left out. `pack_s` > 0 joins neighbouring segments, pauses included, while the
    joined one stays within `pack_s` seconds (for a model trained on multi-sentence segments).
    """
    quiet = quiet_frames(frame_levels_db(samples, sr))
    n_frames, min_run = quiet.size, max(1, round(min_pause_s / FRAME_S))
    pauses = [(a, b) for a, b in _runs(quiet) if b - a >= min_run]
    cuts = [0] + [(a + b) // 2 for a, b in pauses if 0 < a and b < n_frames] + [n_frames]
    before, after = (round(p / FRAME_S) for p in pad_s)
    pieces = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        loud = np.flatnonzero(~quiet[a:b])
        if loud.size:
            pieces.append((max(a, a + int(loud[0]) - before), min(b, a + int(loud[-1]) + 1 + after)))
    max_frames = max(1, round(max_segment_s / FRAME_S))
    out: list[tuple[int, int]] = []
    while pieces:  # split what is too long at its longest inner pause (any length), else in the middle
        a, b = pieces.pop(0)
        if b - a <= max_frames:
            out.append((a, b))
            continue
        inner = [(x, y) for x, y in _runs(quiet[a:b]) if 0 < x and y < b - a]
        if inner:
            x, y = max(inner, key=lambda r: r[1] - r[0])
            pieces[:0] = [(a, a + x), (a + y, b)]
        else:
            pieces[:0] = [(a, a + (b - a) // 2), (a + (b - a) // 2, b)]
    if pack_s > 0:
        packed: list[tuple[int, int]] = []
        for a, b in out:
            if packed and b - packed[-1][0] <= round(pack_s / FRAME_S):
                packed[-1] = (packed[-1][0], b)
            else:
                packed.append((a, b))
        out = packed
    return [{"start": a * FRAME_S, "end": min(b * FRAME_S, samples.size / sr)} for a, b in out]


def _is_oom(e: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, oom_type) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def _transcribe_pieces(model: Any, samples: np.ndarray, bounds: list[tuple[int, int]], batch_size: int,
                       progress: ProgressFn | None, by_length: bool, words: bool = False,
                       lang: str | None = None) -> list[tuple[str, list | None]]:
    """`(text, words)` of `samples[s:e]` for each bound (words timed from the piece's start when `words`, else
    None), `batch_size` pieces per forward (shortest together when `by_length`, less padding), in the order of
    `bounds`; `progress` hears chunks and audio seconds done."""
    sr = model_sample_rate(model)
    order = sorted(range(len(bounds)), key=lambda i: bounds[i][1] - bounds[i][0]) if by_length else list(range(len(bounds)))
    texts: list[tuple[str, list | None]] = [("", None)] * len(bounds)
    done_samples, total = 0, max(1, sum(b - a for a, b in bounds))
    if progress is not None:
        progress(0, len(bounds), 0.0, samples.size / sr)
    with _decoding_with_timestamps(model) if words else contextlib.nullcontext():  # one switch for all batches
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            pieces = [samples[bounds[j][0] : bounds[j][1]] for j in batch]
            with decoding_as(model, lang, pieces):  # a gated model: each piece on its (given or routed) path
                outs = (transcribe_arrays_with_words(model, pieces) if words
                        else [(t, None) for t in transcribe_arrays(model, pieces)])
            for j, t in zip(batch, outs, strict=True):
                texts[j] = t
            done_samples += sum(bounds[j][1] - bounds[j][0] for j in batch)
            if progress is not None:  # audio seconds in proportion, so the pauses left out still count as done
                progress(i + len(batch), len(bounds), samples.size / sr * done_samples / total, samples.size / sr)
    return texts


MODES = ("single", "chunked", "pauses")


def transcribe_long(
    model: Any,
    audio: np.ndarray | str | os.PathLike,
    chunk_s: float | None = None,
    batch_size: int = 4,
    fallback_chunk_s: float = DEFAULT_FALLBACK_CHUNK_S,
    min_tail_s: float = DEFAULT_MIN_TAIL_S,
    progress: ProgressFn | None = None,
    mode: str | None = None,
    pack_s: float = 0.0,
    words: bool = False,
    overlap_s: float = 0.0,
    lang: str | None = None,
) -> dict[str, Any]:
    """Transcribe ``audio`` (1-D float array at the model's sample rate, or a file path) of any length.

    ``mode``: "single" (one pass; chunks of ``fallback_chunk_s`` if it runs out of memory), "chunked" (fixed
    chunks of ``chunk_s``) or "pauses" (:func:`pause_segments`, joined up to ``pack_s`` seconds when > 0);
    None means "single" without ``chunk_s`` and "chunked" with it. With ``overlap_s`` > 0, chunks overlap by that
    much and are merged by the decoder's word times (:func:`merge_overlapping`). ``lang`` picks a gated model's
    path for every piece, or "auto" routes each piece (enhi/language_gate.py). ``progress``, when given and the audio goes
    in pieces, is called with ``(0, n, 0.0, duration_s)`` before the first batch and with the pieces and audio
    seconds done after each batch.

    Returns ``{"text", "duration_s", "wall_s", "rtfx", "n_chunks", "chunk_s", "mode", "chunk_texts",
    "segments"}``; ``mode`` is what ran, ``chunk_s`` the chunk length used (None otherwise), ``segments`` one
    ``{"start", "end", "text"}`` per piece in seconds, with ``"words"`` (``{"word", "start", "end"}`` in seconds
    of the recording, timed by the decoder) when ``words``. Wall time covers the
    model work (segmentation, forward and decoding), not reading the file.
    """
    mode = mode or ("single" if chunk_s is None else "chunked")
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if chunk_s is not None and chunk_s <= 0:
        raise UserError(f"chunk_s must be positive, got {chunk_s}")
    if mode == "chunked" and chunk_s is None:
        raise UserError("mode chunked needs chunk_s (the chunk length in seconds)")
    if overlap_s and (mode != "chunked" or not 0 < overlap_s < chunk_s / 2):
        raise UserError(f"overlap_s={overlap_s}: overlapping chunks need mode chunked and an overlap above 0 and "
                        "under half of chunk_s")
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
        used_chunk_s, texts, spans = None, None, [(0.0, duration_s)]
        if mode == "pauses":
            segs = pause_segments(samples, sr, pack_s=pack_s)
            bounds = [(round(g["start"] * sr), round(g["end"] * sr)) for g in segs]
            spans = [(g["start"], g["end"]) for g in segs]
            texts = _transcribe_pieces(model, samples, bounds, batch_size, progress, by_length=True, words=words,
                                       lang=lang)
        elif mode == "single" or duration_s <= chunk_s:  # audio no longer than one chunk: one pass
            mode = "single"
            try:
                texts = _transcribe_pieces(model, samples, [(0, samples.size)], 1, None, by_length=False,
                                           words=words, lang=lang)
            except RuntimeError as e:
                retry_s = chunk_s or fallback_chunk_s
                if not _is_oom(e) or duration_s <= retry_s:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                chunk_s = retry_s
        if texts is None:
            mode, used_chunk_s = "chunked", float(chunk_s)
            bounds = chunk_bounds(samples.size, round(chunk_s * sr), round(min_tail_s * sr), round(overlap_s * sr))
            spans = [(a / sr, b / sr) for a, b in bounds]
            texts = _transcribe_pieces(model, samples, bounds, batch_size, progress, by_length=False,
                                       words=words or overlap_s > 0, lang=lang)
    finally:
        model.train(was_training)
    segments = []
    for (a, b), (t, ws) in zip(spans, texts, strict=True):
        seg = {"start": a, "end": b, "text": t.strip()}
        if ws is not None:
            seg["words"] = [{"word": w["word"], "start": a + w["start"], "end": min(b, a + w["end"])} for w in ws]
        segments.append(seg)
    if overlap_s > 0 and len(segments) > 1:
        segments = merge_overlapping(segments)
    if not words:  # timed only for the merge
        segments = [{k: v for k, v in g.items() if k != "words"} for g in segments]
    texts = [g["text"] for g in segments]
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
        "segments": segments,
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
    if result["mode"] == "chunked":
        how = f"{result['n_chunks']} chunks of {result['chunk_s']:g} s"
    elif result["mode"] == "pauses":
        how = f"{result['n_chunks']} segments cut at pauses"
    else:
        how = "one pass"
    return (
        f"duration {result['duration_s']:.1f} s, wall {result['wall_s']:.2f} s, "
        f"RTFx {result['rtfx']:.1f} ({how})"
    )


def _srt_time(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _rounded(item: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else [_rounded(w) for w in v] if k == "words" else v
            for k, v in item.items()}


def timestamps_text(result: dict[str, Any], fmt: str) -> str:
    """The result's segments as SRT (`fmt` "srt": numbered cues) or JSON (`fmt` "json": a list of {start, end,
    text} in seconds, with their timed words where the result has them); segments with no text are left out."""
    segs = [g for g in result["segments"] if g["text"]]
    if fmt == "json":
        import json

        return json.dumps([_rounded(g) for g in segs], ensure_ascii=False, indent=1) + "\n"
    if fmt == "srt":
        return "".join(f"{i}\n{_srt_time(g['start'])} --> {_srt_time(g['end'])}\n{g['text']}\n\n"
                       for i, g in enumerate(segs, 1))
    raise ValueError(f"timestamps format must be srt or json, got {fmt!r}")


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


def load_model_quietly(path: Path, device: str, decoder_cuda_graphs: str = DEFAULT_DECODER_CUDA_GRAPHS) -> Any:
    """Restore a .nemo (BiRWKV7 or not) without NeMo's messages on stdout, where the transcript goes, decoding in
    the CUDA-graph mode `decoder_cuda_graphs` (enhi/decoding.py)."""
    with _quiet_library_logs():
        from birwkv7.convert import restore

        apply_nemo_workarounds()
        try:
            model = restore(path, map_location=device)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise unreadable_nemo(path, e) from None
        set_decoder_cuda_graphs(model, decoder_cuda_graphs)
        return model
