"""ft_110M_enhi_demo.py as users run it: adapt_only writes a loadable adapted model; bad input is one line,
a non-zero exit, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import MERGED_DIR, ROOT, run_main

from demo.common import DEMO_SETTINGS, HISTORY_FILE

SCRIPT = ROOT / "ft_110M_enhi_demo.py"


def _run_inprocess(capsys, *argv: str) -> tuple[int, str]:
    """The script in-process: its exit status and the last line it printed on stderr."""
    code, _, err = run_main(SCRIPT, list(argv), capsys)
    lines = err.strip().splitlines()
    return code, lines[-1] if lines else ""


def _bad_manifest(tmp_path, content: str):
    p = tmp_path / "bad.json"
    p.write_text(content, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not_json", r"bad.json:2: not valid JSON"),
        ("missing_field", r"bad.json:1: missing field\(s\) duration"),
        ("missing_audio", r"bad.json:1: audio file .*nowhere.wav not found"),
        ("missing_manifest", r"absent.json: manifest not found"),
    ],
)
def test_bad_manifests_stop_before_anything_is_written(case, expected, standin_nemo, small_corpus, tmp_path, capsys):
    good = small_corpus["en_train"].read_text(encoding="utf-8").splitlines()[0]
    manifests = {
        "not_json": lambda: _bad_manifest(tmp_path, good + "\n{oops\n"),
        "missing_field": lambda: _bad_manifest(tmp_path, json.dumps({"audio_filepath": "a.wav", "text": "x"}) + "\n"),
        "missing_audio": lambda: _bad_manifest(tmp_path, json.dumps({"audio_filepath": "nowhere.wav", "duration": 1, "text": "x"}) + "\n"),
        "missing_manifest": lambda: tmp_path / "absent.json",
    }
    path = manifests[case]()
    runs = tmp_path / "runs"
    code, line = _run_inprocess(
        capsys, f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}",
        f"model.train_ds.manifests=[{{path: {path}, lang: en}}]", f"exp_manager.exp_dir={runs}",
    )
    assert code == 2
    assert line.startswith("error: ")
    import re

    assert re.search(expected, line), line
    assert not runs.exists()


def test_tokenizer_that_does_not_match_the_model_is_refused(standin_nemo, tmp_path, capsys):
    from conftest import HI_DIR

    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    wrong = write_nemo_tokenizer_folder(HI_DIR / "tokenizer.model", tmp_path / "hi_only")
    out = tmp_path / "adapted.nemo"
    code, line = _run_inprocess(
        capsys, f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={wrong}", "adapt_only=true", f"save_to={out}",
    )
    assert code == 2 and "hi_only: its first 1024 pieces are not the model's tokenizer pieces" in line
    assert not out.exists()


def test_missing_init_model_and_both_init_models(tmp_path, capsys):
    code, line = _run_inprocess(capsys, f"init_from_nemo_model={tmp_path / 'no.nemo'}")
    assert code == 2 and "no.nemo: init_from_nemo_model not found" in line
    code, line = _run_inprocess(capsys, "init_from_pretrained_model=a/b", f"init_from_nemo_model={tmp_path / 'no.nemo'}")
    assert code == 2 and "both init_from_pretrained_model and init_from_nemo_model are set" in line


def test_adapt_only_writes_the_adapted_model_with_the_birwkv7_switch(standin_nemo, tmp_path, capsys):
    """adapt_only + using_birwkv7 + verbose, in-process: the vocabulary line, library messages on the terminal
    (verbose), a loadable .nemo with the merged vocabulary, the TDT loss and BiRWKV7 in every layer, and no
    temporary or run folder left beside it."""
    from nemo.collections.asr.models import ASRModel

    from birwkv7.convert import is_birwkv7
    from birwkv7.layer import BiRWKV7TimeMix
    from enhi import console

    out = tmp_path / "adapted.nemo"
    try:
        code, stdout, stderr = run_main(SCRIPT, [
            f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}", "using_birwkv7=true",
            "adapt_only=true", f"save_to={out}", f"exp_manager.exp_dir={tmp_path / 'runs'}", "verbose=true"], capsys)
    finally:
        console._library_log.echo = False  # verbose is process-wide: later tests run quiet again
    assert code == 0, stderr[-2000:]
    assert "vocabulary 1024 -> 1278, transplant=True" in stdout
    assert "nemo_logger" in stderr  # verbose=true: library messages shown too
    m = ASRModel.restore_from(str(out), map_location="cpu")
    assert m.tokenizer.vocab_size == 1278 and m.joint.num_classes_with_blank == 1278 + 1 + 5
    assert type(m.loss._loss).__name__ == "TDTLossNumba" and m.loss._loss.durations == [0, 1, 2, 3, 4]
    assert is_birwkv7(m) and all(isinstance(layer.self_attn, BiRWKV7TimeMix) for layer in m.encoder.layers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted.nemo"]  # no temporary left, no run folder


def test_console_shows_phases_progress_and_validation_and_logs_the_chatter(standin_nemo, small_corpus, tmp_path):
    """What a person sees during training: phase headers, Lightning's progress bar counted in steps with the loss,
    one line per validation; NeMo's and Lightning's messages only in the run's library.log (verbose=true, which
    shows them on the terminal too, is checked in test_adapt_only_writes_the_adapted_model)."""
    c = small_corpus
    argv = [sys.executable, str(SCRIPT), *DEMO_SETTINGS, f"init_from_nemo_model={standin_nemo}",
            f"model.tokenizer.dir={MERGED_DIR}",
            f"model.train_ds.manifests=[{{path: {c['en_train']}, lang: en}}, {{path: {c['hi_train']}, lang: hi}}]",
            f"model.validation_ds.sets=[{{name: en, path: {c['en_val']}, lang: en}}, {{name: hi, path: {c['hi_val']}, lang: hi}}]",
            "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1", "trainer.max_steps=2",
            "trainer.val_check_interval=2", f"exp_manager.exp_dir={tmp_path / 'runs'}",
            "exp_manager.resume_if_exists=false"]
    # A finished run's curve in the folder: a run that does not resume starts its own (a rerun once appended).
    stale = tmp_path / "runs" / "ft_110M_enhi" / HISTORY_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text('{"step": 0, "val_en_wer": 0.5}\n{"step": 2, "val_en_wer": 0.5}\n')
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    history = [json.loads(line) for line in stale.read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2] and history[0]["val_en_wer"] != 0.5
    out, err = r.stdout, r.stderr
    assert "== recipe: adapt the vocabulary ==" in out and "== recipe: fine-tune ==" in out
    assert "[ft_110M_enhi] step 0: en WER" in out and "[ft_110M_enhi] step 2: en WER" in out and "hi WER" in out
    assert "ft_110M_enhi: 100%" in out + err and "2/2" in out + err and "loss=" in out + err  # the progress bar
    for chatter in ("[NeMo I", "[NeMo W", "GPU available", "OneLogger", "Trainer.fit"):
        assert chatter not in out + err, chatter
    (log_file,) = (tmp_path / "runs" / "ft_110M_enhi").rglob("library.log")  # in a version folder beside the stale one
    log = log_file.read_text(encoding="utf-8")
    assert "GPU available" in log and "nemo_logger" in log and "OneLogger" in log
