"""The kernel parts: `wkv7` and `wkv7-fla` (bench/bench_wkv7.py's cases, ours beside fla's `chunk_rwkv7`) and
`long-audio` (bench/bench_long_audio.py's 0.6b-shaped encoders on ever longer audio, up to the first
out-of-memory)."""

from __future__ import annotations

import gc
import time

from bench.gpu.common import NO_GPU, TARGET_LONG_AUDIO_H, PartLog, Sizes, quiet_nemo


def part_wkv7(sz: Sizes, log: PartLog, deadline: float, with_fla: bool) -> None:
    import torch

    from bench import bench_wkv7 as bw

    if not torch.cuda.is_available():
        # The timings need CUDA events (and fla's kernels a GPU); still build bench_wkv7's cases at a toy size
        # and run the CPU ones, so a change to its interface shows up here.
        cases = bw.make_cases(1, 2, 8, 16, "cpu")
        if with_fla:
            fwd = cases["fla chunk_rwkv7"][0]
            log.finish(f"{NO_GPU} (fla chunk_rwkv7 {'importable' if fwd else 'not importable here'})")
            return
        ran = []
        for name, (fwd, _) in cases.items():
            if fwd is not None and "cuda" not in name and "fla" not in name:
                fwd().float().sum().backward()
                ran.append(name)
        log.put(toy_cpu_cases=ran)
        log.finish(f"{NO_GPU} (bench_wkv7 cases run on CPU at toy size: {', '.join(ran)})")
        return
    try:
        import fla

        log.put(fla_version=getattr(fla, "__version__", "unknown"))
    except Exception as exc:
        log.put(fla_version=f"not importable ({type(exc).__name__})")
    rows: list[dict] = []
    for i, (B, H, N, T) in enumerate(bw.SHAPES):
        if i and time.time() + 30 > deadline:
            log.note(f"B={B} H={H} N={N} T={T}: not run, too little time left")
            continue
        # Without fla: ours, SDPA, and the chunked PyTorch reference (the check of ours' output; only at the
        # first shape, where it takes seconds). With fla: fla beside ours, nothing else.
        skip = ["torch"] if with_fla else (["fla"] if i == 0 else ["fla", "chunked"])
        t0 = time.perf_counter()
        got = bw.bench_shape(B, H, N, T, sz.wkv7_reps, "cuda", skip)
        rows += [r for r in got if not r["note"].startswith("skipped (--skip)")]
        log.put(rows=rows, **({f"first_call_s_{i}": round(time.perf_counter() - t0, 1)} if with_fla else {}))
    log.finish("ok")


def next_hours(kind: str, done: list[tuple[float, float | None]], total_gib: float) -> float | None:
    """The next audio length (hours) to try, given (hours, peak GiB or None for out-of-memory) so far.

    Attention doubles from 15 minutes (its memory is quadratic: it runs out within a few steps). BiRWKV7 runs
    15 minutes and 1 hour, then just past the 12-hour target, then 95% of the longest the card should hold
    by a straight-line fit of the measured peaks (memory is linear in length), then 8% steps past the last
    success until the first out-of-memory; every run is measured, the fit only picks lengths."""
    if any(m is None for _, m in done):
        return None  # stop at the first out-of-memory
    if kind == "attention":
        return 0.25 if not done else done[-1][0] * 2
    fixed = [0.25, 1.0, TARGET_LONG_AUDIO_H + 1.0]
    if len(done) < len(fixed):
        return fixed[len(done)]
    best = max(h for h, _ in done)
    (h0, m0), (h1, m1) = done[0], max(done, key=lambda x: x[0])
    slope = (m1 - m0) / (h1 - h0)
    if slope > 0 and len(done) == len(fixed):
        predicted = 0.95 * (0.98 * total_gib - (m0 - slope * h0)) / slope
        if predicted > best + 0.5:
            return round(predicted * 2) / 2
    return max(best + 0.5, round(best * 1.08 * 2) / 2)  # in half hours, and always longer than the last


def part_long_audio(sz: Sizes, log: PartLog, deadline: float) -> None:
    import torch

    from bench import bench_long_audio as bla

    if not torch.cuda.is_available():
        # bench_long_audio builds its encoders on CUDA only; check the two functions this part drives are there.
        import inspect

        params = [list(inspect.signature(f).parameters) for f in (bla.encoder, bla.run_one)]
        if params != [["kind", "layers"], ["enc", "seconds"]]:
            raise AssertionError(f"bench_long_audio's encoder/run_one changed: {params}")
        log.finish(f"{NO_GPU} (bench_long_audio.encoder and run_one found)")
        return
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    log.put(total_gib=total, layers=sz.long_audio_layers, rows=[])
    rows: list[list] = []
    for kind in ("attention", "birwkv7"):
        enc = bla.encoder(kind, sz.long_audio_layers)
        quiet_nemo()
        bla.run_one(enc, 30.0)  # warm-up: kernel load, cuDNN and allocator
        rtfx = 60.0 / bla.run_one(enc, 60.0)[0]  # the speed the time estimates below start from
        done: list[tuple[float, float | None]] = []
        while (h := next_hours(kind, done, total)) is not None:
            need = 1.3 * h * 3600 / rtfx + 5  # a little margin: a cut run measures nothing
            if time.time() + need > deadline:
                log.note(f"{kind} {h} h: not run, needs ~{need:.0f} s and {max(0, deadline - time.time()):.0f} s are left")
                rows.append([kind, h, None, None, None, "not run: time"])
                break
            try:
                wall, mem = bla.run_one(enc, h * 3600)
                rtfx = h * 3600 / wall
                done.append((h, mem))
                rows.append([kind, h, wall, rtfx, mem, ""])
            except torch.OutOfMemoryError:
                done.append((h, None))
                rows.append([kind, h, None, None, None, "OOM"])
                torch.cuda.empty_cache()
            log.note(f"{kind} {h} h: " + (rows[-1][5] or f"{rows[-1][2]:.2f} s, RTFx {rows[-1][3]:.0f}, {rows[-1][4]:.1f} GiB"))
            log.put(rows=rows)
        del enc
        gc.collect()
        torch.cuda.empty_cache()
    log.finish("ok")
