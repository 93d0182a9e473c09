"""Every GPU claim of the recipe checked by one command that fits in 8 minutes on one H100/H200.

    python3 bench/gpu_check.py [--results $OUT/RESULTS.md] [--budget-s 470] [--parts ...]
    uv run python bench/gpu_check.py --dry-run [--results /tmp/x/RESULTS.md]   # toy sizes, CPU, ~1.5 min

Parts, in order (each under its own time limit, so a slow one cannot starve the others of all time):
  setup       installs the wheels in .whl/ (bench/prepare_gpu_wheels.py) into a private folder, offline, when
              the machine lacks a package the check needs (a GPU image has torch but not NeMo, bitsandbytes, fla);
              records the versions of torch, CUDA, the driver, cuda-bindings, NeMo;
  cuda-tests  the CUDA tests of the test suite (wkv7 op and layer, bf16 autocast with the CUDA kernels, NeMo's
              CUDA TDT loss against the project's PyTorch loss at a realistic shape), through pytest;
  decoder-ladder  NeMo's greedy TDT decoder in every CUDA-graph mode on the unadapted 110m-shaped model, safest
              first (encoder only; graphs disabled; no_graphs, no_while_loops, full_graph forced; NeMo's choice):
              which modes run, whether their transcripts agree, the fastest safe one (bench/gpu/decoder.py);
  finetune    a 110m-shaped model (random weights) adapted to the merged tokenizer with the vocabulary
              transplant and fine-tuned in bf16-mixed on synthesized speech through the recipe's own `fit`,
              once with AdamW and once with bitsandbytes AdamW8bit (`bnb_optim`): median step time, peak GPU
              memory, optimizer state, finite losses, and an assertion that the loss that ran is NeMo's CUDA
              TDT loss with the model's durations; then transcription RTFx of the adapted models against
              the unadapted one on the same audio. The decoder runs in the recipe's CUDA-graph mode
              (`--decoder-cuda-graphs`, default `disabled`); with graphs, a part that dies of a CUDA error runs
              once more with them disabled, and both outcomes are recorded;
  batch-24g   the largest batch_duration a training step fits in under a 24 GiB cap, AdamW against AdamW8bit,
              110m and 0.6b shapes (bench/gpu/memory.py);
  wkv7        bench/bench_wkv7.py's cases without fla (ours, SDPA, the chunked PyTorch reference);
  long-audio  bench/bench_long_audio.py's encoders (0.6b shape) on ever longer audio up to the first
              out-of-memory, the ladder sized to the card and to the time left;
  wkv7-fla    fla's `chunk_rwkv7` beside ours (last: its first call autotunes for minutes).
The parts live in bench/gpu/ (environment, decoder, finetune, kernels; report writes the tables and targets).
Each table goes into the results file (sections of bench/RESULTS.md, through bench/results.py) with machine,
date and command; a one-screen summary ends the run, with pass/miss lines against the targets computed
only from numbers measured in this run. `--dry-run` runs every part at toy sizes on the CPU (the CUDA-only
ones report "skipped: no GPU"), never touches bench/RESULTS.md, and is part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.gpu.common import DEFAULT_RESULTS, DRY_SIZES, GPU_SIZES, PARTS, ROOT, PartLog, Sizes, is_cuda_fault  # noqa: E402
from bench.gpu.decoder import part_decoder_ladder  # noqa: E402
from bench.gpu.environment import part_cuda_tests, part_setup  # noqa: E402
from bench.gpu.finetune import part_finetune  # noqa: E402
from bench.gpu.kernels import part_long_audio, part_wkv7  # noqa: E402
from bench.gpu.memory import part_batch_24g  # noqa: E402
from bench.gpu.report import summary_text, write_results  # noqa: E402
from enhi.decoding import DECODER_CUDA_GRAPHS, DEFAULT_DECODER_CUDA_GRAPHS  # noqa: E402

WHEELS = ROOT / ".whl"

# Seconds each part may take at most on a GPU (the run's own deadline cuts them further); unused time flows
# to later parts. wkv7-fla comes last and takes what is left: fla's first call autotunes for ~3 minutes.
PART_CAP_S = {"cuda-tests": 100, "decoder-ladder": 75, "finetune": 140, "batch-24g": 150, "wkv7": 40, "long-audio": 90, "wkv7-fla": 600}

MIN_RETRY_S = 60.0  # the least time left worth a second fine-tune attempt (a 110m one takes about 2 minutes)


# ----------------------------------------------------------------------------------------------------------
# Running the parts: each as its own process on a GPU (a hard time limit, and one part's memory or CUDA
# state cannot leak into another's figures); the dry run runs them in this process (a second NeMo import
# costs ~30 s on a small CPU) except `wkv7`, which keeps the child-process path tested.
# ----------------------------------------------------------------------------------------------------------

CHILD_PARTS: dict[str, Callable[[Sizes, PartLog, float], None]] = {
    "decoder-ladder": part_decoder_ladder,
    "batch-24g": part_batch_24g,
    "finetune": part_finetune,
    "wkv7": lambda sz, log, dl: part_wkv7(sz, log, dl, with_fla=False),
    "long-audio": part_long_audio,
    "wkv7-fla": lambda sz, log, dl: part_wkv7(sz, log, dl, with_fla=True),
}


def run_logged(name: str, fn: Callable[[PartLog], None], path: Path | None = None) -> dict[str, Any]:
    """Run one part's function; an exception becomes its "failed: ..." status instead of ending the check."""
    log = PartLog(name, path)
    try:
        fn(log)
    except Exception as exc:
        traceback.print_exc()
        log.d["traceback"] = traceback.format_exc()  # the whole chain, causes included, into the record
        log.finish(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    log.d["seconds"] = round(time.perf_counter() - log.t0, 1)
    log.flush()
    return log.d


def run_child_part(name: str, sz: Sizes, path: Path | None, deadline: float, decoder_graphs: str = DEFAULT_DECODER_CUDA_GRAPHS) -> dict[str, Any]:
    if name == "finetune":
        return run_logged(name, lambda log: part_finetune(sz, log, deadline, decoder_graphs), path)
    return run_logged(name, lambda log: CHILD_PARTS[name](sz, log, deadline), path)


def run_part_isolated(name: str, args: argparse.Namespace, deadline: float, decoder_graphs: str = DEFAULT_DECODER_CUDA_GRAPHS) -> dict[str, Any]:
    path = args.work / f"{name}-{decoder_graphs}.json"  # a retry never reads the first attempt's record
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-json", str(path),
           "--deadline", str(deadline), "--decoder-cuda-graphs", decoder_graphs, *(["--dry-run"] if args.dry_run else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)  # its own group: a cut kills its children too
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.time()))
        cut = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        rc, cut = None, True
    d = json.loads(path.read_text()) if path.is_file() else {"part": name, "status": "running", "notes": [], "data": {}}
    d["seconds"] = round(time.perf_counter() - t0, 1)
    if cut:
        d["status"] = f"cut: time limit after {d['seconds']:.0f} s"
    elif d["status"] == "running":
        d["status"] = f"failed: exit code {rc}"
    return d


def died_of_a_cuda_fault(status: str) -> bool:
    """A failure the CUDA context does not survive (illegal address, launch failure), not a wrong number."""
    return status.startswith("failed") and is_cuda_fault(status)


def finetune_with_decoder_fallback(run: Callable[[str], dict[str, Any]], first: str, seconds_left: Callable[[], float]) -> dict[str, Any]:
    """`run(decoder_graphs)` once; when NeMo's decoder ran with CUDA graphs and the part died of a CUDA fault, once
    more without them (if time is left), recording the first attempt in the second's result."""
    d = run(first)
    if first == "disabled" or not died_of_a_cuda_fault(d["status"]) or seconds_left() < MIN_RETRY_S:
        return d
    print(f"== finetune: again with the greedy TDT decoder's CUDA graphs disabled (first attempt {d['status']})", flush=True)
    again = run("disabled")
    again["first_attempt"] = {"decoder_graphs": first, "status": d["status"], "seconds": d.get("seconds"),
                              "notes": d.get("notes", [])}
    again["status"] += f" (decoder CUDA graphs disabled; with `{first}`: {d['status']})"
    return again


# ----------------------------------------------------------------------------------------------------------
# Arguments and the run.
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every part at toy sizes on CPU; never writes bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=None,
                    help="results file to update (default: bench/RESULTS.md; a temporary folder in a dry run); "
                         "a new file starts as a copy of bench/RESULTS.md. The summary and gpu_check.json go beside it")
    ap.add_argument("--budget-s", type=float, default=470.0, help="wall-clock budget of the whole check (default 470)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps per optimizer (default 50; 3 in a dry run)")
    ap.add_argument("--decoder-cuda-graphs", dest="decoder_graphs", choices=DECODER_CUDA_GRAPHS,
                    default=DEFAULT_DECODER_CUDA_GRAPHS,
                    help="finetune's greedy TDT decoder (enhi/decoding.py; default: the recipe's, disabled); with "
                         "graphs, a part that dies of a CUDA fault runs once more with them disabled")
    ap.add_argument("--wheels", type=Path, default=WHEELS, help="folder of wheels to install offline (default .whl)")
    ap.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "gpu_check_site",
                    help="where the wheels are installed (default /tmp/gpu_check_site)")
    ap.add_argument("--part", choices=list(CHILD_PARTS), help=argparse.SUPPRESS)  # a child process: one part
    ap.add_argument("--part-json", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def sizes(args: argparse.Namespace) -> Sizes:
    sz = DRY_SIZES if args.dry_run else GPU_SIZES
    return dataclasses.replace(sz, steps=args.steps) if args.steps else sz


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.part:
        d = run_child_part(args.part, sizes(args), args.part_json, args.deadline or math.inf, args.decoder_graphs)
        return 0 if not d["status"].startswith("failed") else 1

    start = time.time()
    deadline = start + args.budget_s
    import torch

    from bench.results import machine

    gpu = torch.cuda.is_available()
    if args.dry_run:
        # Toy sizes are many small ops: on a small shared CPU two intra-op threads stall at every op's barrier
        # (the dry run's steps took 4x longer with two than with one).
        torch.set_num_threads(1)
        if args.results is None:
            args.results = Path(tempfile.mkdtemp(prefix="gpu_check_dry_")) / "RESULTS.md"
        elif args.results.resolve() == DEFAULT_RESULTS.resolve():
            print("--dry-run never writes bench/RESULTS.md (toy CPU figures); give --results another path", file=sys.stderr)
            return 2
    elif not gpu:
        print("No CUDA GPU: run with --dry-run here; the check itself needs a GPU.", file=sys.stderr)
        return 2
    results = args.results or DEFAULT_RESULTS
    args.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    # One build folder for the wkv7 extension: pytest builds it, the benchmarks load it.
    os.environ.setdefault("BIRWKV7_BUILD_DIR", str(Path(tempfile.gettempdir()) / "gpu_check_birwkv7_build"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sz = sizes(args)

    parts: dict[str, dict] = {}
    for name in PARTS:
        if name not in args.parts:
            continue
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        if time.time() >= deadline - 5:
            parts[name] = {"part": name, "status": "not run: time budget spent", "notes": [], "data": {}}
            continue
        part_deadline = min(deadline, time.time() + PART_CAP_S.get(name, math.inf)) if gpu else deadline
        if name == "setup":
            parts[name] = run_logged(name, lambda log: part_setup(args, log))
        elif name == "cuda-tests":
            parts[name] = run_logged(name, lambda log, dl=part_deadline: part_cuda_tests(args, log, dl))
        elif name == "finetune" and gpu:
            def attempt(graphs: str) -> dict[str, Any]:
                # Each attempt, the retry too, gets a fine-tune's own time limit within the whole check's.
                return run_part_isolated("finetune", args, min(deadline, time.time() + PART_CAP_S["finetune"]), graphs)

            parts[name] = finetune_with_decoder_fallback(attempt, args.decoder_graphs, lambda: deadline - time.time())
        elif gpu or name == "wkv7":  # the dry run keeps one isolated part, so that path is tested too
            parts[name] = run_part_isolated(name, args, part_deadline)
        else:
            parts[name] = run_child_part(name, sz, args.work / f"{name}.json", part_deadline, args.decoder_graphs)
        parts[name].setdefault("seconds", round(time.perf_counter() - t0, 1))
        print(f"== {name}: {parts[name]['status']} ({parts[name]['seconds']:.0f} s)", flush=True)
        if name == "setup" and parts[name]["status"].startswith("failed"):
            break  # nothing else can import what it needs

    command = shlex.join(["python3", "bench/gpu_check.py", *argv])
    # Raw measurements first, beside the results file unless that is the repository's own (no stray files in
    # bench/): whatever fails below, the numbers of a rare GPU run are kept.
    side = results.parent if results.resolve() != DEFAULT_RESULTS.resolve() else Path(tempfile.gettempdir())
    side.mkdir(parents=True, exist_ok=True)
    (side / "gpu_check.json").write_text(json.dumps({"gpu": gpu, "dry_run": args.dry_run, "parts": parts}, indent=1, default=str))
    summary = summary_text(parts, gpu, machine(), time.time() - start, args.budget_s, args.dry_run)
    (side / "gpu_check_summary.txt").write_text(summary + "\n")
    write_results(parts, summary, results, gpu, args.dry_run, command)
    shutil.rmtree(args.work, ignore_errors=True)
    print("\n" + summary)
    print(f"\nwrote {results} (sections), {side / 'gpu_check.json'}, {side / 'gpu_check_summary.txt'}")
    print(f"command: {command}")
    return 1 if any(p["status"].startswith("failed") for p in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
