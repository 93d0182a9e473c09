"""The demo's report: the table, the transcripts shown per model, and a plot whose scale fits what matters."""

from __future__ import annotations

from demo import report


def _hist(points: list[tuple[int, float, float]]) -> list[dict]:
    return [{"step": s, "val_en_wer": e, "val_hi_cer": c} for s, e, c in points]


def _examples(tag: str) -> dict:
    return {lang: [{"text": f"{lang} ref {i}", "pred_text": f"{tag} {lang} {i}" if i else ""} for i in range(3)]
            for lang in ("en", "hi")}


BEFORE = {"en": {"wer": 0.30, "cer": 0.12, "examples": _examples("standin")["en"]},
          "hi": {"wer": 1.0, "cer": 1.0, "examples": _examples("standin")["hi"]}}
RESULTS = {
    "recipe": {"history": _hist([(0, 0.30, 1.0), (100, 0.31, 0.8), (200, 0.29, 0.5)]), "step_seconds": [0.2, 0.3, 0.4],
               "examples": _examples("recipe")},
    "plain_change_vocabulary": {"history": _hist([(0, 5.2, 9.1), (100, 0.9, 0.95), (200, 0.6, 0.6)]),
                                "step_seconds": [0.2], "examples": _examples("plain")},
}


def test_table_and_transcripts():
    t = report.table(BEFORE, RESULTS)
    assert "| stand-in, before adaptation | 0 | 0.300 | 1.000 |  |" in t
    assert "| recipe, step 200 | 200 | 0.290 | 0.500 | 0.30 |" in t
    assert "| plain_change_vocabulary, step 0 | 0 | 5.200 | 9.100 |  |" in t
    ex = report.examples(BEFORE, RESULTS).splitlines()
    assert ex[:4] == ["- **en #1** reference: en ref 0", "  - stand-in: (nothing)", "  - recipe: (nothing)",
                      "  - plain_change_vocabulary: (nothing)"]
    assert "  - recipe: recipe hi 2" in ex and sum(line.startswith("- **") for line in ex) == 6


def test_plot_scale_fits_the_curves_that_matter_and_marks_what_it_clips(tmp_path):
    # Plain's garbage step 0 (5.2 WER, 9.1 CER) must not set the scale; everything else fits under it.
    assert abs(report._y_top(BEFORE, RESULTS, "val_en_wer", "en", "wer") - 0.9 * report._HEADROOM) < 1e-9
    assert abs(report._y_top(BEFORE, RESULTS, "val_hi_cer", "hi", "cer") - 1.0 * report._HEADROOM) < 1e-9
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []
    real_savefig = plt.Figure.savefig

    def capture(fig, path, **kw):
        saved.append(fig)
        real_savefig(fig, path, **kw)

    plt.Figure.savefig = capture
    try:
        report.plot(BEFORE, RESULTS, tmp_path / "curves.png")
    finally:
        plt.Figure.savefig = real_savefig
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    en_ax, hi_ax = saved[0].axes
    assert en_ax.get_ylim() == (0.0, 0.9 * report._HEADROOM)
    assert [t.get_text() for t in en_ax.texts] == ["5.20"] and [t.get_text() for t in hi_ax.texts] == ["9.10"]
