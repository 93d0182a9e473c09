"""BiRWKV7 initialisation: from the pretrained attention vs random, fine-tuned on the offline demo's corpus.

    uv run python bench/bench_birwkv7_init.py [--steps 800] [--every 100]

Uses the demo's cached corpus, English stand-in and merged tokenizer (built on first use, as the demo does),
then for each `init` runs the demo's recipe with `using_birwkv7=true`: transplant, convert every attention
layer to BiRWKV7, fine-tune on English + Hindi with the demo's steps, learning rate and data order. The
attention model (no conversion) runs beside them as the reference. Writes the validation curves as a table
to bench/RESULTS.md: which initialisation converges faster, in the same steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402
from demo.common import DEMO_SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def run(cfg, init: str | None, steps: int, every: int) -> dict:
    from lightning.pytorch import seed_everything

    from demo import pipeline as demo
    from demo.common import history_path
    from enhi.training import configure_model, fit, load_model
    from enhi.transplant import change_vocabulary

    name = f"birwkv7_{init}" if init else "attention"
    c = demo.arm_config(cfg, demo.Arm(f"init_bench_{name}", True))
    c.trainer.max_steps, c.trainer.val_check_interval = steps, every
    seed_everything(cfg.seed)  # the same new-layer draws as the demo script
    model = load_model(cfg)
    change_vocabulary(model, cfg.model.tokenizer.dir, transplant=True)
    if init:
        from birwkv7.convert import convert_to_birwkv7

        model = convert_to_birwkv7(model, head_size=None, init=init)
    configure_model(model, c, bnb_optim=False)
    _, val, timer = fit(model, c, history_path=history_path(c))
    times = sorted(timer.times)
    return {"name": name, "history": val.history, "median_s": times[len(times) // 2]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the demo's)")
    p.add_argument("--every", type=int, default=None, help="validate every N steps (default: the demo's)")
    args = p.parse_args()

    import torch

    from demo import pipeline as demo
    from demo.common import N_VAL
    from enhi.config import load_run_config

    torch.set_num_threads(max(1, torch.get_num_threads()))
    steps, every = args.steps or demo.FINETUNE_STEPS, args.every or demo.FINETUNE_EVERY
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS)
    cfg = demo.prepare(cfg)
    runs = [run(cfg, init, steps, every) for init in ("attention", "random", None)]

    lines = [
        f"Validation after each interval on the demo's unseen voices ({N_VAL} English, {N_VAL} Hindi utterances): English",
        "WER / Hindi CER. `attention` = the unconverted model, the reference.",
        "",
        "| step | " + " | ".join(f"{r['name']} EN WER | {r['name']} HI CER" for r in runs) + " |",
        "|---:|" + "---:|" * (2 * len(runs)),
    ]
    for i, point in enumerate(runs[0]["history"]):
        cells = []
        for r in runs:
            h = r["history"][i]
            cells += [f"{h['val_en_wer']:.3f}", f"{h['val_hi_cer']:.3f}"]
        lines.append(f"| {point['step']} | " + " | ".join(cells) + " |")
    lines += ["", "median s/step: " + ", ".join(f"{r['name']} {r['median_s']:.2f}" for r in runs)]
    table = "\n".join(lines)
    print(table)
    title = f"BiRWKV7 initialisation on the demo corpus ({steps} steps, bench/bench_birwkv7_init.py)"
    write_section("birwkv7_init", "\n".join(header(title)) + "\n" + table + "\n")


if __name__ == "__main__":
    main()
