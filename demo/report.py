"""The demo's report: a table, example transcripts and curves of English WER and Hindi CER against step."""

from __future__ import annotations

import json
import math
from pathlib import Path

from demo.common import CACHE
from enhi.atomic import atomic_dir

# The plot's y range: wide enough for every curve that matters (the stand-in's level, the recipe's curve, every
# arm after its first evaluation); a point above it (plain change_vocabulary's garbage step 0) is clipped to the
# top edge and labelled with its value.
_HEADROOM = 1.15


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else float("nan")


def table(before: dict, results: dict) -> str:
    rows = [("stand-in, before adaptation", 0, before["en"]["wer"], before["hi"]["cer"], float("nan"))]
    for name, r in results.items():
        h = r["history"]
        rows.append((f"{name}, step 0", h[0]["step"], h[0]["val_en_wer"], h[0]["val_hi_cer"], float("nan")))
        rows.append((f"{name}, step {h[-1]['step']}", h[-1]["step"], h[-1]["val_en_wer"], h[-1]["val_hi_cer"],
                     _median(r["step_seconds"])))
    return "\n".join([
        "| model | step | English WER | Hindi CER | median s/step (CPU) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {n} | {s} | {e:.3f} | {c:.3f} | {'' if math.isnan(t) else f'{t:.2f}'} |" for n, s, e, c, t in rows],
    ])


def examples(before: dict, results: dict) -> str:
    """For the first validation utterances of each language: the reference and every model's transcript."""
    lines = []
    for lang in ("en", "hi"):
        for i, ref in enumerate(before[lang]["examples"]):
            lines += [f"- **{lang} #{i + 1}** reference: {ref['text']}",
                      f"  - stand-in: {ref['pred_text'] or '(nothing)'}"]
            for name, r in results.items():
                pred = r["examples"][lang][i]["pred_text"]
                lines.append(f"  - {name}: {pred or '(nothing)'}")
    return "\n".join(lines)


def _y_top(before: dict, results: dict, key: str, lang: str, metric: str) -> float:
    values = [before[lang][metric]]
    for r in results.values():
        values += [p[key] for p in r["history"][1:]]
        if r["history"][0][key] <= 1.0:  # step 0 matters when it is a model, not garbage above 100% error
            values.append(r["history"][0][key])
    return max(1e-3, max(values)) * _HEADROOM


def plot(before: dict, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, lang, metric, title) in zip(
        axes, [("val_en_wer", "en", "wer", "English WER (lower is better)"),
               ("val_hi_cer", "hi", "cer", "Hindi CER (lower is better)")], strict=True
    ):
        top = _y_top(before, results, key, lang, metric)
        for name, r in results.items():
            steps = [p["step"] for p in r["history"]]
            vals = [p[key] for p in r["history"]]
            line, = ax.plot(steps, [min(v, top) for v in vals], marker="o", label=name)
            for s, v in zip(steps, vals, strict=True):
                if v > top:  # off the scale: drawn at the edge, with its value
                    ax.plot([s], [top], marker="^", color=line.get_color(), markersize=10)
                    ax.annotate(f"{v:.2f}", (s, top), textcoords="offset points", xytext=(6, -12), fontsize=8,
                                color=line.get_color())
        ax.axhline(before[lang][metric], color="gray", linestyle="--", label="stand-in before adaptation")
        ax.set_ylim(0, top)
        ax.set_xlabel("fine-tuning step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(before: dict, results: dict, out: Path = CACHE / "results") -> Path:
    """Print the table and examples, and write results.md, results.json and curves.png under `out`."""
    text = table(before, results) + "\n\nTranscripts at the end (first validation utterances):\n\n" + examples(before, results)
    print("\n" + text + "\n")
    with atomic_dir(out, force=True) as tmp:
        plot(before, results, tmp / "curves.png")
        (tmp / "results.md").write_text(text + "\n", encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps({"before": before, "arms": results}, indent=1, ensure_ascii=False),
                                          encoding="utf-8")
    print(f"table, transcripts and curves written to {out}/")
    return out
