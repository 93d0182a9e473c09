"""bench/bench_adaptation.py's verdicts: each target MET or MISSED from the stored curves, with its numbers."""

from __future__ import annotations

import pytest

from bench.bench_adaptation import summarize, targets


def _run(en: list[float], hi: list[float], corpus_version: int | None = None) -> dict:
    from demo.corpus import CORPUS_VERSION

    version = CORPUS_VERSION if corpus_version is None else corpus_version
    return {"history": [{"step": 100 * i, "val_en_wer": e, "val_hi_cer": h, "val_hi_ctc_cer": h}
                        for i, (e, h) in enumerate(zip(en, hi, strict=True))],
            "settings": ["seed=0", f"# corpus version {version}"] if version >= 3 else ["seed=0"]}


def test_targets_are_judged_on_the_means_over_seeds():
    plain = [_run([5.0, 0.9, 0.8, 0.7, 0.7], [9.0, 0.95, 0.85, 0.8, 0.75])] * 2
    recipe = [_run([0.06, 0.07, 0.08, 0.07, 0.06], [1.0, 0.85, 0.7, 0.6, 0.5]),
              _run([0.06, 0.07, 0.08, 0.07, 0.05], [1.0, 0.97, 0.7, 0.6, 0.5])]
    lines = targets(recipe, plain, standin_en_wer=0.06)
    # Mean Hindi CER at 100 is 0.91, not below 0.9: out of the mute stage at 200, like plain.
    assert lines[2] == "- out of the mute stage (mean Hindi CER < 0.9) in at most half of plain's steps: MISSED (recipe at step 200, plain at 200)"
    assert lines[1].startswith("- Hindi CER <= plain's at every checkpoint from a third of training on: MET (step 200: 0.700 vs 0.850")
    assert lines[3] == "- English WER never above the stand-in's + 0.02 (0.080): MET (worst 0.080)"
    assert lines[4] == "- English WER at the end within the stand-in's + 0.01 (0.070): MET (0.055)"
    assert lines[5] == ("- median step time at most 1.3x plain's: not measured (no timed run of both arms; rerun them "
                        "with --rerun)")
    timed = [{**r, "median_step_s": t} for r, t in zip(recipe, (0.48, 0.52), strict=True)]  # median 0.50
    assert targets(timed, [{**plain[0], "median_step_s": 0.40}], 0.06)[5] == (
        "- median step time at most 1.3x plain's: MET (1.25x: 0.500 s vs 0.400 s)")
    assert targets(timed, [{**plain[0], "median_step_s": 0.37}], 0.06)[5].startswith(
        "- median step time at most 1.3x plain's: MISSED (1.35x")
    worse = [_run([0.06, 0.2, 0.1, 0.09, 0.069], [1.0, 0.8, 0.9, 0.6, 0.5])] * 3
    lines = targets(worse, plain, standin_en_wer=0.06)
    assert "MISSED (step 200: 0.900 vs 0.850" in lines[1] and "MET (recipe at step 100, plain at 200)" in lines[2]
    assert lines[3].endswith("MISSED (worst 0.200)") and lines[4].endswith("MET (0.069)")
    worse_end = [_run([0.06, 0.2, 0.1, 0.09, 0.071], [1.0, 0.8, 0.9, 0.6, 0.5])] * 3
    assert targets(worse_end, plain, standin_en_wer=0.06)[4].endswith("MISSED (0.071)")


def test_table_keeps_every_arm_and_says_when_a_seed_never_left_the_mute_stage():
    mute = _run([0.06, 0.2, 0.2, 0.2, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0])
    table = summarize({"plain": [_run([5.0, 0.9, 0.8, 0.7, 0.7], [9.0, 0.95, 0.85, 0.8, 0.75])] * 3,
                       "transplant_mean": [mute, mute, _run([0.06, 0.2, 0.2, 0.2, 0.2], [1.0, 1.0, 0.8, 0.7, 0.6])]},
                      standin_en_wer=0.06, steps=400)
    rows: dict[str, str] = {}
    for line in table.splitlines():  # the summary table comes first, the per-checkpoint one after it
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].lstrip("| "), line)
    assert "| 3 | 200 ± 0 |" in rows["plain"]
    assert "| 3 | > 400 in 2/3 seeds, else 200 |" in rows["transplant_mean"]
    assert "0.140 ± 0.000" in rows["transplant_mean"]  # the English dip, worst minus the stand-in's
    assert "†" not in table  # every arm measured on this corpus


def test_arms_measured_on_the_previous_corpus_stay_in_the_table_marked():
    old = _run([0.06, 0.2, 0.2, 0.2, 0.2], [1.0, 0.8, 0.7, 0.6, 0.5], corpus_version=2)
    table = summarize({"plain": [_run([5.0, 0.9, 0.8, 0.7, 0.7], [9.0, 0.95, 0.85, 0.8, 0.75])] * 3,
                       "replay": [old] * 3}, standin_en_wer=0.06, steps=400)
    assert "| replay † | 3 |" in table and "| plain | 3 |" in table and "| replay † | 0.060 / 1.000" in table
    assert "† measured on the previous corpus (version 2" in table


def test_an_english_share_arm_reweights_the_prepared_manifests_through_the_scripts_own_config_loader(tmp_path):
    from omegaconf import OmegaConf

    from bench.bench_adaptation import _expand
    from enhi.config import load_run_config

    manifests = [{"path": "/c/en_train.json", "lang": "en", "weight": 0.5},
                 {"path": "/c/hi_train.json", "lang": "hi", "weight": 0.5}]
    config = tmp_path / "prepared.yaml"
    OmegaConf.save(OmegaConf.create({"model": {"train_ds": {"manifests": manifests}}}), config)
    assert _expand("seed=1", config) == "seed=1"
    _, cfg = load_run_config({}, config, [_expand("english_share=0.7", config)])
    got = [(m.path, m.lang, m.weight) for m in cfg.model.train_ds.manifests]
    assert got == [("/c/en_train.json", "en", 0.7), ("/c/hi_train.json", "hi", pytest.approx(0.3))]
    # english_only: the other languages are left out, not kept at weight 0 (Lhotse refuses a zero weight).
    _, cfg = load_run_config({}, config, [_expand("english_share=1.0", config)])
    assert [(m.path, m.lang, m.weight) for m in cfg.model.train_ds.manifests] == [("/c/en_train.json", "en", 1.0)]


def test_a_replay_arm_moves_part_of_the_english_weight_to_the_replay_corpus(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    import bench.bench_adaptation as bench
    from enhi.config import load_run_config

    manifests = [{"path": "/c/en_train.json", "lang": "en", "weight": 0.5},
                 {"path": "/c/hi_train.json", "lang": "hi", "weight": 0.5}]
    config = tmp_path / "prepared.yaml"
    OmegaConf.save(OmegaConf.create({"model": {"train_ds": {"manifests": manifests}}}), config)
    monkeypatch.setattr(bench, "_replay_manifest", lambda sizes: "/c/replay_{n_single}_{n_segments}.json".format(**sizes))
    _, cfg = load_run_config({}, config, [bench._expand("english_replay=0.8", config)])
    got = [(m.path, m.lang, m.weight) for m in cfg.model.train_ds.manifests]
    assert got == [("/c/en_train.json", "en", pytest.approx(0.1)), ("/c/hi_train.json", "hi", 0.5),
                   ("/c/replay_1200_200.json", "en", pytest.approx(0.4))]
    _, cfg = load_run_config({}, config, [bench._expand("english_replay_short=0.5", config)])
    got = [(m.path, m.lang, m.weight) for m in cfg.model.train_ds.manifests]
    assert got == [("/c/en_train.json", "en", pytest.approx(0.25)), ("/c/hi_train.json", "hi", 0.5),
                   ("/c/replay_1400_0.json", "en", pytest.approx(0.25))]


def _steps() -> tuple[int, int]:
    """The stand-in's steps (where the recipe starts) and the reference's (the recipe's end)."""
    from bench.bench_joint_reference import stages
    from demo.pipeline import FINETUNE_STEPS

    total = sum(s["steps"] for s in stages())
    return total - FINETUNE_STEPS, total


def _joint_record(seed: int, en: float, hi: float, start_en: float = 0.6) -> dict:
    from bench.bench_joint_reference import settings

    start, end = _steps()
    hist = [{"step": 1000, "val_en_wer": 0.5, "val_hi_cer": 0.9, "stage": "templates"},
            {"step": start, "val_en_wer": start_en, "val_hi_cer": 0.7, "stage": "free"},
            {"step": end, "val_en_wer": en, "val_hi_cer": hi, "stage": "free"}]
    return {"settings": settings(seed), "history": hist}


def test_joint_reference_table_says_whether_the_english_target_is_within_what_the_size_holds():
    import json
    import statistics

    from bench.bench_joint_reference import ADAPTATION, report

    runs = [json.loads(p.read_text())["history"] for p in sorted(ADAPTATION.glob("recipe__seed*.json"))]
    assert len(runs) == 3 and all(h[0]["step"] == 0 for h in runs)
    standin = statistics.mean(h[0]["val_en_wer"] for h in runs)  # the stand-in as the adaptation bench scores it
    recipe = [h[-1] for h in runs]
    # A reference whose English ends above the target: the recipe is measured by its distance to it.
    high = report([_joint_record(0, standin + 0.05, 0.5), _joint_record(1, standin + 0.03, 0.6)])
    en = statistics.mean(r["val_en_wer"] for r in recipe) - (standin + 0.04)
    hi = statistics.mean(r["val_hi_cer"] for r in recipe) - 0.55
    assert f"English {en:+.3f}, Hindi CER {hi:+.3f}" in high and f"ends above it, at {standin + 0.04:.3f}" in high
    assert f"{standin + 0.04:.3f} ± {statistics.stdev([standin + 0.05, standin + 0.03]):.3f}" in high
    assert "| 1000 | templates | 0.500 / 0.900 | 0.500 / 0.900 |" in high
    start, end = _steps()
    assert f"| {end} | free |" in high and f"(step {end})" in high
    # Where the recipe starts: the stand-in against the reference after as many steps as the stand-in's.
    assert f"At step {start}, where the recipe starts (the stand-in), English {standin - 0.6:+.3f}." in high
    assert f"stand-in's WER + 0.01 = {standin + 0.01:.3f}" in high
    # The recipe's distance to the reference's end at each of its checkpoints, from its own records.
    for k, step in enumerate(h["step"] for h in runs[0]):
        at = [r[k] for r in runs]
        assert all(h["step"] == step for h in at)
        r_en, r_hi = statistics.mean(h["val_en_wer"] for h in at), statistics.mean(h["val_hi_cer"] for h in at)
        row = [x.strip() for x in next(x for x in high.splitlines() if x.startswith(f"| {step} | {start + step} |")).split("|")]
        assert row[3:8] == [f"{r_en:.3f} ± {statistics.stdev(h['val_en_wer'] for h in at):.3f}",
                            f"{r_en - (standin + 0.04):+.3f}",
                            f"{r_hi:.3f} ± {statistics.stdev(h['val_hi_cer'] for h in at):.3f}", f"{r_hi - 0.55:+.3f}", ""]
    low = report([_joint_record(0, standin, 0.5)])
    assert f"ends within it, at {standin:.3f}" in low and "(1 seed)" in low
