"""The README's real-model path, rehearsed at full size on a CPU: whatever breaks at the 110m's size breaks here,
not on a rare GPU.

    uv run python bench/rehearse_full_size.py                      # 110m shape, 4 steps per optimizer (~5 min on 2 cores)
    uv run python bench/rehearse_full_size.py --steps 2 --keep /tmp/rehearsal

Builds parakeet-tdt_ctc-110m's architecture from its configuration (`enhi.tiny_model`, random weights, Parakeet's
real English tokenizer) and saves it as a `.nemo`, the stand-in for the checkpoint a user downloads; synthesizes a
small English + Hindi corpus; then runs quick start B's commands as a user would, each in its own process:
  1. merge_token.py --base MODEL.nemo --new assets/tokenizers/hi256 (the tokenizer read out of the .nemo),
  2. check_data.py on the manifests,
  3. ft_110M_enhi_demo.py adapt_only=true, and eval_nemo.py on the original and the adapted model: the English
     transcripts must be identical (the transplant's step-0 promise, at full size),
  4. ft_110M_enhi_demo.py for a few steps with AdamW and with bnb_optim=true (validation included),
  5. the fine-tuned .nemo through stock NeMo's `ASRModel.restore_from` + `transcribe([paths])` (no project code),
  6. export_onnx.py, then onnx-asr on the same clips: its transcripts against NeMo's.
Each step's wall time and peak memory (the child process's max RSS) go into a table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Stock NeMo only: restore the fine-tuned file and transcribe paths, as a user of the .nemo would.
STOCK_NEMO = """
import json, sys
from nemo.collections.asr.models import ASRModel
model = ASRModel.restore_from(sys.argv[1], map_location="cpu")
hyps = model.transcribe(sys.argv[3:], batch_size=4)
hyps = hyps[0] if isinstance(hyps, tuple) else hyps
json.dump([h.text if hasattr(h, "text") else str(h) for h in hyps], open(sys.argv[2], "w"))
"""
# onnx-asr alone on the exported folder, as a deployment without PyTorch or NeMo runs it.
ONNX_ASR = """
import json, sys
import onnx_asr
model = onnx_asr.load_model("nemo-conformer-tdt", sys.argv[1])
json.dump(list(model.recognize(sys.argv[3:])), open(sys.argv[2], "w"))
"""


def run_step(name: str, cmd: list[str], rows: list[dict], log: Path) -> None:
    """One command in its own process; its wall time, peak RSS and exit status into `rows`. Raises on failure."""
    print(f"== {name}: {shlex.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))[:200]}", flush=True)
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n===== {name}: {shlex.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"step": name, "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gib": usage.ru_maxrss / 2**20,
           "rc": proc.returncode}
    rows.append(row)
    print(f"   {row['wall_s']:.0f} s, peak {row['peak_rss_gib']:.2f} GiB, exit {row['rc']}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {log}")


def build_model(out: Path, shape: str) -> int:
    from enhi.tiny_model import PARAKEET_110M, TINY, build_parakeet_model
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    tok = write_nemo_tokenizer_folder(ROOT / "assets" / "tokenizers" / "en1024" / "tokenizer.model", out.parent / "en1024")
    model = build_parakeet_model(tok, seed=0, **(PARAKEET_110M if shape == "110m" else TINY))
    model.save_to(str(out))
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["110m", "tiny"], default="110m", help="model shape (tiny: a quick dry run)")
    p.add_argument("--steps", type=int, default=4, help="fine-tuning steps per optimizer (default 4)")
    p.add_argument("--utterances", type=int, default=24, help="synthesized training utterances per language")
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)")
    p.add_argument("--no-results", action="store_true", help="print the table only; leave bench/RESULTS.md alone")
    args = p.parse_args(argv)

    from demo.corpus import build_corpus
    from enhi.manifest import read_manifest

    work = args.keep or Path(tempfile.mkdtemp(prefix="rehearsal_"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "rehearsal.log"
    py = sys.executable
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        base = work / f"parakeet-{args.shape}-random.nemo"
        t = time.perf_counter()
        params = build_model(base, args.shape)
        rows.append({"step": f"build the {args.shape} model from config, save .nemo", "wall_s": round(time.perf_counter() - t, 1),
                     "peak_rss_gib": None, "rc": 0})
        info = build_corpus(work / "corpus", n_train_per_lang=args.utterances, n_val_per_lang=4, seed=0)
        m = info["manifests"]
        merged = work / "en_hi"
        manifests = (f"model.train_ds.manifests=[{{path: {m['en_train']}, lang: en, weight: 0.5}}, "
                     f"{{path: {m['hi_train']}, lang: hi, weight: 0.5}}]")
        val_sets = (f"model.validation_ds.sets=[{{name: en, path: {m['en_val']}, lang: en}}, "
                    f"{{name: hi, path: {m['hi_val']}, lang: hi}}]")
        run = [f"model.tokenizer.dir={merged}", manifests, val_sets]

        run_step("1. merge tokenizers (base read from the .nemo)",
                 [py, "merge_token.py", "--base", str(base), "--new", "assets/tokenizers/hi256", "--out", str(merged)], rows, log)
        run_step("2. data check", [py, "check_data.py", *run], rows, log)
        adapted = work / "adapted.nemo"
        run_step("3. adapt_only (transplant)", [py, "ft_110M_enhi_demo.py", f"init_from_nemo_model={base}", "adapt_only=true",
                                                f"save_to={adapted}", *run], rows, log)
        for name, model in (("original", base), ("adapted", adapted)):
            run_step(f"3. eval_nemo.py, {name}", [py, "eval_nemo.py", "--model", str(model), "--manifest", m["en_val"],
                                                  "--out", str(work / f"{name}_en.jsonl")], rows, log)
        same = [json.loads(x)["pred_text"] for x in (work / "original_en.jsonl").read_text().splitlines()] == \
               [json.loads(x)["pred_text"] for x in (work / "adapted_en.jsonl").read_text().splitlines()]
        finals = {}
        for optimizer, switch in (("AdamW", "bnb_optim=false"), ("AdamW8bit", "bnb_optim=true")):
            name = f"rehearsal_{optimizer.lower()}"
            run_step(f"4. fine-tune {args.steps} steps, {optimizer}",
                     [py, "ft_110M_enhi_demo.py", f"init_from_nemo_model={base}", switch, *run,
                      f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}",
                      "model.train_ds.batch_duration=60", "model.train_ds.num_buckets=1",
                      f"exp_manager.exp_dir={work / 'runs'}", f"exp_manager.name={name}",
                      "exp_manager.create_tensorboard_logger=false"], rows, log)
            finals[optimizer] = work / "runs" / name / "checkpoints" / f"{name}.nemo"
        clips = [e.audio_filepath for key in ("en_val", "hi_val") for e in read_manifest(m[key])]
        final = finals["AdamW8bit"]
        run_step("5. stock NeMo restore_from + transcribe(paths)",
                 [py, "-c", STOCK_NEMO, str(final), str(work / "nemo.json"), *clips], rows, log)
        run_step("6. export_onnx.py", [py, "export_onnx.py", "--model", str(final), "--out", str(work / "onnx")], rows, log)
        run_step("6. onnx-asr transcribes", [py, "-c", ONNX_ASR, str(work / "onnx"), str(work / "onnx.json"), *clips], rows, log)
        nemo_texts = json.loads((work / "nemo.json").read_text())
        onnx_texts = json.loads((work / "onnx.json").read_text())
        agree = sum(a == b for a, b in zip(nemo_texts, onnx_texts, strict=True))
        verdicts = [
            f"English transcripts of the original and the adapted model identical: {'yes' if same else 'NO'}",
            f"stock NeMo transcribed {len(nemo_texts)} clips of the fine-tuned (AdamW8bit) .nemo; onnx-asr agrees on "
            f"{agree} of {len(clips)}",
        ]
        status = 0 if same and agree == len(clips) else 1
    except RuntimeError as e:
        verdicts, status, params = [f"FAILED: {e}"], 1, locals().get("params", 0)
    total = time.perf_counter() - t0
    lines = [
        f"parakeet-tdt_ctc-110m's architecture ({params / 1e6:.1f} M parameters, random weights) through quick start B, "
        f"each step a process of its own; {args.utterances} training utterances per language, 60 s batches, "
        f"{args.steps} steps per optimizer, precision as `trainer.precision: auto` picks on this machine. "
        f"Peak memory: the step's max RSS. Total {total / 60:.1f} min.",
        "",
        "| step | wall (s) | peak RSS (GiB) | exit |",
        "|---|---:|---:|---:|",
        *[f"| {r['step']} | {r['wall_s']:.1f} | {'-' if r['peak_rss_gib'] is None else format(r['peak_rss_gib'], '.2f')} | {r['rc']} |"
          for r in rows],
        "",
        *[f"- {v}" for v in verdicts],
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_results and args.shape == "110m":
        write_section("rehearsal", "\n".join([*header("Full-size rehearsal of quick start B on CPU (bench/rehearse_full_size.py)"), text]))
        print("\nwrote bench/RESULTS.md (rehearsal)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
