"""Benchmark of the WKV-7 operator: forward and forward+backward time on a CUDA GPU.

Compares, at equal width (B, H, T, N) and bf16:
  * ours: ``birwkv7.wkv7(..., backend="cuda")`` (and the chunked ``"torch"`` backend, for reference);
  * flash-linear-attention ``fla.ops.rwkv7.chunk_rwkv7`` (if importable);
  * ``torch.nn.functional.scaled_dot_product_attention`` (non-causal, as in a bidirectional encoder).

fla's ``chunk_rwkv7`` takes ``w`` as the *log* decay and keeps its state as [key, value]; ours takes
``w`` with decay exp(-exp(w)) and keeps [value, key].  So fla gets ``w_fla = -exp(w)`` (computed outside
the timed region) and the transposed initial state; the script checks that both produce the same y.

Usage (from the repository root):  python bench/bench_wkv7.py [--reps 20] [--results bench/RESULTS.md]
Prints a table and replaces the ``wkv7`` section of the results file (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from bench.results import write_section  # noqa: E402
from birwkv7 import wkv7  # noqa: E402

SHAPES = [(8, 8, 64, 4096), (1, 16, 64, 32768)]  # (B, H, N, T)


def rwkv7_inputs(B: int, T: int, H: int, N: int, device: str) -> list[torch.Tensor]:
    """bf16 inputs in RWKV-7's ranges (decay in (0.545, 1), a = -kk, b = kk * iclr)."""
    g = torch.Generator(device=device).manual_seed(0)

    def rn() -> torch.Tensor:
        return torch.randn(B, T, H, N, generator=g, device=device)

    r, k, v = rn(), rn(), rn()
    w = -F.softplus(-rn()) - 0.5
    kk = F.normalize(rn(), dim=-1)
    iclr = torch.sigmoid(rn())
    return [x.bfloat16() for x in (r, w, k, v, -kk, kk * iclr)]


def time_ms(fn: Callable[[], None], reps: int, warmup: int = 2) -> float:
    """Median wall time of fn on the GPU, in ms, measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def make_cases(B: int, H: int, N: int, T: int, device: str) -> dict[str, tuple[Callable, list[torch.Tensor]]]:
    """name -> (forward function returning the output to backprop, leaf tensors needing grad)."""
    r, w, k, v, a, b = rwkv7_inputs(B, T, H, N, device)
    cases: dict[str, tuple[Callable, list[torch.Tensor]]] = {}

    leaves = [x.clone().requires_grad_() for x in (r, w, k, v, a, b)]
    cases["ours: wkv7 cuda"] = (lambda ls=leaves: wkv7(*ls, backend="cuda")[0], leaves)

    q, kq, vq = (x.transpose(1, 2).contiguous().requires_grad_() for x in (r, k, v))  # (B, H, T, N)
    cases["torch SDPA (non-causal)"] = (lambda: F.scaled_dot_product_attention(q, kq, vq), [q, kq, vq])
    try:
        from fla.ops.rwkv7 import chunk_rwkv7

        w_log = (-torch.exp(w.float())).bfloat16()  # fla's w is log(decay) = -exp(w_ours)
        leaves_f = [x.clone().requires_grad_() for x in (r, w_log, k, v, a, b)]

        def fla_fwd(ls=leaves_f):
            return chunk_rwkv7(*ls, scale=1.0, initial_state=None, output_final_state=False)[0]

        cases["fla chunk_rwkv7"] = (fla_fwd, leaves_f)
    except Exception as exc:  # not installed, or its import fails on this machine
        cases["fla chunk_rwkv7"] = (None, [f"skipped: fla not importable ({type(exc).__name__}: {exc})"])

    leaves_t = [x.clone().requires_grad_() for x in (r, w, k, v, a, b)]
    cases["ours: wkv7 torch (chunked)"] = (lambda ls=leaves_t: wkv7(*ls, backend="torch")[0], leaves_t)

    return cases


def bench_shape(B: int, H: int, N: int, T: int, reps: int, device: str, skip: list[str]) -> list[dict]:
    rows = []
    cases = make_cases(B, H, N, T, device)
    outputs: dict[str, torch.Tensor] = {}
    for name, (fwd, leaves) in cases.items():
        row = {"shape": f"B={B} H={H} N={N} T={T}", "name": name, "fwd": None, "fwdbwd": None, "note": ""}
        if any(word in name for word in skip):
            row["note"] = "skipped (--skip)"
            rows.append(row)
            continue
        if fwd is None:
            row["note"] = leaves[0]
            rows.append(row)
            continue
        t_setup = time.perf_counter()
        try:
            with torch.no_grad():
                outputs[name] = fwd().float()
            grad = torch.randn_like(outputs[name]).to(leaves[0].dtype)

            def fwd_only(fwd=fwd):
                with torch.no_grad():
                    fwd()

            def fwd_bwd(fwd=fwd, leaves=leaves, grad=grad):
                for x in leaves:
                    x.grad = None
                fwd().backward(grad)

            n = reps if "chunked" not in name else max(3, reps // 5)  # the torch fallback is slow; fewer reps
            row["fwd"] = time_ms(fwd_only, n)
            row["fwdbwd"] = time_ms(fwd_bwd, n)
        except torch.cuda.OutOfMemoryError as exc:
            row["note"] = f"skipped: out of memory ({str(exc).splitlines()[0][:80]})"
        except Exception as exc:
            row["note"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        torch.cuda.empty_cache()
        rows.append(row)
        # Progress line per entry (first-call compilation, e.g. Triton autotuning, is included in "wall").
        wall = time.perf_counter() - t_setup
        print(
            f"  {row['shape']} | {name}: fwd {fmt(row['fwd'])} ms, fwd+bwd {fmt(row['fwdbwd'])} ms "
            f"{row['note']} (wall {wall:.1f} s)",
            flush=True,
        )

    # Same computation check: our y vs fla's / the chunked torch backend's y on identical inputs.
    ours = outputs.get("ours: wkv7 cuda")
    for other in ("fla chunk_rwkv7", "ours: wkv7 torch (chunked)"):
        if ours is not None and other in outputs:
            rel = ((ours - outputs[other]).norm() / outputs[other].norm()).item()
            for row in rows:
                if row["name"] == other:
                    row["note"] = (
                        row["note"] + " " if row["note"] else ""
                    ) + f"y rel. diff vs ours {rel:.2e}"
    return rows


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| shape | implementation | forward (ms) | forward+backward (ms) | note |",
        "|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {r['shape']} | {r['name']} | {fmt(r['fwd'])} | {fmt(r['fwdbwd'])} | {r['note']} |" for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reps", type=int, default=20, help="timed repetitions per entry (median is reported)"
    )
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only, leave the results file alone")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="skip entries whose name contains any of these words"
    )
    args = parser.parse_args()

    env = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if os.environ.get("PYTHONPATH") else ""
    command = env + shlex.join([Path(sys.executable).name, *sys.argv])
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not torch.cuda.is_available():
        print("No CUDA GPU: every entry of this benchmark needs one; nothing measured.")
        return
    device = "cuda"
    gpu = torch.cuda.get_device_name(0)
    try:
        import fla

        fla_version = getattr(fla, "__version__", "unknown")
    except Exception:
        fla_version = "not importable"

    header = [
        "## wkv7 operator (bench/bench_wkv7.py)",
        "",
        f"- machine: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); fla {fla_version}",
        f"- date: {date}",
        f"- command (repository root): `{command}`",
        "- bf16 inputs; median of CUDA-event timings; forward+backward = forward then `y.backward(grad)`",
        "  (no final-state output/grad). fla gets `w_log = -exp(w)`, its log-decay convention.",
        "",
    ]
    rows: list[dict] = []
    for B, H, N, T in SHAPES:
        rows += bench_shape(B, H, N, T, args.reps, device, args.skip)
        section = "\n".join([*header, table(rows)])
        if not args.no_write:  # after every shape, so a run cut short still leaves what it measured
            write_section("wkv7-bench", section, args.results)
    print()
    print(section)
    if not args.no_write:
        print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
