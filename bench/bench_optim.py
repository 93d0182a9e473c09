"""Optimizer state bytes and seconds per step: AdamW vs bitsandbytes AdamW8bit on a Parakeet-shaped model.

    uv run python bench/bench_optim.py [--shape 110m|standin] [--steps 3]

Builds parakeet-tdt_ctc-110m's architecture from config (random weights: memory and speed do not depend on
them) with the merged en1024_hi256 vocabulary, takes real optimizer steps on a batch of random audio through
the model's own loss (NeMo's TDT loss on CUDA, the project's PyTorch TDT loss on CPU), and counts the bytes of
every tensor in the optimizer state. Writes its table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def run(shape: str, optimizer: str, steps: int, device: str) -> dict:
    import bitsandbytes as bnb

    from enhi.evaluate import audio_batch
    from enhi.tiny_model import PARAKEET_110M, build_parakeet_model
    from enhi.transplant import install_cpu_tdt_loss

    sizes = PARAKEET_110M if shape == "110m" else {}
    model = build_parakeet_model(ROOT / "en1024_hi256", seed=0, **sizes).to(device).train()
    install_cpu_tdt_loss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    cls = bnb.optim.AdamW8bit if optimizer == "AdamW8bit" else torch.optim.AdamW
    opt = cls(params, lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    sig, lens = audio_batch([torch.randn(16000 * 4, generator=g).numpy() * 0.1 for _ in range(4)], torch.device(device))
    tr = torch.randint(0, model.tokenizer.vocab_size, (4, 20), generator=g).to(device)
    tl = torch.full((4,), 20, device=device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        enc, el = model.forward(input_signal=sig, input_signal_length=lens)
        dec, _, _ = model.decoder(targets=tr, target_length=tl)
        loss = model.loss(log_probs=model.joint.joint(enc.transpose(1, 2), dec.transpose(1, 2)), targets=tr,
                          input_lengths=el, target_lengths=tl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in params)
    return {
        "shape": shape,
        "optimizer": optimizer,
        "params": n_params,
        "state_bytes": state_bytes(opt),
        "bytes_per_param": state_bytes(opt) / n_params,
        "step_s": sorted(times[1:] or times)[len(times[1:] or times) // 2],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["110m", "standin"], default="110m")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps (the first is excluded from timing)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [run(args.shape, o, args.steps, device) for o in ("AdamW", "AdamW8bit")]
    lines = header(f"Optimizer state: AdamW vs AdamW8bit ({args.shape} shape, {device})") + [
        "Batch: 4 utterances x 4 s of random audio, 20 target tokens each; vocabulary 1278 (en1024_hi256).",
        "",
        "| optimizer | parameters | state (MiB) | bytes/param | median s/step |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {r['optimizer']} | {r['params']:,} | {r['state_bytes'] / 2**20:.1f} | {r['bytes_per_param']:.2f} | {r['step_s']:.3f} |"
            for r in rows
        ],
        "",
        f"AdamW8bit keeps {rows[1]['state_bytes'] / rows[0]['state_bytes']:.1%} of AdamW's state bytes. "
        "bitsandbytes keeps 32-bit state for tensors under 4096 elements (biases, norms), hence not exactly 25%.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(f"optim-bench-{args.shape}-{device}", text)


if __name__ == "__main__":
    main()
