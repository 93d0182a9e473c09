"""The check's report: a section of bench/RESULTS.md per measured part, the targets as PASS / MISS / NOT MEASURED
(only from numbers this run measured), and the one-screen summary."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.gpu.common import (
    DEFAULT_RESULTS,
    MIN_CARD_GIB,
    PARTS,
    TARGET_ADAPTED_RTFX,
    TARGET_BNB_STATE,
    TARGET_BNB_STEP,
    TARGET_LONG_AUDIO_H,
    TARGET_LONG_AUDIO_RTFX,
)
from enhi.decoding import DEFAULT_DECODER_CUDA_GRAPHS


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def decoder_line(d: dict[str, Any]) -> str:
    mode = d.get("data", {}).get("decoder_graphs", "?")
    line = f"Greedy TDT decoder, CUDA graphs `{mode}` (`model.decoder_cuda_graphs`, enhi/decoding.py)"
    first = d.get("first_attempt")
    return line + (f"; the first attempt, with `{first['decoder_graphs']}`: {first['status']}." if first else ".")


def finetune_section(d: dict[str, Any]) -> str:
    data = d.get("data", {})
    runs, tr = data.get("runs", {}), data.get("transcribe", {})
    corpus = data.get("corpus", {})
    lines = [
        f"Model: parakeet-tdt_ctc-110m's architecture from config ({data.get('model')} shape, random weights), "
        f"adapted to en1024_hi256 ({data.get('vocab')} pieces) with the vocabulary transplant; `enhi.training.fit` "
        f"in {next(iter(runs.values()), {}).get('precision')} on {corpus.get('utterances')} utterances synthesized with eSpeak (batch_duration "
        f"{next(iter(runs.values()), {}).get('batch_duration')} s, one bucket). Median step time from step 4 on (the first "
        "ones compile kernels).",
        "",
        decoder_line(d),
        "",
        "| optimizer | steps | median s/step | peak GPU memory (GiB) | optimizer state (MiB) | first loss | last loss | finite |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} ({r['optimizer']}) | {r['steps']} | {_f(r['median_step_s'], '.3f')} | {_f(r['peak_gpu_gib'], '.1f')} | "
            f"{r['state_bytes'] / 2**20:.1f} | {r['losses'][0]:.3f} | {r['losses'][-1]:.3f} | {'yes' if r['finite'] else 'NO'} |"
        )
    if runs:
        lines += ["", "Loss in use: " + "; ".join(f"{n}: {r['loss_check']}" for n, r in runs.items())]
    if tr:
        lines += [
            "",
            f"Transcription (greedy TDT, fp32, batch 16) of the same {_f(tr.get('unadapted', {}).get('audio_s'), '.0f')} s "
            "of audio: one untimed pass per model, then the median of timed passes alternating between the models:",
            "",
            "| model | wall (s) | RTFx | vs unadapted | characters out |",
            "|---|---:|---:|---:|---:|",
        ]
        base = tr.get("unadapted", {}).get("rtfx")
        for name, r in tr.items():
            same = "" if "same_texts" not in r else (", same transcripts" if r["same_texts"] else ", transcripts differ")
            lines.append(f"| {name} | {r['wall_s']:.3f} | {r['rtfx']:.0f} | {r['rtfx'] / base:.3f}{same} | {r['chars']} |")
        lines += ["", "A fine-tuned model emits other transcripts (another number of symbols to decode), so the "
                      "adaptation's own cost is the transplant row: same transcripts, larger output layer."]
    return "\n".join(lines)


def ladder_section(d: dict[str, Any]) -> str:
    data = d.get("data", {})
    v = data.get("versions", {})
    lines = [
        f"Unadapted {data.get('model', '110m')}-shaped model (random weights), fp32, batch 16, the same utterances in "
        "every step, in one process, safest first; a CUDA fault ends the ladder (the context is lost). Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + f". NeMo workarounds applied: "
        f"{', '.join(data.get('nemo_workarounds', [])) or 'none'}.",
        "",
        "| step | outcome | wall (s) | transcripts as `disabled` | `b\" \"` intact |",
        "|---|---|---:|---|---|",
    ]
    for r in data.get("rows", []):
        same = "" if r["step"] == "encoder" or "same_as_disabled" not in r else ("yes" if r["same_as_disabled"] else "NO")
        lines.append(f"| {r['step']} | {r['status']} | {_f(r.get('wall_s'), '.3f')} | {same} | "
                     f"{'' if 'space_byte_intact' not in r else ('yes' if r['space_byte_intact'] else 'NO')} |")
    lines += ["", f"Safe modes: {', '.join(data.get('safe', [])) or 'none'}; fastest safe: {data.get('fastest_safe')}."]
    return "\n".join(lines)


def batch_section(d: dict[str, Any]) -> str:
    from bench.gpu.memory import RESOLUTION_S

    data = d.get("data", {})
    lines = [
        f"One training step (bf16 autocast; encoder, prediction network, NeMo's fused joint and TDT loss, CTC) and "
        f"two optimizer steps under a {_f(data.get('cap_gib'), '.0f')} GiB cap "
        f"(`torch.cuda.set_per_process_memory_fraction`) on a {_f(data.get('total_gib'), '.0f')} GiB card; batches of "
        f"{_f(data.get('utterance_s'), '.0f')} s utterances with {data.get('tokens')} tokens each; merged vocabulary. "
        f"Largest fitting batch found to {RESOLUTION_S:.0f} s.",
        "",
        "| shape, optimizer | parameters (M) | largest batch_duration (s) | refused at (s) | trials |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in data.get("results", {}).items():
        lines.append(f"| {name} | {r['params'] / 1e6:.1f} | {_f(r['largest_s'], '.0f')} | {_f(r['refused_s'], '.0f')} | "
                     f"{len(r['trials'])} |")
    return "\n".join(lines)


def wkv7_rows(parts: dict[str, dict]) -> list[dict]:
    rows = list(parts.get("wkv7", {}).get("data", {}).get("rows", []))
    for r in parts.get("wkv7-fla", {}).get("data", {}).get("rows", []):
        if r["name"].startswith("ours"):
            r = {**r, "name": r["name"] + ", re-timed beside fla"}
        rows.append(r)
    return rows


def wkv7_section(parts: dict[str, dict]) -> str:
    from bench.bench_wkv7 import table

    fla = parts.get("wkv7-fla", {})
    first = [v for k, v in fla.get("data", {}).items() if k.startswith("first_call_s_")]
    lines = [
        f"- fla: {fla.get('data', {}).get('fla_version', 'not run')} ({fla.get('status', 'not run')})",
        "- bf16 inputs; median of CUDA-event timings; forward+backward = forward then `y.backward(grad)`",
        "  (no final-state output/grad). fla gets `w_log = -exp(w)`, its log-decay convention.",
    ]
    if first:
        lines.append(f"- wall time of each shape's fla entry, first call (Triton autotuning) included: {', '.join(f'{s:.0f} s' for s in first)}")
    return "\n".join([*lines, "", table(wkv7_rows(parts))])


def long_audio_section(d: dict[str, Any]) -> str:
    data = d.get("data", {})
    lines = [
        f"GPU memory: {_f(data.get('total_gib'), '.0f')} GiB. Encoder only ({data.get('layers')} layers), batch 1, random weights, bf16 "
        "autocast; RTFx = audio s / wall s. Lengths chosen by bench/gpu_check.py (`next_hours`) within its time limit.",
        "",
        "| encoder | audio (h) | wall (s) | RTFx | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, h, wall, rtfx, mem, note in data.get("rows", []):
        if note:
            lines.append(f"| {kind} | {h} | {note} | - | - |")
        else:
            lines.append(f"| {kind} | {h} | {wall:.2f} | {rtfx:.0f} | {mem:.1f} |")
    return "\n".join(lines)


def targets(parts: dict[str, dict], gpu: bool) -> list[tuple[str, str, str]]:
    """(verdict, target, detail) per target of issue 13: PASS/MISS only from numbers this run measured."""
    out: list[tuple[str, str, str]] = []

    def missing(name: str, why: str) -> None:
        out.append(("NOT MEASURED", name, why))

    # 1. wkv7 forward+backward at B8 H8 N64 T4096 no slower than fla's chunk_rwkv7 in the same run.
    name = "wkv7 fwd+bwd B8 H8 N64 T4096 <= fla chunk_rwkv7"
    rows = [r for r in parts.get("wkv7-fla", {}).get("data", {}).get("rows", []) if r["shape"] == "B=8 H=8 N=64 T=4096"]
    ours = next((r["fwdbwd"] for r in rows if r["name"].startswith("ours")), None)
    fla = next((r["fwdbwd"] for r in rows if r["name"].startswith("fla")), None)
    if not gpu:
        missing(name, "no GPU")
    elif ours is None or fla is None:
        missing(name, f"wkv7-fla: {parts.get('wkv7-fla', {}).get('status', 'not run')}")
    else:
        out.append(("PASS" if ours <= fla else "MISS", name, f"ours {ours:.2f} ms, fla {fla:.2f} ms ({ours / fla:.2f}x)"))

    # 2. BiRWKV7 one pass of more than 12 h at RTFx above 1900 (on an 80 GB card or larger).
    name = f"BiRWKV7 one pass > {TARGET_LONG_AUDIO_H:.0f} h at RTFx > {TARGET_LONG_AUDIO_RTFX:.0f}"
    la = parts.get("long-audio", {}).get("data", {})
    ok = [(h, rtfx) for kind, h, _, rtfx, _, note in la.get("rows", []) if kind == "birwkv7" and not note]
    if not gpu:
        missing(name, "no GPU")
    elif la.get("total_gib", 0) < MIN_CARD_GIB:
        missing(name, f"card has {la.get('total_gib', 0):.0f} GiB, under an 80 GB card's")
    elif not any(h > TARGET_LONG_AUDIO_H for h, _ in ok) and not any(
        kind == "birwkv7" and h > TARGET_LONG_AUDIO_H and note == "OOM" for kind, h, *_, note in la.get("rows", [])
    ):
        missing(name, f"no run past {TARGET_LONG_AUDIO_H:.0f} h (long-audio: {parts.get('long-audio', {}).get('status', 'not run')})")
    else:
        good = [(h, r) for h, r in ok if h > TARGET_LONG_AUDIO_H and r > TARGET_LONG_AUDIO_RTFX]
        if ok:
            longest = max(ok)
            detail = f"longest one pass {longest[0]} h at RTFx {longest[1]:.0f} on {la['total_gib']:.0f} GiB"
        else:
            detail = f"no pass succeeded on {la['total_gib']:.0f} GiB"
        out.append(("PASS" if good else "MISS", name, detail))

    # 3. AdamW8bit state <= 30% of AdamW's, at a median step time ratio <= 1.1.
    name = f"AdamW8bit state <= {TARGET_BNB_STATE:.0%} of AdamW's, step time <= {TARGET_BNB_STEP}x"
    runs = parts.get("finetune", {}).get("data", {}).get("runs", {})
    if not gpu:
        missing(name, "no GPU (the dry run's CPU figures are not the target's)")
    elif {"AdamW", "AdamW8bit"} - set(runs):
        missing(name, f"finetune: {parts.get('finetune', {}).get('status', 'not run')}")
    else:
        a, b = runs["AdamW"], runs["AdamW8bit"]
        state, step = b["state_bytes"] / a["state_bytes"], b["median_step_s"] / a["median_step_s"]
        verdict = "PASS" if state <= TARGET_BNB_STATE and step <= TARGET_BNB_STEP else "MISS"
        out.append((verdict, name, f"state {state:.1%}, step {step:.2f}x ({b['median_step_s']:.3f} vs {a['median_step_s']:.3f} s)"))

    # 4. Adapted model's transcription RTFx >= 0.97x the unadapted one's.
    name = f"adapted model transcription RTFx >= {TARGET_ADAPTED_RTFX}x the unadapted"
    tr = parts.get("finetune", {}).get("data", {}).get("transcribe", {})
    if not gpu:
        missing(name, "no GPU")
    elif "unadapted" not in tr or "adapted (transplant)" not in tr:
        missing(name, f"finetune: {parts.get('finetune', {}).get('status', 'not run')}")
    else:
        ratio = tr["adapted (transplant)"]["rtfx"] / tr["unadapted"]["rtfx"]
        extra = ""
        if "fine-tuned (AdamW)" in tr:
            extra = f"; fine-tuned {tr['fine-tuned (AdamW)']['rtfx'] / tr['unadapted']['rtfx']:.3f}x (other transcripts)"
        out.append(("PASS" if ratio >= TARGET_ADAPTED_RTFX else "MISS", name,
                    f"{ratio:.3f}x ({tr['adapted (transplant)']['rtfx']:.0f} vs {tr['unadapted']['rtfx']:.0f}){extra}"))

    # 5. Under a 24 GiB cap, AdamW8bit fits at least the seed's claimed batch gain over AdamW, per shape.
    from bench.gpu.memory import CAP_GIB, TARGET_BNB_BATCH

    results = parts.get("batch-24g", {}).get("data", {}).get("results", {})
    for shape in ("110m", "0.6b"):
        name = f"{shape} under {CAP_GIB:.0f} GiB: AdamW8bit batch_duration >= {TARGET_BNB_BATCH:.2f}x AdamW's (seed: 600 -> 800 s)"
        a, b = results.get(f"{shape} AdamW", {}), results.get(f"{shape} AdamW8bit", {})
        if not gpu:
            missing(name, "no GPU")
        elif not a.get("largest_s") or not b.get("largest_s"):
            missing(name, f"batch-24g: {parts.get('batch-24g', {}).get('status', 'not run')}")
        else:
            ratio = b["largest_s"] / a["largest_s"]
            out.append(("PASS" if ratio >= TARGET_BNB_BATCH else "MISS", name,
                        f"{a['largest_s']:.0f} s -> {b['largest_s']:.0f} s ({ratio:.2f}x)"))

    # 6. The recipe's default decoder mode is one the ladder showed safe on this card.
    name = f"decoder default `{DEFAULT_DECODER_CUDA_GRAPHS}` safe on this GPU (decoder-ladder)"
    ladder = parts.get("decoder-ladder", {}).get("data", {})
    if not gpu:
        missing(name, "no GPU")
    elif "safe" not in ladder:
        missing(name, f"decoder-ladder: {parts.get('decoder-ladder', {}).get('status', 'not run')}")
    else:
        out.append(("PASS" if DEFAULT_DECODER_CUDA_GRAPHS in ladder["safe"] else "MISS", name,
                    f"safe: {', '.join(ladder['safe']) or 'none'}; fastest safe: {ladder.get('fastest_safe')}"))
    return out


def part_line(name: str, d: dict[str, Any]) -> str:
    data = d.get("data", {})
    detail = ""
    if name == "finetune" and data.get("runs"):
        detail = "; ".join(
            f"{o} {_f(r['median_step_s'], '.3f')} s/step"
            + (f" {r['peak_gpu_gib']:.1f} GiB" if r["peak_gpu_gib"] is not None else "")
            + f" loss {r['losses'][0]:.2f}->{r['losses'][-1]:.2f}{'' if r['finite'] else ' NON-FINITE'}"
            for o, r in data["runs"].items()
        )
    elif name == "long-audio" and data.get("rows"):
        ok = [(k, h) for k, h, *_, note in data["rows"] if not note]
        detail = "; ".join(f"{k} max {max(h for kk, h in ok if kk == k)} h" for k in ("attention", "birwkv7") if any(kk == k for kk, _ in ok))
    elif name == "decoder-ladder" and data.get("rows"):
        detail = "; ".join(f"{r['step']} {r['status'].split(':')[0]}" for r in data["rows"])
    elif name in ("wkv7", "wkv7-fla") and data.get("rows"):
        detail = "; ".join(f"{r['name']} {_f(r['fwdbwd'])} ms" for r in data["rows"] if r["shape"] == "B=8 H=8 N=64 T=4096")
    seconds = f"{d['seconds']:.0f} s" if d.get("seconds") is not None else ""
    return f"  {name:<14} {d.get('status', 'not run')}" + (f" [{seconds}]" if seconds else "") + (f"\n              {detail}" if detail else "")


def summary_text(parts: dict[str, dict], gpu: bool, machine: str, elapsed: float, budget: float, dry: bool) -> str:
    lines = [
        f"GPU check{' (dry run: toy sizes, CPU)' if dry else ''}: {machine}",
        f"{elapsed:.0f} s of a {budget:.0f} s budget",
        "parts:",
        *[part_line(n, parts[n]) for n in PARTS if n in parts],
        "targets:",
        *[f"  {v:<12} {name}: {detail}" for v, name, detail in targets(parts, gpu)],
    ]
    return "\n".join(lines)


def cuda_tests_table(d: dict[str, Any]) -> str:
    cases = d.get("data", {}).get("cases", [])
    if not cases:
        return ""
    lines = ["| CUDA test | outcome | seconds |", "|---|---|---:|"]
    lines += [f"| {c['name']} | {c['outcome']}{': ' + c['message'] if c['message'] and c['outcome'] != 'passed' else ''} | {c['seconds']:.1f} |" for c in cases]
    return "\n".join(lines)


def write_results(parts: dict[str, dict], summary: str, path: Path, gpu: bool, dry: bool, command: str) -> None:
    from bench.results import header as _header
    from bench.results import write_section

    def header(title: str) -> list[str]:
        return _header(title, command)

    if not path.exists() and path.resolve() != DEFAULT_RESULTS.resolve() and DEFAULT_RESULTS.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEFAULT_RESULTS, path)  # so the copy carries every section and can replace the original
    suffix = "-dry-run" if dry else ""  # toy CPU figures never land in a GPU section
    body = "\n".join(["```", summary, "```", "", cuda_tests_table(parts.get("cuda-tests", {}))])
    write_section(f"gpu-check{suffix}", "\n".join([*header("GPU check (bench/gpu_check.py)"), body]), path)
    if parts.get("decoder-ladder", {}).get("data", {}).get("rows"):
        title = "NeMo's greedy TDT decoder by CUDA-graph mode (bench/gpu_check.py, decoder-ladder)"
        if dry:
            title = "GPU check's decoder ladder at toy size on CPU (dry run)"
        write_section(f"gpu-check-decoder{suffix}", "\n".join([*header(title), ladder_section(parts["decoder-ladder"])]), path)
    if gpu and parts.get("batch-24g", {}).get("data", {}).get("results"):
        title = "Largest batch under 24 GiB: AdamW vs AdamW8bit, 110m and 0.6b shapes (bench/gpu_check.py, batch-24g)"
        write_section("gpu-check-batch-24g", "\n".join([*header(title), batch_section(parts["batch-24g"])]), path)
    if parts.get("finetune", {}).get("data", {}).get("runs"):
        title = "Fine-tuning on the GPU: 110m shape, bf16-mixed, AdamW vs AdamW8bit (bench/gpu_check.py)"
        if dry:
            title = "GPU check's fine-tune part at toy size on CPU (dry run)"
        write_section(f"gpu-check-finetune{suffix}", "\n".join([*header(title), finetune_section(parts["finetune"])]), path)
    if gpu and wkv7_rows(parts):
        write_section("wkv7-bench", "\n".join([*header("wkv7 operator (bench/bench_wkv7.py, through bench/gpu_check.py)"),
                                               wkv7_section(parts)]), path)
    if gpu and parts.get("long-audio", {}).get("data", {}).get("rows"):
        layers = parts["long-audio"]["data"].get("layers")
        title = f"Long audio in one pass: 0.6b-shaped encoder ({layers} layers), bf16 inference (bench/bench_long_audio.py, through bench/gpu_check.py)"
        write_section("long-audio-bench", "\n".join([*header(title), long_audio_section(parts["long-audio"])]), path)
