"""Long-audio transcription with a tiny BiRWKV7 model on CPU: a 10-minute file in one pass and in chunks,
exact stitching, the out-of-memory fallback, and peak encoder memory linear in length (attention: not).
The command line: end to end on a saved tiny model (transcript, progress over chunks, --out) and one-line
errors for each kind of bad input."""

from __future__ import annotations

import logging
import math
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import load_script

from enhi import long_audio
from enhi.long_audio import chunk_bounds, format_report, peak_memory_bytes, transcribe_long

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
    # Overlapping: each starts chunk - overlap after the one before; the tail is judged by the new audio it adds.
    assert chunk_bounds(10, 4, overlap_samples=1) == [(0, 4), (3, 7), (6, 10)]
    assert chunk_bounds(11, 4, min_tail_samples=2, overlap_samples=1) == [(0, 4), (3, 7), (6, 11)]
    assert chunk_bounds(11, 4, min_tail_samples=1, overlap_samples=1) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    with pytest.raises(ValueError):
        chunk_bounds(10, 4, overlap_samples=4)


def _oracle_words(rng: np.random.Generator, duration_s: float) -> list[dict]:
    """Words of 0.1-0.6 s with 0-0.2 s between them, laid over `duration_s`."""
    out, t = [], 0.05
    while True:
        length = float(rng.uniform(0.1, 0.6))
        if t + length > duration_s - 0.05:
            return out
        out.append({"word": f"w{len(out)}", "start": t, "end": t + length})
        t += length + float(rng.uniform(0.0, 0.2))


def test_overlapping_chunks_are_merged_so_each_word_is_written_once(monkeypatch):
    # An oracle model: a chunk hears exactly the words wholly inside it (one cut by its edge is lost, as a real
    # model garbles it). The audio's samples are their own times, so the oracle knows where a chunk starts.
    words = _oracle_words(np.random.default_rng(0), 60.0)
    reference = " ".join(w["word"] for w in words)
    audio = (np.arange(60 * SR) / SR).astype(np.float32)

    def heard(a: np.ndarray) -> list[dict]:
        lo, hi = float(a[0]), float(a[-1]) + 1 / SR
        return [{**w, "start": w["start"] - lo, "end": w["end"] - lo} for w in words if lo <= w["start"] and w["end"] <= hi]

    monkeypatch.setattr(long_audio, "transcribe_arrays", lambda m, arrays: [" ".join(w["word"] for w in heard(a)) for a in arrays])
    monkeypatch.setattr(long_audio, "transcribe_arrays_with_words",
                        lambda m, arrays: [(" ".join(w["word"] for w in heard(a)), heard(a)) for a in arrays])
    cut = transcribe_long(_StubModel(), audio, mode="chunked", chunk_s=4.0, batch_size=4)
    lost = len(reference.split()) - len(cut["text"].split())
    assert lost >= 10  # about one word per boundary is cut in two and lost without overlap
    stub = _TimingStub()
    merged = transcribe_long(stub, audio, mode="chunked", chunk_s=4.0, overlap_s=1.0, batch_size=4, words=True)
    assert merged["text"] == reference  # an overlap longer than any word: every word once, in order
    assert stub.switches == 2  # timestamps on once for the whole recording (5 batches), then off
    segs = merged["segments"]
    assert segs[0]["start"] == 0 and segs[-1]["end"] == pytest.approx(60.0)
    assert all(a["end"] == b["start"] for a, b in zip(segs[:-1], segs[1:], strict=True))  # contiguous, no overlap
    for g in segs:
        assert g["text"] == " ".join(w["word"] for w in g["words"])
        assert all(g["start"] <= (w["start"] + w["end"]) / 2 <= g["end"] for w in g["words"])
    assert [w["start"] for g in segs for w in g["words"]] == pytest.approx([w["start"] for w in words])
    assert "words" not in transcribe_long(_TimingStub(), audio, mode="chunked", chunk_s=4.0, overlap_s=1.0)["segments"][0]
    with pytest.raises(long_audio.UserError, match="overlap"):
        transcribe_long(_StubModel(), audio, mode="pauses", overlap_s=1.0)
    with pytest.raises(long_audio.UserError, match="overlap"):
        transcribe_long(_StubModel(), audio, mode="chunked", chunk_s=4.0, overlap_s=2.0)


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


class _TimingStub(_StubModel):
    """A stub whose decoding settings can be switched for word times, counting the switches."""

    def __init__(self):
        from omegaconf import OmegaConf

        self.cfg = OmegaConf.create({"sample_rate": SR, "decoding": {"strategy": "greedy_batch"}})
        self.switches = 0

    def change_decoding_strategy(self, cfg, verbose: bool = True):
        self.switches += 1
        self.cfg.decoding = cfg  # as NeMo does: the new settings become the model's


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


def test_progress_reports_every_batch_of_chunks_after_the_fallback(monkeypatch):
    monkeypatch.setattr(
        long_audio,
        "transcribe_arrays",
        lambda model, arrays: _oom_if_longer(arrays, 300 * SR) or ["x"] * len(arrays),
    )
    calls: list[tuple] = []
    audio = np.zeros(int(1000.5 * SR), dtype=np.float32)
    res = transcribe_long(
        _StubModel(), audio, batch_size=2, fallback_chunk_s=240.0, progress=lambda *a: calls.append(a)
    )
    # Nothing for the refused one pass; then chunks 0, 2, 4, 5 of 5 with the audio seconds they end at.
    assert res["n_chunks"] == 5
    assert calls == [
        (0, 5, 0.0, 1000.5),
        (2, 5, 480.0, 1000.5),
        (4, 5, 960.0, 1000.5),
        (5, 5, 1000.5, 1000.5),
    ]
    calls.clear()
    transcribe_long(_StubModel(), audio[: 100 * SR], progress=lambda *a: calls.append(a))
    assert calls == []  # one pass: one forward call, nothing to count


def _oom_if_longer(arrays, limit: int) -> None:
    if max(len(a) for a in arrays) > limit:
        raise torch.OutOfMemoryError("simulated: too long for one pass")


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


# --- the command line ---------------------------------------------------------------------------------------

CHUNK_S = 10.0
CLI_SECONDS = 50.0  # 5 chunks of 10 s; with --batch-size 2 the bar moves 0 -> 2 -> 4 -> 5


@pytest.fixture(scope="module")
def saved_tiny(en_tok_dir, tmp_path_factory):
    """A tiny BiRWKV7 model as .nemo (the CLI's input), the model itself, and a 50 s audio file."""
    model = _tiny(en_tok_dir, birwkv7=True)
    folder = tmp_path_factory.mktemp("cli")
    nemo = folder / "converted.nemo"
    model.save_to(str(nemo))
    wav = folder / "talk.wav"
    sf.write(wav, _segment(CLI_SECONDS, seed=3), SR, subtype="PCM_16")
    return model, nemo, wav


def _cli(*args: str) -> None:
    load_script(ROOT / "transcribe_long.py").main([*(str(a) for a in args), "--device", "cpu"])


def _bar_states(stderr: str) -> list[tuple[int, ...]]:
    """(chunk, n, audio s, total s) of each distinct state the progress bar drew, in order."""
    states = []
    for line in re.split(r"[\r\n]", stderr):
        m = re.match(r"transcribing: chunk (\d+)/(\d+), audio (\d+)/(\d+) s", line)
        if m and (not states or states[-1] != tuple(map(int, m.groups()))):
            states.append(tuple(map(int, m.groups())))
    return states


def test_cli_prints_the_transcript_with_progress_over_chunks(saved_tiny, capfd):
    model, nemo, wav = saved_tiny
    # NeMo's stream handlers hold the sys.stdout of the moment NeMo was imported, which no capture fixture sees
    # here; a handler of our own on its logger hears every record the CLI lets through.
    records = _Records()
    nemo_logger = logging.getLogger("nemo_logger")
    nemo_logger.addHandler(records)
    try:
        _cli("--model", nemo, "--audio", wav, "--chunk-s", CHUNK_S, "--batch-size", 2)
    finally:
        nemo_logger.removeHandler(records)
    out, err = capfd.readouterr()
    assert [r.getMessage() for r in records.records if r.levelno < logging.ERROR] == []  # restoring is quiet
    expected = transcribe_long(model, wav, chunk_s=CHUNK_S, batch_size=2)
    assert len(expected["text"].split()) > 20  # the random model says something: not a comparison of empties
    # stdout is the transcript and the report, nothing else.
    lines = out.splitlines()
    assert len(lines) == 2, out[:2000]
    assert lines[0] == expected["text"]
    assert lines[1].startswith("duration 50.0 s, wall ") and lines[1].endswith("(5 chunks of 10 s)")
    # stderr: the bar covered every chunk and every second, batch by batch.
    assert _bar_states(err) == [(0, 5, 0, 50), (2, 5, 20, 50), (4, 5, 40, 50), (5, 5, 50, 50)]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_cli_one_pass_has_no_bar_and_writes_out_whole(saved_tiny, tmp_path, capfd):
    model, nemo, wav = saved_tiny
    out_file = tmp_path / "sub" / "talk.txt"
    _cli("--model", nemo, "--audio", wav, "--mode", "single", "--out", out_file)
    out, err = capfd.readouterr()
    assert err.startswith("mode: single (asked for")
    text = transcribe_long(model, wav)["text"]
    assert out_file.read_text(encoding="utf-8") == text + "\n"
    assert [p.name for p in out_file.parent.iterdir()] == ["talk.txt"]  # no temporary left beside it
    lines = out.splitlines()
    assert lines[0] == f"transcript written to {out_file} ({len(text.split())} words)"
    assert lines[1].endswith("(one pass)") and len(lines) == 2
    assert "transcribing:" not in err  # one chunk: no bar


def _bad_inputs(folder: Path, good_nemo: Path, good_wav: Path) -> dict[str, tuple[Path, Path, Path, str]]:
    """name -> (model, audio, the file the message must name, words it must contain)."""
    (folder / "a_folder.nemo").mkdir()
    (folder / "notes.nemo").write_text("not a checkpoint\n")
    data = good_nemo.read_bytes()
    (folder / "truncated.nemo").write_bytes(data[: len(data) // 2])
    with tarfile.open(folder / "no_config.nemo", "w") as tar:
        tar.add(good_wav, arcname="model_weights.ckpt")
    (folder / "notes.wav").write_text("not audio\n")
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    m, a = good_nemo, good_wav
    return {
        "model missing": (folder / "none.nemo", a, folder / "none.nemo", "model not found"),
        "model is a folder": (folder / "a_folder.nemo", a, folder / "a_folder.nemo", "is a folder"),
        "model not a tar": (folder / "notes.nemo", a, folder / "notes.nemo", "not a readable .nemo"),
        "model truncated": (folder / "truncated.nemo", a, folder / "truncated.nemo", "not a readable .nemo"),
        "model without config": (
            folder / "no_config.nemo",
            a,
            folder / "no_config.nemo",
            "no model_config.yaml",
        ),
        "audio missing": (m, folder / "none.wav", folder / "none.wav", "audio file not found"),
        "audio not a sound file": (m, folder / "notes.wav", folder / "notes.wav", "cannot read audio"),
        "audio empty": (m, folder / "empty.wav", folder / "empty.wav", "no samples"),
    }


def test_cli_bad_inputs_exit_2_with_one_line_naming_the_file(saved_tiny, tmp_path, capfd):
    _, nemo, wav = saved_tiny
    out_file = tmp_path / "out" / "talk.txt"
    for name, (model, audio, culprit, words) in _bad_inputs(tmp_path, nemo, wav).items():
        with pytest.raises(SystemExit) as exc:
            _cli("--model", model, "--audio", audio, "--out", out_file)
        out, err = capfd.readouterr()
        assert exc.value.code == 2, name
        assert out == "", name
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {culprit}: ") and words in lines[0], (
            name,
            err,
        )
        assert not out_file.parent.exists(), name  # nothing written, not even the folder


@pytest.mark.parametrize("args", [["--overlap-s", "2"], ["--chunk-s", "4", "--overlap-s", "2"]])
def test_cli_overlap_needs_chunks_and_under_half_of_one(saved_tiny, args, capfd):
    _, nemo, wav = saved_tiny
    with pytest.raises(SystemExit) as exc:
        _cli("--model", nemo, "--audio", wav, *args)
    out, err = capfd.readouterr()
    assert exc.value.code == 2 and out == ""
    assert err.splitlines() == ["error: --overlap-s 2: needs --chunk-s and must be under half of it"]
