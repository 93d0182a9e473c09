"""NeMo's FastConformer encoder with every self-attention replaced by :class:`BiRWKV7TimeMix`.

Registered through the model config, so ``save_to`` / ``restore_from`` rebuild it with no manual step::

    encoder:
      _target_: birwkv7.nemo_encoder.BiRWKV7ConformerEncoder
      self_attention_model: birwkv7        # recorded for readers; the layers are built as described below
      birwkv7: {head_size: 64, init: attention, backend: auto, converted_from: rel_pos}
      ...every other ConformerEncoder key unchanged...

How it differs from :class:`ConformerEncoder`:

* The base class is built with ``self_attention_model="abs_pos"`` (the simplest attention), then each
  layer's ``self_attn`` is replaced by a time mix. The layers keep their ``"abs_pos"`` label because
  ``ConformerLayer.forward`` dispatches on it; that branch calls ``self_attn(query, key, value, mask, cache)``,
  which the time mix accepts.
* No positional encoding: ``pos_enc`` only applies the x-scaling and the pre-encoder dropout (the
  recurrence is order-aware by itself) and returns ``pos_emb=None``.
* No (B, T, T) attention mask: ``_create_masks`` builds only the (B, T) padding mask, which keeps memory
  linear in length. It also stores the mask in the shared :class:`BiRWKV7Context`, where every time mix
  reads it, together with the first layer's values for the RWKV-7 value residual. ``forward_internal``
  clears that context before and after every forward, so no tensor outlives its pass.
* Long inputs at inference (more than :data:`SUBSAMPLING_CHUNK_FRAMES` feature frames, not training with
  gradients) run the conv subsampling in exact time chunks (:mod:`birwkv7.chunked_subsampling`), then the
  base class continues as with ``bypass_pre_encode``. Why: with linear-memory layers, NeMo's subsampling
  became the one-pass memory ceiling: its first conv's output alone is 64x the encoder's hidden state
  (parakeet-0.6b's shape: 5.5 GiB of bf16 per hour of audio; with the next stage's pieces and their
  concatenation 8.2 GiB/h, of the 8.4 GiB/h the H100 bench measured, bench/RESULTS.md long-audio-bench).
  Chunked, it stays at one chunk's worth (~0.2 GiB). Parameters and state-dict keys are unchanged.
* Cache-aware streaming and ``change_attention_model`` are refused: the encoder is bidirectional.

NeMo 3.0 instantiates a config's ``_target_`` only under an allow-list of module prefixes. Importing this
module adds ``birwkv7.nemo_encoder.`` to it (:func:`register_with_nemo`), so a process must import it
before ``restore_from`` of a converted model; :func:`birwkv7.convert.restore` does both.

``birwkv7.init`` records how the time-mix weights were first initialised ("attention": from the pretrained
attention projections by :func:`birwkv7.convert.convert_to_birwkv7`; "random": the RWKV-7 reference
initialisation). Construction itself always initialises randomly; a restored checkpoint then loads its
trained weights over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from nemo.collections.asr.modules import ConformerEncoder
from omegaconf import DictConfig, OmegaConf
from torch import nn

from birwkv7.chunked_subsampling import subsample_in_time_chunks, time_geometry
from birwkv7.layer import BiRWKV7Context, BiRWKV7TimeMix

TARGET = "birwkv7.nemo_encoder.BiRWKV7ConformerEncoder"
TARGET_PREFIX = "birwkv7.nemo_encoder."
SELF_ATTENTION_MODEL = "birwkv7"
INIT_CHOICES = ("attention", "random")
# Inference inputs longer than this many feature frames (60 s at NeMo's 10 ms hop) go through the conv
# subsampling in time chunks of this length (birwkv7.chunked_subsampling; exact, same output). For
# parakeet-0.6b's front end (256 channels, 128 mels) one chunk's first-conv output is 256 x 3000 x 64 values
# (94 MiB in bf16) against ~5.5 GiB per hour of audio unchunked, and 8.5 h is only ~510 chunks.
SUBSAMPLING_CHUNK_FRAMES = 6000
DEFAULT_OPTIONS: dict[str, Any] = {
    "head_size": 64,
    "init": "random",
    "backend": "auto",
    "converted_from": None,
}


def register_with_nemo() -> None:
    """Allow NeMo's config instantiation to build this module's encoder (idempotent).

    NeMo 3.0 refuses any ``_target_`` outside ``nemo.core.classes.common.ALLOWED_TARGET_PREFIXES`` (it still
    requires the class to be an ``nn.Module``). Only this module's prefix is added, nothing broader.
    """
    from nemo.core.classes import common

    if TARGET_PREFIX not in common.ALLOWED_TARGET_PREFIXES:
        common.ALLOWED_TARGET_PREFIXES.append(TARGET_PREFIX)


def birwkv7_options(options: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """The ``birwkv7`` config block with defaults filled in, validated."""
    if isinstance(options, DictConfig):
        options = OmegaConf.to_container(options, resolve=True)
    opts = {**DEFAULT_OPTIONS, **dict(options or {})}
    unknown = set(opts) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown birwkv7 option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    if opts["init"] not in INIT_CHOICES:
        raise ValueError(f"birwkv7.init must be one of {INIT_CHOICES}, got {opts['init']!r}")
    opts["head_size"] = int(opts["head_size"])
    return opts


class ScaleOnlyPositionalEncoding(nn.Module):
    """Stands in for NeMo's positional encoding: x-scaling and dropout, no position signal, ``pos_emb=None``."""

    def __init__(self, xscale: float | None, dropout_rate: float) -> None:
        super().__init__()
        self.xscale = xscale
        self.dropout = nn.Dropout(dropout_rate)

    def extend_pe(self, length: int, device: torch.device, dtype: torch.dtype) -> None:
        # ConformerEncoder.set_max_audio_length calls this; there is no table to extend.
        return None

    def forward(self, x: torch.Tensor, cache_len: int = 0) -> tuple[torch.Tensor, None]:
        if self.xscale:
            x = x * self.xscale
        return self.dropout(x), None


class BiRWKV7ConformerEncoder(ConformerEncoder):
    """FastConformer encoder whose self-attention layers are bidirectional RWKV-7 time mixes.

    Takes every :class:`ConformerEncoder` argument plus ``birwkv7`` (a dict: ``head_size``, ``init``,
    ``backend``, ``converted_from``). ``self_attention_model`` may be ``"birwkv7"`` or any attention name
    (ignored: there is no attention).
    """

    def __init__(
        self, *args: Any, birwkv7: Mapping[str, Any] | DictConfig | None = None, **kwargs: Any
    ) -> None:
        opts = birwkv7_options(birwkv7)
        kwargs["self_attention_model"] = "abs_pos"
        if kwargs.get("att_context_style", "regular") != "regular" or any(
            c not in (-1, None) for c in (kwargs.get("att_context_size") or [-1, -1])
        ):
            raise ValueError(
                "BiRWKV7ConformerEncoder needs full context: att_context_size [-1, -1], style 'regular'"
            )
        super().__init__(*args, **kwargs)
        self.birwkv7_options = opts
        self.self_attention_model = SELF_ATTENTION_MODEL
        # Plain attribute, not a module: shared by reference with every layer, outside the state dict.
        self._birwkv7_context = BiRWKV7Context()
        use_bias = bool(kwargs.get("use_bias", True))
        for i, layer in enumerate(self.layers):
            mix = BiRWKV7TimeMix(
                self.d_model,
                head_size=opts["head_size"],
                layer_id=i,
                n_layers=self.n_layers,
                bias=use_bias,
                backend=opts["backend"],
            )
            mix.context = self._birwkv7_context
            layer.self_attn = mix
        dropout_pre_encoder = kwargs.get("dropout_pre_encoder", 0.1)
        self.pos_enc = ScaleOnlyPositionalEncoding(self.xscale, dropout_pre_encoder)

    @property
    def time_mixes(self) -> list[BiRWKV7TimeMix]:
        return [layer.self_attn for layer in self.layers]

    def _create_masks(
        self,
        att_context_size: Any,
        padding_length: torch.Tensor,
        max_audio_length: int,
        offset: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[torch.Tensor, None]:
        if offset is not None:
            raise NotImplementedError("BiRWKV7ConformerEncoder does not support cache-aware streaming")
        # (B, T), True at padding, as ConformerEncoder returns it; no (B, T, T) attention mask at all.
        pad_mask = (
            torch.arange(max_audio_length, device=device)[None, :] >= padding_length.to(device)[:, None]
        )
        self._birwkv7_context.pad_mask = pad_mask
        return pad_mask, None

    def forward_internal(
        self,
        audio_signal: torch.Tensor,
        length: torch.Tensor | None,
        cache_last_channel: torch.Tensor | None = None,
        cache_last_time: torch.Tensor | None = None,
        cache_last_channel_len: torch.Tensor | None = None,
        bypass_pre_encode: bool = False,
    ):
        if cache_last_channel is not None:
            raise NotImplementedError("BiRWKV7ConformerEncoder is bidirectional: no cache-aware streaming")
        if not bypass_pre_encode and self._subsample_in_chunks(audio_signal):
            # The same (B, T, feat) input NeMo's forward_internal hands pre_encode, and the same outputs; the
            # base class then runs as if pre-encoded embeddings had been passed in.
            if length is None:
                length = audio_signal.new_full(
                    (audio_signal.size(0),), audio_signal.size(-1), dtype=torch.int64
                )
            audio_signal, length = subsample_in_time_chunks(
                self.pre_encode, audio_signal.transpose(1, 2), length, SUBSAMPLING_CHUNK_FRAMES
            )
            length = length.to(torch.int64)
            bypass_pre_encode = True
        self._birwkv7_context.reset()
        try:
            return super().forward_internal(
                audio_signal,
                length,
                cache_last_channel=None,
                cache_last_time=None,
                cache_last_channel_len=None,
                bypass_pre_encode=bypass_pre_encode,
            )
        finally:
            self._birwkv7_context.reset()

    def _subsample_in_chunks(self, audio_signal: torch.Tensor) -> bool:
        """Whether this forward subsamples in time chunks: inference on more than one chunk of input.

        Training with gradients keeps NeMo's call: every chunk's activations would be kept for backward anyway,
        so chunking saves nothing there, and training utterances are short.
        """
        # The geometry check is not redundant with subsample_in_time_chunks' own fallback: that fallback calls
        # pre_encode(x=, lengths=), which an nn.Linear pre_encode (subsampling factor 1) does not accept.
        inference = not self.training or not torch.is_grad_enabled()
        return (
            inference
            and audio_signal.size(-1) > SUBSAMPLING_CHUNK_FRAMES
            and time_geometry(self.pre_encode) is not None
        )

    def change_attention_model(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("BiRWKV7ConformerEncoder has no attention to change")


register_with_nemo()

__all__ = [
    "BiRWKV7ConformerEncoder",
    "ScaleOnlyPositionalEncoding",
    "birwkv7_options",
    "register_with_nemo",
    "TARGET",
    "SELF_ATTENTION_MODEL",
    "SUBSAMPLING_CHUNK_FRAMES",
]
