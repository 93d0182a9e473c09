"""Long-audio transcription with a tiny BiRWKV7 model on CPU: a 10-minute file in one pass and in chunks,
exact stitching, the out-of-memory fallback, and peak encoder memory linear in length (attention: not)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from birwkv7 import long_audio
from birwkv7.long_audio import chunk_bounds, format_report, peak_memory_bytes, transcribe_long

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_chunk_bounds_cover_everything_and_merge_a_short_tail():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(10, 4, min_tail_samples=3) == [(0, 4), (4, 10)]
    assert chunk_bounds(8, 4, min_tail_samples=3) == [(0, 4), (4, 8)]
    assert chunk_bounds(3, 4, min_tail_samples=5) == [(0, 3)]
    with pytest.raises(ValueError):
        chunk_bounds(10, 0)


class _StubModel:
    """Just what transcribe_long touches outside transcribe_arrays (which the tests replace)."""

    cfg = {"sample_rate": SR}
    training = True

    def eval(self):
        self.training = False
        return self

    def train(self, mode: bool = True):
        self.training = mode
        return self


def test_one_pass_falls_back_to_chunks_when_out_of_memory(monkeypatch):
    calls: list[list[int]] = []

    def fake(model, arrays):
        lengths = [len(a) for a in arrays]
        calls.append(lengths)
        if max(lengths) > 300 * SR:
            raise torch.OutOfMemoryError("simulated: too long for one pass")
        # A chunk's "transcript" names its first sample, so order and boundaries are checkable.
        return [f"c{int(a[0])}" if a[0] else "" for a in arrays]

    monkeypatch.setattr(long_audio, "transcribe_arrays", fake)
    audio = np.zeros(int(1000.5 * SR), dtype=np.float32)
    for i in range(5):
        audio[i * 240 * SR] = i  # chunk 0 starts with 0 -> empty text, skipped when joining
    model = _StubModel()
    res = transcribe_long(model, audio, chunk_s=None, batch_size=2, fallback_chunk_s=240.0)
    # One pass tried and refused, then 240 s chunks: 4 full + a 40.5 s tail, two per batch.
    assert calls == [[len(audio)], [240 * SR] * 2, [240 * SR] * 2, [int(40.5 * SR)]]
    assert res["mode"] == "chunked" and res["chunk_s"] == 240.0 and res["n_chunks"] == 5
    assert res["chunk_texts"] == ["", "c1", "c2", "c3", "c4"]
    assert res["text"] == "c1 c2 c3 c4"
    assert res["duration_s"] == pytest.approx(1000.5)
    assert res["wall_s"] > 0 and res["rtfx"] == pytest.approx(1000.5 / res["wall_s"])
    assert model.training  # training mode restored
    # Short audio with a chunk length given: one pass, no chunking.
    calls.clear()
    res = transcribe_long(model, audio[: 100 * SR], chunk_s=240.0)
    assert (
        calls == [[100 * SR]] and res["mode"] == "single" and res["n_chunks"] == 1 and res["chunk_s"] is None
    )
    assert "one pass" in format_report(res)


def _tiny(en_tok_dir: Path, birwkv7: bool):
    from birwkv7.convert import convert_to_birwkv7
    from enhi.tiny_model import build_parakeet_model

    model = build_parakeet_model(en_tok_dir, seed=0, spec_augment=False)
    return convert_to_birwkv7(model, head_size=16, init="attention") if birwkv7 else model


def _segment(seconds: float, seed: int) -> np.ndarray:
    # Tones with a slow amplitude wobble plus noise: structure enough that frames differ.
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    sig = sum(
        np.sin(2 * math.pi * f * t) * (0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(0.1, 1) * t))
        for f in rng.uniform(150, 2500, 4)
    )
    return (0.1 * sig + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_ten_minute_file_in_one_pass_and_in_chunks(en_tok_dir, tmp_path):
    model = _tiny(en_tok_dir, birwkv7=True)
    # CTC greedy decoding keeps the test fast (a random TDT decoder emits thousands of tokens, slowly), and
    # a lowered blank bias makes the random model say something at most frames, so comparisons are not
    # between empty strings.
    model.change_decoding_strategy(decoder_type="ctc", verbose=False)
    with torch.no_grad():
        model.ctc_decoder.decoder_layers[0].bias[-1] -= 10.0
    # A 10-minute file made of one 2-minute segment five times: every 2-minute chunk is the same input.
    segment = _segment(120.0, seed=7)
    path = tmp_path / "ten_minutes.wav"
    sf.write(path, np.tile(segment, 5), SR, subtype="PCM_16")
    segment_read = sf.read(path, dtype="float32")[0][: segment.size]

    one = transcribe_long(model, path)
    assert one["mode"] == "single" and one["n_chunks"] == 1 and one["chunk_s"] is None
    assert one["duration_s"] == pytest.approx(600.0)
    assert one["wall_s"] > 0 and one["rtfx"] == pytest.approx(600.0 / one["wall_s"])
    assert len(one["text"].split()) > 100

    ref = transcribe_long(model, segment_read)["text"]
    assert len(ref.split()) > 20
    chunked = transcribe_long(model, path, chunk_s=120.0, batch_size=4)  # batches of 4 + 1
    assert chunked["mode"] == "chunked" and chunked["n_chunks"] == 5 and chunked["chunk_s"] == 120.0
    # Stitching is exact: each chunk says what the segment says alone, and the texts join in order.
    assert chunked["chunk_texts"] == [ref] * 5
    assert chunked["text"] == " ".join([ref] * 5)
    print(f"\n10-min file, tiny BiRWKV7, CPU: {format_report(one)}; {format_report(chunked)}")


def test_encoder_peak_memory_is_linear_for_birwkv7_and_superlinear_for_attention(en_tok_dir):
    def peaks(model, seconds: tuple[int, ...]) -> list[int]:
        enc = model.encoder.eval()
        out = []
        for s in seconds:
            feats = torch.randn(1, 80, s * 100, generator=torch.Generator().manual_seed(s))  # 100 frames/s

            def run(feats: torch.Tensor = feats) -> None:
                with torch.inference_mode():
                    enc(audio_signal=feats, length=torch.tensor([feats.shape[-1]]))

            out.append(peak_memory_bytes(run))
        return out

    rwkv = peaks(_tiny(en_tok_dir, birwkv7=True), (30, 120, 30))
    attn = peaks(_tiny(en_tok_dir, birwkv7=False), (30, 120))
    print(
        f"\npeak encoder memory 30 s / 120 s: BiRWKV7 {rwkv[0] / 2**20:.1f} / {rwkv[1] / 2**20:.1f} MiB "
        f"(x{rwkv[1] / rwkv[0]:.2f}), attention {attn[0] / 2**20:.1f} / {attn[1] / 2**20:.1f} MiB (x{attn[1] / attn[0]:.2f})"
    )
    assert rwkv[0] == rwkv[2]  # the measurement is exact and repeatable
    assert 3.7 < rwkv[1] / rwkv[0] < 4.3  # 4x the audio, ~4x the memory
    assert attn[1] / attn[0] > 8  # the (T x T) scores dominate: far above linear
    assert 2 * rwkv[1] < attn[1]
