"""Longest audio in one pass and its RTFx: a 0.6b-shaped FastConformer encoder, attention vs BiRWKV7.

    python bench/bench_long_audio.py [--hours 0.5 1 2 4 8.5 12] [--layers 24]

Builds parakeet-tdt-0.6b's encoder shape from config (d_model 1024, 24 layers, 8 heads, dw_striding x8;
random weights: speed and memory do not depend on them) once with relative-position attention and once with
BiRWKV7, and runs inference (bf16 autocast, no grad) on log-mel features of increasing length, one utterance
per pass, until the GPU runs out of memory. RTFx = audio seconds / wall seconds for the encoder alone
(feature extraction and decoding excluded: the encoder is what grows with length). Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import header, write_section  # noqa: E402

FRAMES_PER_SECOND = 100  # 10 ms feature stride


def encoder(kind: str, layers: int):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 128, "n_layers": layers, "d_model": 1024, "subsampling": "dw_striding", "subsampling_factor": 8,
            "subsampling_conv_channels": 256, "ff_expansion_factor": 4, "self_attention_model": "rel_pos",
            "n_heads": 8, "att_context_size": [-1, -1], "xscaling": True, "untie_biases": True,
            "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": "batch_norm", "dropout": 0.0,
            "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0,
        }
    )
    if kind == "birwkv7":
        from birwkv7.convert import birwkv7_encoder_config

        cfg = birwkv7_encoder_config(cfg, head_size=64, init="random", backend="auto")
    from nemo.core.classes.common import Serialization

    return Serialization.from_config_dict(cfg).cuda().eval()


def run_one(enc, seconds: float) -> tuple[float, float]:
    frames = int(seconds * FRAMES_PER_SECOND)
    x = torch.randn(1, enc._feat_in, frames, device="cuda")
    n = torch.tensor([frames], device="cuda")
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        enc(audio_signal=x, length=n)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, nargs="+", default=[0.25, 1, 2, 4, 8.5, 12])
    ap.add_argument("--layers", type=int, default=24)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_long_audio needs a CUDA GPU")
    rows = []
    for kind in ("attention", "birwkv7"):
        enc = encoder(kind, args.layers)
        run_one(enc, 30.0)  # warm-up: kernel build and autotuning
        for h in args.hours:
            try:
                wall, mem = run_one(enc, h * 3600)
                rows.append((kind, h, f"{wall:.2f}", f"{h * 3600 / wall:.0f}", f"{mem:.1f}"))
            except torch.OutOfMemoryError:
                rows.append((kind, h, "OOM", "-", "-"))
                torch.cuda.empty_cache()
                break
            print(rows[-1], flush=True)
        del enc
        torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    lines = header(f"Long audio in one pass: 0.6b-shaped encoder ({args.layers} layers), bf16 inference") + [
        f"GPU memory: {total:.0f} GiB. Encoder only, batch 1, random weights; RTFx = audio s / wall s.",
        "",
        "| encoder | audio (h) | wall (s) | RTFx | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {k} | {h} | {w} | {r} | {m} |" for k, h, w, r, m in rows],
    ]
    text = "\n".join(lines)
    print(text)
    write_section("long-audio-bench", text)


if __name__ == "__main__":
    main()
