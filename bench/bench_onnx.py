"""Deployment on CPU: NeMo vs onnx-asr on the ONNX export (float and int8): speed, size and agreement.

    uv run ft_110M_enhi_demo.py                 # first, once: the demo's recipe model and validation clips
    uv run python bench/bench_onnx.py [--model demo_cache/runs/recipe/version_0/checkpoints/recipe.nemo]

On the same clips (the demo's 100 English + 100 Hindi validation utterances, voices and sentences never used in
training), each engine transcribes from file paths in batches of 16, as a user would call it: NeMo's
`transcribe`, onnx-asr's `recognize` on `export_onnx.py`'s float files and on its int8 files. Reported per
engine: RTFx (audio seconds / wall seconds, after one warm-up batch), English WER and Hindi CER against the
references, transcripts identical to NeMo's, and the model's bytes on disk. The 110m row is parakeet-tdt_ctc-110m's
shape with random weights and the merged vocabulary: speed and size only (its transcripts are not English).
Writes its table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "demo_cache" / "runs" / "recipe" / "version_0" / "checkpoints" / "recipe.nemo"
VAL = {lang: ROOT / "demo_cache" / "corpus" / "manifests" / f"{lang}_val.json" for lang in ("en", "hi")}
BATCH = 16


def _timed(fn, paths: list[str]) -> tuple[list[str], float]:
    fn(paths[:BATCH])  # warm-up: first-call allocations and ONNX Runtime's graph set-up are not throughput
    t0 = time.perf_counter()
    texts = [t for i in range(0, len(paths), BATCH) for t in fn(paths[i:i + BATCH])]
    return texts, time.perf_counter() - t0


def measure(nemo_path: Path, label: str, entries: dict[str, list], score: bool) -> list[dict]:
    """One row per engine for one model."""
    from enhi.evaluate import error_rates
    from enhi.onnx_export import export_for_onnx_asr, load_onnx_asr
    from enhi.training import load_nemo_file

    model = load_nemo_file(nemo_path)
    model.eval()
    paths = [e.audio_filepath for es in entries.values() for e in es]
    audio_s = sum(e.duration for es in entries.values() for e in es)
    out = Path(tempfile.mkdtemp(prefix="bench_onnx_")) / "onnx"
    files = export_for_onnx_asr(model, out, source=str(nemo_path), int8=True)
    float_mb = sum(s for n, s in files.items() if not n.endswith(".int8.onnx")) / 2**20
    int8_mb = sum(s for n, s in files.items() if n.endswith(".int8.onnx") or not n.endswith(".onnx")) / 2**20
    onnx_float, onnx_int8 = load_onnx_asr(out), load_onnx_asr(out, int8=True)
    engines = {
        "NeMo (PyTorch)": (lambda p: [h.text for h in model.transcribe(p, batch_size=BATCH, verbose=False)],
                           nemo_path.stat().st_size / 2**20),
        "onnx-asr, float": (lambda p: list(onnx_float.recognize(p)), float_mb),
        "onnx-asr, int8": (lambda p: list(onnx_int8.recognize(p)), int8_mb),
    }
    rows, reference = [], None
    for name, (fn, mb) in engines.items():
        texts, wall = _timed(fn, paths)
        reference = reference or texts
        row = {"model": label, "engine": name, "MiB": mb, "rtfx": audio_s / wall,
               "same": sum(a == b for a, b in zip(texts, reference, strict=True)), "n": len(paths)}
        if score:
            i = 0
            for lang, es in entries.items():
                r = error_rates([e.text for e in es], texts[i:i + len(es)])
                row[lang] = r["wer"] if lang == "en" else r["cer"]
                i += len(es)
        rows.append(row)
        print(f"{label:>24} {name:>16}: RTFx {row['rtfx']:7.1f}, {row['same']}/{row['n']} as NeMo, {mb:.1f} MiB", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | engine | MiB on disk | RTFx (CPU) | English WER | Hindi CER | transcripts as NeMo's |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        en = f"{r['en']:.3f}" if "en" in r else "—"
        hi = f"{r['hi']:.3f}" if "hi" in r else "—"
        lines.append(f"| {r['model']} | {r['engine']} | {r['MiB']:.1f} | {r['rtfx']:.1f} | {en} | {hi} | {r['same']}/{r['n']} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from enhi.console import quiet_libraries

    quiet_libraries()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help="the adapted model to measure (default: the demo's recipe)")
    p.add_argument("--no-110m", action="store_true", help="skip the 110m-shaped row")
    args = p.parse_args(argv)
    if not args.model.is_file() or not all(v.is_file() for v in VAL.values()):
        sys.exit(f"error: {args.model} or the demo's validation manifests are missing; run `uv run ft_110M_enhi_demo.py` first")

    from enhi.manifest import read_manifest
    from enhi.tiny_model import PARAKEET_110M, build_parakeet_model
    from enhi.training import save_model

    entries = {lang: read_manifest(path) for lang, path in VAL.items()}
    rows = measure(args.model, "demo recipe (stand-in size)", entries, score=True)
    if not args.no_110m:
        big = Path(tempfile.mkdtemp(prefix="bench_onnx_")) / "parakeet110m_enhi_random.nemo"
        save_model(build_parakeet_model(ROOT / "en1024_hi256", seed=0, **PARAKEET_110M), big)
        rows += measure(big, "110m shape, random weights", {k: v[:32] for k, v in entries.items()}, score=False)
    text = table(rows)
    print(text)
    note = ("Batches of 16 from file paths, after one warm-up batch; NeMo with torch's threads, ONNX Runtime with its "
            "default threads (both use every core). int8: ONNX Runtime dynamic quantization of MatMul/Gemm weights "
            "(export_onnx.py --int8); its size counts the int8 files plus vocab and config. The 110m row transcribes "
            "the first 32 clips of each language.")
    write_section("onnx", "\n".join([*header("Deployment on CPU: NeMo vs onnx-asr, float and int8 (bench/bench_onnx.py)"),
                                     text, "", note]))


if __name__ == "__main__":
    main(sys.argv[1:])
