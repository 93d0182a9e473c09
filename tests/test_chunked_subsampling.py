"""Time-chunked conv subsampling (birwkv7.chunked_subsampling): the same output as NeMo's ConvSubsampling, the
encoder using it at inference with unchanged weights and state-dict keys, and a peak memory that stops growing
with the input (CPU, tiny sizes)."""

from __future__ import annotations

import pytest
import torch
from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling
from torch import nn

from birwkv7 import nemo_encoder
from birwkv7.chunked_subsampling import subsample_in_time_chunks, time_geometry
from birwkv7.nemo_encoder import BiRWKV7ConformerEncoder
from enhi.long_audio import peak_memory_bytes

FEAT_IN = 16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _subsampling(kind: str, factor: int, dtype: torch.dtype = torch.float64, **kwargs) -> ConvSubsampling:
    torch.manual_seed(0)
    # Built as ConformerEncoder builds it (in-place ReLU), with random biases so no stage is a no-op.
    m = ConvSubsampling(kind, factor, FEAT_IN, 24, 8, activation=nn.ReLU(True), **kwargs)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.to(dtype).eval()


def _features(lengths: list[int], dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    # (B, T, feat), what ConformerEncoder hands pre_encode. Padding is random, not zero: the masking must
    # keep it out of every valid frame in both paths.
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), FEAT_IN, generator=g, dtype=dtype)


@pytest.mark.parametrize("kind", ["dw_striding", "striding"])
@pytest.mark.parametrize("factor", [4, 8])
def test_chunked_equals_plain_call(kind, factor):
    m = _subsampling(kind, factor)
    geo = time_geometry(m)
    # Derived from the layers: stride^n, receptive field (k-1)/2 * (stride^n - 1) frames either side.
    assert geo is not None and geo.stride == factor and geo.left == geo.right == factor - 1
    with torch.no_grad():
        for lengths in ([203, 150], [97, 97], [64, 17], [45, 3]):
            x, n = _features(lengths), torch.tensor(lengths)
            ref, ref_len = m(x=x, lengths=n)
            # Chunks from a fraction of one output frame up to about half the input.
            for chunk in (1, 5, factor, 13, 40, max(lengths) // 2):
                out, out_len = subsample_in_time_chunks(m, x, n, chunk)
                assert out_len.tolist() == ref_len.tolist(), (lengths, chunk)
                assert out.shape == ref.shape and out.dtype == ref.dtype
                torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12, msg=f"{lengths} chunk {chunk}")


def test_float32_matches_to_rounding():
    # Not bitwise: the conv stack is, but pre_encode.out's GEMM picks its kernel by row count, so a chunk's
    # rows can round differently from the whole input's (seen: 1 ulp).
    m = _subsampling("dw_striding", 8, torch.float32)
    x, n = _features([203, 150], torch.float32), torch.tensor([203, 150])
    with torch.no_grad():
        ref, _ = m(x=x, lengths=n)
        out, _ = subsample_in_time_chunks(m, x, n, 24)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_matches_nemo_split_by_channel_path():
    # A batch of one over NeMo's size limit goes through conv_split_by_channel (no masking); chunking factor
    # 2 forces that path at a small size. Unpadded, both must agree.
    m = _subsampling("dw_striding", 8, subsampling_conv_chunking_factor=2)
    x, n = _features([203]), torch.tensor([203])
    with torch.no_grad():
        ref, ref_len = m(x=x, lengths=n)
        out, out_len = subsample_in_time_chunks(m, x, n, 24)
    assert out_len.tolist() == ref_len.tolist()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["dw_striding", "striding"])
def test_causal_subsampling_takes_the_plain_call(kind):
    m = _subsampling(kind, 4, is_causal=True)
    assert time_geometry(m) is None
    x, n = _features([90, 61]), torch.tensor([90, 61])
    with torch.no_grad():
        ref, ref_len = m(x=x, lengths=n)
        out, out_len = subsample_in_time_chunks(m, x, n, 8)
    assert torch.equal(out, ref) and torch.equal(out_len, ref_len)


def test_vggnet_and_conv1d_subsampling_are_not_chunked():
    # (Not called: in NeMo 3.0 their own forward fails, on max pooling's int kernel size / a missing lengths.)
    for kind in ("vggnet", "striding_conv1d", "dw_striding_conv1d"):
        assert time_geometry(_subsampling(kind, 4)) is None


def _encoder() -> BiRWKV7ConformerEncoder:
    torch.manual_seed(0)
    enc = BiRWKV7ConformerEncoder(
        feat_in=FEAT_IN,
        n_layers=2,
        d_model=32,
        n_heads=2,
        subsampling="dw_striding",
        subsampling_factor=8,
        subsampling_conv_channels=8,
        att_context_size=[-1, -1],
        dropout=0.0,
        dropout_pre_encoder=0.0,
        dropout_emb=0.0,
        dropout_att=0.0,
        birwkv7={"head_size": 16, "backend": "torch"},
    )
    with torch.no_grad():  # the reference init zeroes some projections; perturb so every weight matters
        for p in enc.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return enc.double()


def test_encoder_uses_chunks_at_inference_with_the_same_output(monkeypatch):
    enc = _encoder()
    keys = list(enc.state_dict())
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[3])
        return subsample_in_time_chunks(*args, **kwargs)

    monkeypatch.setattr(nemo_encoder, "subsample_in_time_chunks", spy)
    lengths = [203, 150]
    x = _features(lengths).transpose(1, 2)  # (B, feat, T), the encoder's input layout
    n = torch.tensor(lengths)

    enc.eval()
    with torch.no_grad():
        plain, plain_len = enc(audio_signal=x, length=n)  # 203 frames: under the default threshold
        assert calls == []
        monkeypatch.setattr(nemo_encoder, "SUBSAMPLING_CHUNK_FRAMES", 24)
        chunked, chunked_len = enc(audio_signal=x, length=n)
        assert calls == [24]
        # length=None means "all frames valid" in NeMo; the chunked path must read it the same way.
        full_chunked, _ = enc(audio_signal=x, length=None)
    assert torch.equal(chunked_len, plain_len) and chunked_len.dtype == torch.int64
    torch.testing.assert_close(chunked, plain, rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(nemo_encoder, "SUBSAMPLING_CHUNK_FRAMES", 10**9)
    with torch.no_grad():
        full_plain, _ = enc(audio_signal=x, length=None)
    torch.testing.assert_close(full_chunked, full_plain, rtol=1e-10, atol=1e-10)

    # Training with gradients keeps NeMo's own call; eval mode with gradients (or training without) chunks.
    monkeypatch.setattr(nemo_encoder, "SUBSAMPLING_CHUNK_FRAMES", 24)
    calls.clear()
    enc.train()
    enc(audio_signal=x, length=n)
    assert calls == []
    with torch.no_grad():
        enc(audio_signal=x, length=n)
    enc.eval()
    out, _ = enc(audio_signal=x, length=n)
    assert calls == [24, 24] and out.requires_grad

    # Nothing was wrapped or replaced: NeMo's module, the same keys, loadable strictly into a fresh encoder.
    assert type(enc.pre_encode) is ConvSubsampling
    assert list(enc.state_dict()) == keys
    assert [k for k in keys if k.startswith("pre_encode.")] == [
        f"pre_encode.{k}" for k in ConvSubsampling("dw_striding", 8, FEAT_IN, 32, 8).state_dict()
    ]
    _encoder().load_state_dict(enc.state_dict(), strict=True)


def test_peak_memory_stops_growing_with_length():
    # 64 mels, 32 channels: the first conv's output is 32 x T/2 x 32 values, 16x the input.
    torch.manual_seed(0)
    m = ConvSubsampling("dw_striding", 8, 64, 32, 32, activation=nn.ReLU(True)).eval()
    peaks = {}
    for frames in (4000, 8000):
        x, n = torch.randn(1, frames, 64), torch.tensor([frames])
        with torch.no_grad():
            plain = peak_memory_bytes(lambda x=x, n=n: m(x=x, lengths=n))
            chunked = peak_memory_bytes(lambda x=x, n=n: subsample_in_time_chunks(m, x, n, 400))
        peaks[frames] = plain, chunked
    (p4, c4), (p8, c8) = peaks[4000], peaks[8000]
    # Plain: whole-input intermediates (8 MiB of first-conv output at 4000 frames, with copies) double.
    assert p4 > 12 * 2**20 and 1.9 < p8 / p4 < 2.1
    # Chunked: one chunk's intermediates plus the (T/8, 32) output, which is all that grows.
    assert c8 < 0.1 * p8
    assert c8 - c4 < 0.02 * (p8 - p4)
