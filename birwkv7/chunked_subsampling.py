"""Exact, time-chunked evaluation of NeMo's convolutional subsampling, so hours of audio fit in memory.

Why: the FastConformer front end (:class:`ConvSubsampling`) first runs a stride-2 conv2d with
``conv_channels`` outputs on the whole (time, mel) plane. For parakeet-0.6b's shape (256 channels, 128 mels)
that intermediate is 256 x 64 = 16,384 values per *output* frame of that conv, i.e. 8,192 per 10 ms input
frame, 64 times the (T/8, 1024) tensor the encoder layers then work on. For one long utterance NeMo cannot
split by batch and falls back to ``conv_split_by_channel``, which still materialises that first conv output
in full (~47 GiB in bf16 for 8.5 h), so the front end, not the linear-memory BiRWKV7 layers, sets the
one-pass length limit.

:func:`subsample_in_time_chunks` computes the same result chunk by chunk in time: each chunk of output frames
is computed from an input slice that starts on a multiple of the total stride (so every stage's sampling grid
lines up with the full computation) and extends by a halo covering the receptive field on both sides; the
edge frames that saw the slice's artificial zero padding are dropped, ``pre_encode.out`` is applied per chunk,
and the chunks are written into one preallocated output. Only one chunk's intermediates live at a time.

The result is the one NeMo's masked path (``MaskedConvSequential``, used whenever NeMo does not split)
gives: every stage zeroes frames past each utterance's length. NeMo's own ``conv_split_by_channel`` fallback
skips that masking; for a batch of one with no padding (the long-audio case) both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling, calc_length
from torch import nn

SUPPORTED_SUBSAMPLING = ("dw_striding", "striding")
# Element-wise layers: they commute with slicing in time, so they need no halo.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
)


@dataclass(frozen=True)
class TimeGeometry:
    """How output frame ``j`` of the conv stack depends on input frames: ``[stride*j - left, stride*j + right]``."""

    stride: int
    left: int
    right: int
    # Per conv layer, along time: (kernel, stride, padding, dilation).
    convs: tuple[tuple[int, int, int, int], ...]

    def out_frames(self, n: int) -> int:
        """Frames the conv stack outputs for ``n`` input frames (PyTorch's conv output size, layer by layer)."""
        for k, s, p, d in self.convs:
            n = (n + 2 * p - d * (k - 1) - 1) // s + 1
        return n


def time_geometry(pre_encode: nn.Module) -> TimeGeometry | None:
    """The conv stack's time geometry, or None where chunking is not supported (then use the plain call).

    Supported: non-causal conv2d ``dw_striding`` / ``striding`` subsampling whose conv stack is zero-padded
    ``nn.Conv2d`` layers and element-wise activations. Refused: causal subsampling (asymmetric padding and a
    streaming cache), ``vggnet`` (max pooling with ceil mode), the conv1d variants, and anything else.
    """
    if not isinstance(pre_encode, ConvSubsampling):
        return None
    if pre_encode.is_causal or not pre_encode.conv2d_subsampling:
        return None
    if pre_encode._subsampling not in SUPPORTED_SUBSAMPLING or pre_encode.out is None:
        return None
    stride, left, right = 1, 0, 0
    convs = []
    for layer in pre_encode.conv:
        if isinstance(layer, _ELEMENTWISE):
            continue
        # Exactly Conv2d: NeMo's CausalConv2D subclasses it with its own padding.
        if type(layer) is not nn.Conv2d or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return None
        k, s, p, d = layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.dilation[0]
        # Frame j of this layer reads frames [s*j - p, s*j - p + d*(k-1)] of the stack below, whose frame i
        # reads input [stride*i - left, stride*i + right]; compose the two.
        left, right = stride * p + left, stride * (d * (k - 1) - p) + right
        stride *= s
        convs.append((k, s, p, d))
    if not convs:
        return None
    return TimeGeometry(stride=stride, left=max(left, 0), right=max(right, 0), convs=tuple(convs))


def _plain_out_lengths(pre_encode: ConvSubsampling, lengths: torch.Tensor) -> torch.Tensor:
    # The formula ConvSubsampling.forward uses; the masked path returns the same values as int64.
    return calc_length(
        lengths,
        all_paddings=pre_encode._left_padding + pre_encode._right_padding,
        kernel_size=pre_encode._kernel_size,
        stride=pre_encode._stride,
        ceil_mode=pre_encode._ceil_mode,
        repeat_num=pre_encode._sampling_num,
    ).to(torch.int64)


def subsample_in_time_chunks(
    pre_encode: nn.Module, x: torch.Tensor, lengths: torch.Tensor, chunk_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pre_encode(x, lengths)`` computed over time chunks of about ``chunk_frames`` input frames.

    ``x``: (B, T, feat_in) features, as ConformerEncoder passes them after its transpose; ``lengths``: (B,).
    Returns ``(out (B, T_out, d_model), out_lengths (B,) int64)``, the same values as the plain call (float
    rounding aside; see the tests). Peak memory is that of one chunk's conv intermediates (B x chunk) plus
    the output, instead of the whole input's. Unsupported configurations (:func:`time_geometry` is None) and
    inputs that fit in one chunk take the plain call.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
    geo = time_geometry(pre_encode)
    total = x.size(1)
    n_out = geo.out_frames(total) if geo is not None else 0
    if geo is None or total <= chunk_frames or n_out < 1:
        return pre_encode(x=x, lengths=lengths)
    S = geo.stride
    # Halo: output frame j needs input [S*j - left, S*j + right]. With that much context on each side, every
    # frame of every stage inside a kept frame's receptive field is computed from real input, so the zero
    # padding each chunk's convs add at its edges reaches only the frames we drop. The left halo is rounded
    # up to a multiple of S so each slice starts on a multiple of S: then stage m's frame i of the slice is
    # frame i + start / (its stride) of the full computation, the same grid.
    halo_left = math.ceil(geo.left / S) * S
    per_chunk = max(1, chunk_frames // S)  # output frames kept per chunk
    out: torch.Tensor | None = None
    for o0 in range(0, n_out, per_chunk):
        o1 = min(o0 + per_chunk, n_out)
        start = max(0, S * o0 - halo_left)
        end = min(total, S * (o1 - 1) + geo.right + 1)
        # Lengths relative to the slice, unclamped: MaskedConvSequential's per-stage length formula shifts
        # exactly by start / stride under a shift of start (a multiple of every stage's stride), so each
        # stage masks the same frames as in the full pass (all of them where an utterance ended earlier).
        h, _ = pre_encode.conv(x[:, start:end], lengths - start)
        drop = o0 - start // S
        if h.size(2) < drop + (o1 - o0):  # cannot happen for a valid geometry; never return a short result
            raise RuntimeError(f"chunk [{start}, {end}) gave {h.size(2)} frames, need {drop + o1 - o0}")
        h = h[:, :, drop : drop + (o1 - o0)]
        b, c, t, f = h.size()
        y = pre_encode.out(h.transpose(1, 2).reshape(b, t, c * f))
        if out is None:
            # Preallocated, not a list + cat, so the output never exists twice.
            out = y.new_empty((b, n_out, y.size(-1)))
        out[:, o0:o1] = y
    return out, _plain_out_lengths(pre_encode, lengths)


__all__ = ["SUPPORTED_SUBSAMPLING", "TimeGeometry", "subsample_in_time_chunks", "time_geometry"]
