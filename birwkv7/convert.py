"""Convert a loaded FastConformer ASR model so every self-attention becomes a bidirectional RWKV-7 time mix.

``convert_to_birwkv7(model)`` rewrites ``model.cfg.encoder`` to :class:`BiRWKV7ConformerEncoder` (see
:mod:`birwkv7.nemo_encoder`), builds that encoder from the new config, copies every non-attention weight
(pre-encoder, feed-forwards, convolutions with their BatchNorm statistics, layer norms, output projection)
and, with ``init="attention"``, initialises each time mix's receptance/key/value/output from the layer's
attention query/key/value/output projections (weights and biases). Positional encoding is dropped.
Because the config alone now describes the model, ``save_to`` / ``restore_from`` need no manual step.

Convert before setting up an optimizer: the new parameters are not in an existing one.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from omegaconf import DictConfig, open_dict

from birwkv7.layer import BiRWKV7TimeMix

ATTENTION_PROJECTIONS = ("linear_q", "linear_k", "linear_v", "linear_out")


def birwkv7_encoder_config(
    encoder_cfg: DictConfig, head_size: int | None = 64, init: str = "attention", backend: str = "auto"
) -> DictConfig:
    """The BiRWKV7 encoder config derived from a ConformerEncoder config (a copy; the input is unchanged).

    ``head_size=None`` uses the attention's own head size (d_model / n_heads).
    """
    from birwkv7.nemo_encoder import SELF_ATTENTION_MODEL, TARGET, birwkv7_options

    if encoder_cfg.get("_target_") == TARGET:
        raise ValueError("the encoder is already a BiRWKV7ConformerEncoder")
    d_model = int(encoder_cfg.d_model)
    if head_size is None:
        head_size = d_model // int(encoder_cfg.get("n_heads", 4))
    if head_size <= 0 or d_model % head_size:
        raise ValueError(f"d_model={d_model} is not a multiple of head_size={head_size}")
    options = birwkv7_options(
        {
            "head_size": head_size,
            "init": init,
            "backend": backend,
            "converted_from": encoder_cfg.get("self_attention_model", "rel_pos"),
        }
    )
    cfg = copy.deepcopy(encoder_cfg)
    with open_dict(cfg):
        cfg._target_ = TARGET
        cfg.self_attention_model = SELF_ATTENTION_MODEL
        cfg.birwkv7 = options
    return cfg


def convert_to_birwkv7(
    model: Any, head_size: int | None = 64, init: str = "attention", backend: str = "auto"
) -> Any:
    """Swap ``model.encoder`` (a NeMo ConformerEncoder) for a BiRWKV7 one in place; returns ``model``.

    ``init``: "attention" copies the attention projections into receptance/key/value/output wherever the
    shapes match; "random" keeps the RWKV-7 reference initialisation (output projection zero, so each
    new layer starts as an identity in the residual stream). Every other encoder weight is copied.
    """
    from nemo.collections.asr.modules import ConformerEncoder

    old = model.encoder
    if not isinstance(old, ConformerEncoder):
        raise TypeError(f"model.encoder is {type(old).__name__}, not a ConformerEncoder")
    new_cfg = birwkv7_encoder_config(model.cfg.encoder, head_size=head_size, init=init, backend=backend)
    new = model.from_config_dict(new_cfg)

    # Everything but attention and positional encoding carries over by name and must fit exactly.
    state = {
        k: v for k, v in old.state_dict().items() if ".self_attn." not in k and not k.startswith("pos_enc.")
    }
    missing, unexpected = new.load_state_dict(state, strict=False)
    stray = [k for k in missing if ".self_attn." not in k]
    if stray or unexpected:
        raise RuntimeError(f"encoder weights do not line up: missing {stray}, unexpected {list(unexpected)}")

    if init == "attention":
        for old_layer, new_layer in zip(old.layers, new.layers, strict=True):
            mix: BiRWKV7TimeMix = new_layer.self_attn
            q, k, v, o = (getattr(old_layer.self_attn, name) for name in ATTENTION_PROJECTIONS)
            if not mix.load_attention_weights(q, k, v, o):
                raise RuntimeError("no attention projection matched the time mix's shapes")

    param = next(old.parameters())
    new.to(device=param.device, dtype=param.dtype)
    new.train(old.training)
    model.encoder = new

    cfg = copy.deepcopy(model.cfg)
    with open_dict(cfg):
        cfg.encoder = new_cfg
    model.cfg = cfg
    # NeMo tags every submodule with the model's guid (used by its tensor-access registry); tag the new ones.
    if hasattr(model, "propagate_model_guid") and getattr(model, "model_guid", None) is not None:
        model.propagate_model_guid()
    return model


def restore(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``ASRModel.restore_from`` that also works for converted models (registers the encoder with NeMo first)."""
    from nemo.collections.asr.models import ASRModel

    import birwkv7.nemo_encoder  # noqa: F401  (import registers the _target_ prefix with NeMo)

    return ASRModel.restore_from(str(path), map_location=map_location)


def is_birwkv7(model: Any) -> bool:
    """Whether ``model``'s encoder config is the BiRWKV7 one (so a restored model carries the swap)."""
    from birwkv7.nemo_encoder import TARGET

    enc = model.cfg.get("encoder") if isinstance(model.cfg, DictConfig) else None
    return bool(enc is not None and enc.get("_target_") == TARGET)


__all__ = ["convert_to_birwkv7", "birwkv7_encoder_config", "is_birwkv7", "restore"]
