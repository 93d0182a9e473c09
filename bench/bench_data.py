"""Training-data throughput: batches per second from each source type and number of dataloader workers.

    uv run python bench/bench_data.py                        # demo corpus, workers 0 1 2
    uv run python bench/bench_data.py --workers 0 2 4 --batches 60

Reads the offline demo's English + Hindi training corpus (built and cached by the demo) as a plain NeMo
manifest, a NeMo tarred set and a Lhotse Shar folder (made once by `enhi.shards`, cached under demo_cache/),
and iterates the training dataloader exactly as the recipe builds it (`enhi.training.train_ds_config`,
NeMo's Lhotse loader, the merged tokenizer) without a model: what is timed is reading, decoding, bucketing
and collating. A GPU step faster than 1 / (batches per second) waits for data; size `num_workers` so it does
not. Writes its table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench.results import header, write_section  # noqa: E402
from demo.common import DEMO_SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def sources(corpus: dict, cache: Path) -> dict[str, list[dict]]:
    """The demo corpus (en + hi, equal weights) as each source type."""
    from enhi import shards

    out: dict[str, list[dict]] = {"plain": [], "nemo_tarred": [], "lhotse_shar": []}
    for lang in ("en", "hi"):
        man = corpus["manifests"][f"{lang}_train"]
        out["plain"].append({"path": man, "lang": lang})
        tarred, shar = cache / f"{lang}_tarred", cache / f"{lang}_shar"
        if not tarred.is_dir():
            shards.write_tarred(man, tarred, num_shards=8)
        if not shar.is_dir():
            shards.write_shar(man, shar, shard_size=250)
        m, t = shards.tarred_patterns(tarred)
        out["nemo_tarred"].append({"type": "nemo_tarred", "path": m, "tarred_audio_filepaths": t, "lang": lang})
        out["lhotse_shar"].append({"type": "lhotse_shar", "path": str(shar), "lang": lang})
    return out


def measure(cfg, n_batches: int, warmup: int) -> dict:
    """Batches/s and audio seconds/s over `n_batches` after `warmup` (workers starting, buffers filling)."""
    from enhi.training import train_dataloader

    dl = train_dataloader(cfg)
    it = iter(dl)
    t_first = time.perf_counter()
    for _ in range(warmup):
        next(it)
    first = time.perf_counter() - t_first
    audio_s, times = 0.0, []
    t0 = time.perf_counter()
    for _ in range(n_batches):
        b = next(it)
        audio_s += float(b[1].sum()) / 16000
        times.append(time.perf_counter())
    seconds = time.perf_counter() - t0
    del it, dl  # stops the workers before the next case starts its own
    return {"batches_per_s": n_batches / seconds, "audio_s_per_s": audio_s / seconds, "warmup_s": first,
            "median_gap_ms": 1000 * statistics.median(b - a for a, b in zip([t0, *times], times, strict=False))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batches", type=int, default=200, help="timed batches per case")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    ap.add_argument("--batch-duration", type=float, default=60.0, help="seconds of audio per batch")
    args = ap.parse_args()

    from demo import pipeline
    from demo.common import CACHE
    from enhi.config import ManifestSpec, load_run_config

    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS)
    cfg = pipeline.prepare(cfg)  # the demo corpus and merged tokenizer (cached)
    from demo.corpus import build_corpus

    corpus = build_corpus(pipeline.CORPUS, n_train_per_lang=pipeline.N_TRAIN, n_val_per_lang=pipeline.N_VAL, seed=0)
    kinds = sources(corpus, CACHE / "bench_data_shards")
    rows = []
    for kind, srcs in kinds.items():
        for w in args.workers:
            cfg.model.train_ds.manifests = [ManifestSpec(**s) for s in srcs]
            cfg.model.train_ds.num_workers = w
            cfg.model.train_ds.batch_duration = args.batch_duration
            r = measure(cfg, args.batches, args.warmup)
            rows.append((kind, w, r))
            print(f"{kind:12s} workers={w}: {r['batches_per_s']:.2f} batches/s, {r['audio_s_per_s']:.0f} s audio/s "
                  f"(first {args.warmup} batches {r['warmup_s']:.1f} s)", flush=True)
    hours = corpus["total_hours"]
    lines = header(f"Training-data throughput: batches/s by source type and num_workers ({args.batch_duration:g} s batches)") + [
        f"The demo corpus ({hours:.2f} h, en + hi, 16 kHz WAV; tarred 8 tars/language; Shar FLAC, 250 cuts/shard), "
        f"read through the recipe's own training dataloader without a model. {args.batches} timed batches after "
        f"{args.warmup} untimed.",
        "",
        "| source | num_workers | batches/s | audio s/s | first batches (s) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {k} | {w} | {r['batches_per_s']:.2f} | {r['audio_s_per_s']:.0f} | {r['warmup_s']:.1f} |" for k, w, r in rows],
    ]
    text = "\n".join(lines)
    print("\n" + text)
    write_section("data-throughput", text)


if __name__ == "__main__":
    main()
