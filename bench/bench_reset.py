"""Where English is lost: put back the stand-in's weights of one part of a fine-tuned model at a time.

    uv run python bench/bench_adaptation.py --arms recipe        # first: the recipe's runs (their last checkpoints)
    uv run python bench/bench_reset.py [--arm recipe]

For each seed's final checkpoint of the arm (demo_cache/bench_runs/<arm>__seed<k>/), English WER and Hindi CER on
the demo's validation sets after resetting one part (encoder, prediction network, joint, CTC head) to the weights
fine-tuning started from, the new tokens' rows kept as trained (enhi/reset.py). A reset that brings English back
says the part holds what was lost; if Hindi goes with it, Hindi was learned in the same place and freezing that
part would give it back. Mean and standard deviation over seeds; the table goes to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _last_checkpoint(run_dir: Path) -> Path:
    found = sorted(run_dir.rglob("*-last.ckpt"))
    if not found:
        sys.exit(f"error: {run_dir}: no last checkpoint; run bench/bench_adaptation.py for this arm and seed first")
    return found[-1]


def measure(model, start: dict, sets: dict, ckpt: Path) -> dict[str, dict[str, float]]:
    """English WER and Hindi CER (TDT) of the checkpoint as trained, after each part's reset, and the start.
    `model`: the start model's architecture; its weights are overwritten."""
    import torch

    from enhi.evaluate import evaluate_sets
    from enhi.reset import PARTS, reset_part

    trained = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    out = {}
    for label, prefixes in [("as trained", []), *[(f"{p} reset", [x]) for p, x in PARTS.items()],
                            ("everything but the new rows reset", list(PARTS.values()))]:
        model.load_state_dict(trained)
        for prefix in prefixes:
            reset_part(model, start, prefix)
        r = evaluate_sets(model, sets, 16)
        out[label] = {"en_wer": r["en"]["wer"], "hi_cer": r["hi"]["cer"]}
        print(f"  {label}: English WER {r['en']['wer']:.3f}, Hindi CER {r['hi']['cer']:.3f}", flush=True)
    return out


def main() -> None:
    from omegaconf import OmegaConf

    from bench.bench_adaptation import _demo_config
    from demo.common import CACHE
    from enhi.reset import start_model, weights_copy
    from enhi.training import eval_sets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", default="recipe", help="the bench_adaptation arm whose final checkpoints are examined")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()

    config, _ = _demo_config()
    cfg = OmegaConf.load(config)
    model = start_model(cfg.init_from_nemo_model, cfg.model.tokenizer.dir)  # loaded once, reused for every seed
    start = weights_copy(model)
    sets = eval_sets(cfg.model.validation_ds)
    per_seed = []
    for seed in args.seeds:
        ckpt = _last_checkpoint(CACHE / "bench_runs" / f"{args.arm}__seed{seed}")
        print(f"seed {seed}: {ckpt.relative_to(CACHE)}", flush=True)
        per_seed.append(measure(model, start, sets, ckpt))

    def cell(label: str, key: str) -> str:
        xs = [r[label][key] for r in per_seed]
        return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"

    lines = [f"Final checkpoints of the `{args.arm}` arm, {len(per_seed)} seeds (mean ± sd). A reset puts back the "
             "weights fine-tuning started from (the stand-in's, with the enlarged vocabulary); the new tokens' rows "
             "keep their trained values.", "",
             "| model | English WER | Hindi CER |", "|---|---:|---:|"]
    lines += [f"| {label} | {cell(label, 'en_wer')} | {cell(label, 'hi_cer')} |" for label in per_seed[0]]
    table = "\n".join(lines)
    print("\n" + table)
    write_section("reset", "\n".join(header("Where English is lost: one part reset at a time (bench/bench_reset.py)"))
                  + "\n" + table + "\n")


if __name__ == "__main__":
    main()
