"""Parakeet-architecture models built from config, offline, at any size.

`parakeet_tdt_ctc_config` mirrors the published config of nvidia/parakeet-tdt_ctc-110m
(`EncDecHybridRNNTCTCBPEModel`: FastConformer encoder with dw_striding x8 subsampling and relative-position
attention, an LSTM prediction network, a TDT joint with durations [0, 1, 2, 3, 4], an auxiliary CTC head),
with the sizes left as arguments. Tests build tiny ones in seconds; the offline demo trains a small one as
its English stand-in, since no checkpoint can be downloaded here.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

# parakeet-tdt_ctc-110m's sizes, for reference and for benchmarks of the real shape.
PARAKEET_110M = dict(d_model=512, n_layers=17, n_heads=8, pred_hidden=640, joint_hidden=640, subsampling_conv_channels=256)
# The smallest shape that still has every layer type; builds and runs a step in well under a second.
TINY = dict(d_model=32, n_layers=2, n_heads=2, pred_hidden=32, joint_hidden=32, subsampling_conv_channels=16)

TDT_DURATIONS = [0, 1, 2, 3, 4]


def parakeet_tdt_ctc_config(
    tokenizer_dir: str | os.PathLike,
    *,
    d_model: int = TINY["d_model"],
    n_layers: int = TINY["n_layers"],
    n_heads: int = TINY["n_heads"],
    pred_hidden: int = TINY["pred_hidden"],
    joint_hidden: int = TINY["joint_hidden"],
    subsampling_conv_channels: int = TINY["subsampling_conv_channels"],
    durations: list[int] | None = None,
    conv_kernel_size: int = 9,
    spec_augment: bool = True,
) -> DictConfig:
    """The model config of parakeet-tdt_ctc-110m with sizes as arguments (defaults: tiny)."""
    durations = list(TDT_DURATIONS if durations is None else durations)
    cfg: dict[str, Any] = {
        "sample_rate": 16000,
        "compute_eval_loss": False,
        "log_prediction": False,
        "rnnt_reduction": "mean_volume",
        "skip_nan_grad": False,
        "model_defaults": {
            "enc_hidden": d_model,
            "pred_hidden": pred_hidden,
            "joint_hidden": joint_hidden,
            "tdt_durations": durations,
            "num_tdt_durations": len(durations),
        },
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": 80,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1.0e-05,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2,
            "time_masks": 10,
            "freq_width": 27,
            "time_width": 0.05,
        }
        if spec_augment
        else None,
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 80,
            "feat_out": -1,
            "n_layers": n_layers,
            "d_model": d_model,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": subsampling_conv_channels,
            "causal_downsampling": False,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": n_heads,
            "att_context_size": [-1, -1],
            "att_context_style": "regular",
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": conv_kernel_size,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
            "stochastic_depth_drop_prob": 0.0,
            "stochastic_depth_mode": "linear",
            "stochastic_depth_start_layer": 1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {"pred_hidden": pred_hidden, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.2},
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": True,
            "fused_batch_size": 4,
            "jointnet": {
                "joint_hidden": joint_hidden,
                "activation": "relu",
                "dropout": 0.2,
                "encoder_hidden": d_model,
                "pred_hidden": pred_hidden,
            },
            "num_extra_outputs": len(durations),
        },
        "decoding": {
            "strategy": "greedy_batch",
            "model_type": "tdt",
            "durations": durations,
            "greedy": {"max_symbols": 10},
            "beam": {"beam_size": 2, "return_best_hypothesis": False, "score_norm": True},
        },
        "aux_ctc": {
            "ctc_loss_weight": 0.3,
            "use_cer": False,
            "ctc_reduction": "mean_batch",
            "decoder": {
                "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
                "feat_in": None,
                "num_classes": -1,
                "vocabulary": [],
            },
            "decoding": {"strategy": "greedy_batch"},
        },
        "loss": {
            "loss_name": "tdt",
            "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": durations, "sigma": 0.02, "omega": 0.1},
        },
        "optim": {
            "name": "adamw",
            "lr": 1.0e-3,
            "betas": [0.9, 0.98],
            "weight_decay": 1.0e-3,
            "sched": {"name": "CosineAnnealing", "warmup_steps": 10, "min_lr": 1.0e-6},
        },
    }
    return OmegaConf.create(cfg)


def build_parakeet_model(tokenizer_dir: str | os.PathLike, seed: int = 0, **sizes: Any):
    """Build an `EncDecHybridRNNTCTCBPEModel` of parakeet-tdt_ctc-110m's architecture from config, offline.

    `sizes` are `parakeet_tdt_ctc_config` keywords (defaults: tiny). The model is in eval mode on CPU.
    """
    import torch
    from nemo.collections.asr.models import EncDecHybridRNNTCTCBPEModel

    torch.manual_seed(seed)
    model = EncDecHybridRNNTCTCBPEModel(cfg=parakeet_tdt_ctc_config(tokenizer_dir, **sizes))
    return model.eval()
