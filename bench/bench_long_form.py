"""Long-form accuracy: is a long recording transcribed as well as its utterances one by one? Per mode of
transcribe_long.py: WER/CER against the per-utterance baseline, timestamps, RTFx and peak memory (CPU).

    uv run ft_110M_enhi_demo.py                  # first, once: the demo's recipe model and validation clips
    uv run python bench/bench_long_form.py [--model demo_cache/runs/recipe/version_0/checkpoints/recipe.nemo]
    uv run python bench/bench_long_form.py --birwkv7      # the same recipe with using_birwkv7=true (trained first)
    uv run python bench/bench_long_form.py [--birwkv7] --pads   # how much quiet a pause segment keeps: the grid

Recordings (demo.long_form, seeded): all 100 English validation utterances end to end (about 5 min), all 100
Hindi ones (about 5.5 min), and a code-switched stretch (25 English and 25 Hindi, alternating); two voices per
language that training never used, pauses of 0.3-1.5 s, a -65 dB noise floor. The per-utterance baseline cuts
the same samples at the known utterance places. Modes: one pass (also with NeMo's local attention,
`change_attention_model("rel_pos_local_attn", [64, 64])`), fixed chunks of 10 s and 30 s (10 s also overlapping by
2 s, merged by word times), and cut at pauses
(also packed into segments of up to 20 s); for a BiRWKV7 model (`--model` of a using_birwkv7 fine-tune) the
same without the local-attention row, in a section of its own. Timestamps: share of utterances whose start and
end lie within 0.3 s of a segment's; word times (pauses modes, the decoder's own, as --timestamps x.json writes
them): share of timed words that start and end inside their utterance's place, give or take 0.3 s. Writes the table and the verdicts on the targets to bench/RESULTS.md.

--pads: the grid that chose `enhi.long_audio.PAD_BEFORE_S` / `PAD_AFTER_S` (quiet kept before and after each pause
segment), on recordings of the demo's *training* utterances (100 per language and a code-switched 50, other
seeds), so the validation recordings above stay unseen by the choice; WER/CER per pad beside the known places.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402
from demo.common import DEMO_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "demo_cache" / "runs" / "recipe" / "version_0" / "checkpoints" / "recipe.nemo"
BIRWKV7_MODEL = ROOT / "demo_cache" / "recipe_birwkv7.nemo"
VAL = {lang: ROOT / "demo_cache" / "corpus" / "manifests" / f"{lang}_val.json" for lang in ("en", "hi")}
TRAIN = {lang: path.with_name(f"{lang}_train.json") for lang, path in VAL.items()}
PADS = [(before, after) for before in (0.0, 0.05, 0.1, 0.15) for after in (0.0, 0.1, 0.2)]  # seconds
BATCH = 16
TOL_S = 0.3
LOCAL = 64  # encoder frames of context each side for the local-attention row (80 ms each: 5.1 s)
MARGIN = 0.03  # the target: long-form within this of the per-utterance score, in each language
MODES = {  # name -> transcribe_long keywords (None: the per-utterance baseline)
    "per utterance (baseline)": None,
    "one pass": {"mode": "single"},
    "one pass, local attention 64": {"mode": "single", "local_attention": True},
    "chunks of 10 s": {"mode": "chunked", "chunk_s": 10.0},
    "chunks of 30 s": {"mode": "chunked", "chunk_s": 30.0},
    "chunks of 10 s, overlap 2 s": {"mode": "chunked", "chunk_s": 10.0, "overlap_s": 2.0},
    "pauses": {"mode": "pauses"},
    "pauses, packed to 20 s": {"mode": "pauses", "pack_s": 20.0},
}


def run_mode(model, samples, utts, kwargs: dict | None) -> dict:
    import time

    from demo.long_form import boundary_hits, per_utterance, score, words_within
    from enhi.long_audio import peak_memory_bytes, transcribe_arrays, transcribe_long

    if kwargs is None:
        pieces = per_utterance(samples, utts)

        def work() -> str:
            return " ".join(t.strip() for i in range(0, len(pieces), BATCH) for t in transcribe_arrays(model, pieces[i:i + BATCH]))

        t0 = time.perf_counter()
        text = work()
        wall = time.perf_counter() - t0
        segments = [{"start": u["start"], "end": u["end"]} for u in utts]
    else:
        kw = {k: v for k, v in kwargs.items() if k != "local_attention"}

        def work() -> dict:
            return transcribe_long(model, samples, batch_size=BATCH, **kw)

        r = work()
        text, wall, segments = r["text"], r["wall_s"], r["segments"]
    peak = peak_memory_bytes(work)
    words = None
    if kwargs is not None and kwargs.get("mode") == "pauses":  # the decoder's word times, in a run of their own
        words = words_within(utts, transcribe_long(model, samples, batch_size=BATCH, words=True, **kw)["segments"], TOL_S)
    return {**score(utts, text), "rtfx": len(samples) / 16000 / wall, "peak_mib": peak / 2**20,
            "hits": boundary_hits(utts, segments, TOL_S), "n_segments": len(segments), "words": words}


def train_birwkv7(out: Path = BIRWKV7_MODEL) -> Path:
    """The demo's recipe arm with `using_birwkv7=true` (attention init), same data and steps, saved to `out`."""
    from lightning.pytorch import seed_everything

    from birwkv7.convert import convert_to_birwkv7
    from demo import pipeline as demo
    from demo.common import history_path
    from enhi.config import load_run_config
    from enhi.training import configure_model, fit, load_model, save_model
    from enhi.transplant import change_vocabulary

    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS)
    cfg = demo.prepare(cfg)
    c = demo.arm_config(cfg, demo.Arm("recipe_birwkv7", True))
    seed_everything(cfg.seed)
    model = load_model(cfg)
    ad = c.model.adaptation
    change_vocabulary(model, cfg.model.tokenizer.dir, True, ad.new_rows, ad.new_token_mass_bound)
    model = convert_to_birwkv7(model, head_size=None, init="attention")
    configure_model(model, c, bnb_optim=False)
    fit(model, c, history_path=history_path(c))
    return save_model(model, out)


def pad_grid(model) -> list[str]:
    """Pauses-mode score per (before, after) pad on recordings of training utterances, as table lines."""
    from demo.long_form import long_recording, per_utterance, score
    from enhi.long_audio import pause_segments, transcribe_arrays
    from enhi.manifest import read_manifest

    def text(pieces: list) -> str:
        return " ".join(t.strip() for i in range(0, len(pieces), BATCH) for t in transcribe_arrays(model, pieces[i:i + BATCH]))

    train = {lang: read_manifest(path) for lang, path in TRAIN.items()}
    mixed = [e for pair in zip(train["en"][:25], train["hi"][:25], strict=True) for e in pair]
    cols: list[list[float]] = []
    for seed, (entries, metric) in enumerate(((train["en"][:100], "wer"), (train["hi"][:100], "cer"), (mixed, "wer")),
                                             start=11):
        samples, utts = long_recording(entries, seed=seed)
        col = [score(utts, text(per_utterance(samples, utts)))[metric]]
        for pad in PADS:
            segs = pause_segments(samples, 16000, pad_s=pad)
            col.append(score(utts, text([samples[round(g["start"] * 16000): round(g["end"] * 16000)] for g in segs]))[metric])
        print(" ".join(f"{v:.3f}" for v in col), flush=True)
        cols.append(col)
    lines = ["| segments | English WER | Hindi CER | code-switched WER | mean change against no pad |",
             "|---|---:|---:|---:|---:|", "| the known places | " + " | ".join(f"{c[0]:.3f}" for c in cols) + " | - |"]
    for i, (before, after) in enumerate(PADS, start=1):
        change = sum(c[i] - c[1] for c in cols) / len(cols)
        lines.append(f"| pauses, pad {before:.2f} s before / {after:.2f} s after | "
                     + " | ".join(f"{c[i]:.3f}" for c in cols) + f" | {change:+.3f} |")
    return lines


def verdicts(rows: dict[str, dict[str, dict]]) -> list[str]:
    lines = ["Against the targets (recordings of 5 minutes or more, mode `pauses`, the CLI's default):"]
    for rec, metric in (("English", "wer"), ("Hindi", "cer")):
        base, long = rows[rec]["per utterance (baseline)"][metric], rows[rec]["pauses"][metric]
        ok = long <= base + MARGIN
        lines.append(f"- {rec} {metric.upper()} within +{MARGIN} of per-utterance: {'MET' if ok else 'MISSED'} "
                     f"({long:.3f} against {base:.3f}, {long - base:+.3f})")
    hits = min(rows[rec]["pauses"]["hits"] for rec in rows)
    lines.append(f"- timestamps within {TOL_S} s for at least 95% of segments: {'MET' if hits >= 0.95 else 'MISSED'} "
                 f"(worst recording {hits:.0%}; timed words inside their utterance, worst recording "
                 f"{min(rows[rec]['pauses']['words'] for rec in rows):.0%})")
    return lines


def main(argv: list[str]) -> None:
    from enhi.console import quiet_libraries

    quiet_libraries()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help="the model to measure (default: the demo's recipe)")
    p.add_argument("--birwkv7", action="store_true",
                   help=f"measure {BIRWKV7_MODEL.relative_to(ROOT)} instead, training it first if missing (train_birwkv7)")
    p.add_argument("--pads", action="store_true", help="the pad grid on recordings of training utterances, then stop")
    args = p.parse_args(argv)
    if args.birwkv7:
        args.model = BIRWKV7_MODEL if BIRWKV7_MODEL.is_file() else train_birwkv7()
    if not args.model.is_file() or not all(v.is_file() for v in VAL.values()):
        sys.exit(f"error: {args.model} or the demo's validation manifests are missing; run `uv run ft_110M_enhi_demo.py` first")

    from birwkv7.convert import is_birwkv7
    from demo.long_form import long_recording
    from enhi.manifest import read_manifest
    from enhi.training import load_nemo_file

    model = load_nemo_file(args.model)
    model.eval()
    rwkv = is_birwkv7(model)
    encoder = "BiRWKV7 encoder" if rwkv else "attention encoder"
    if args.pads:
        text = "\n".join(pad_grid(model))
        print(text)
        write_section("long-form-pads" + ("-birwkv7" if rwkv else ""), "\n".join([
            *header(f"Pause segments: quiet kept around each, {encoder} (bench/bench_long_form.py --pads)"), text, "",
            f"Model: {args.model.name}. Recordings of 100 training utterances per language and 50 code-switched (the "
            "recipe was fine-tuned on them; the validation recordings are left to the main table); pads are seconds of the quiet before and "
            "after each segment's first and last loud frame, never past the middle of its pause."]))
        return
    modes = {k: v for k, v in MODES.items() if not (rwkv and v and v.get("local_attention"))}  # attention only
    if not rwkv:
        local = load_nemo_file(args.model)  # a second copy, with NeMo's limited-context attention (a NeMo model
        local.change_attention_model("rel_pos_local_attn", [LOCAL, LOCAL])  # has no deepcopy)
        local.eval()
    val = {lang: read_manifest(path) for lang, path in VAL.items()}
    mixed = [e for pair in zip(val["en"][:25], val["hi"][:25], strict=True) for e in pair]
    recordings = {"English": val["en"], "Hindi": val["hi"], "code-switched": mixed}
    rows: dict[str, dict[str, dict]] = {}
    lines = ["| recording | mode | WER | CER | words out / reference | segments | timestamps within 0.3 s | "
             "word times within 0.3 s | RTFx | peak MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, (rec, entries) in enumerate(recordings.items(), start=1):
        samples, utts = long_recording(entries, seed=seed)
        print(f"== {rec}: {len(samples) / 16000:.0f} s, {len(utts)} utterances ==", flush=True)
        rows[rec] = {}
        for name, kw in modes.items():
            m = local if kw and kw.get("local_attention") else model
            r = rows[rec][name] = run_mode(m, samples, utts, kw)
            line = (f"| {rec} ({len(samples) / 16000 / 60:.1f} min) | {name} | {r['wer']:.3f} | {r['cer']:.3f} | "
                    f"{r['words_out']} / {r['words_ref']} | {r['n_segments']} | {r['hits']:.0%} | "
                    f"{'-' if r['words'] is None else format(r['words'], '.0%')} | {r['rtfx']:.0f} | {r['peak_mib']:.0f} |")
            print(line, flush=True)
            lines.append(line)
    text = "\n".join([*lines, "", *verdicts(rows)])
    print("\n" + text)
    note = (f"Model: {args.model.name} (stand-in size, {encoder}). Batches of 16 pieces; RTFx from a run without "
            "the profiler, peak memory from a second run under it (the CPU allocator's high-water mark). The "
            "baseline's timestamps are the known places themselves.")
    write_section("long-form-birwkv7" if rwkv else "long-form",
                  "\n".join([*header(f"Long-form accuracy by mode, {encoder} (bench/bench_long_form.py)"), text, "", note]))


if __name__ == "__main__":
    main(sys.argv[1:])
