"""Sharded training sources (NeMo tarred, Lhotse Shar): made from the synthesized corpus by `enhi.shards`, read back
by NeMo's and Lhotse's own readers, checked from their metadata, refused when broken, and trained from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MERGED_DIR, ROOT, run_main
from omegaconf import OmegaConf
from test_resume import _losses, _nemo_weights  # TensorBoard's train_loss per step; a run's final weights

from demo.common import DEMO_SETTINGS
from enhi import shards
from enhi.errors import UserError
from enhi.manifest import load_audio, read_manifest

pytestmark = pytest.mark.xdist_group("shards")  # on one worker, which builds the shared run once
SCRIPT = ROOT / "ft_110M_enhi_demo.py"


@pytest.fixture(scope="session")  # session: under xdist a module fixture can be rebuilt
def sharded(small_corpus, tmp_path_factory) -> dict[str, object]:
    """The English training manifest as a Lhotse Shar folder (3 shards) and the Hindi one as a NeMo tarred set (3)."""
    root = tmp_path_factory.mktemp("shards")
    shar = shards.write_shar(small_corpus["en_train"], root / "en_shar", shard_size=16)
    tarred = shards.write_tarred(small_corpus["hi_train"], root / "hi_tarred", num_shards=3)
    man, tars = shards.tarred_patterns(tarred)
    return {"root": root, "shar": shar, "tarred": tarred, "tarred_manifest": man, "tars": tars}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_shar_holds_every_utterance_with_its_audio_bit_exact(sharded, small_corpus):
    from lhotse import CutSet

    entries = read_manifest(small_corpus["en_train"])
    assert sorted(p.name for p in sharded["shar"].iterdir()) == [
        f"{kind}.{i:06d}.{ext}" for kind, ext in (("cuts", "jsonl.gz"), ("recording", "tar")) for i in range(3)]
    cuts = list(CutSet.from_shar(in_dir=sharded["shar"]))  # Lhotse's own reader
    assert [c.supervisions[0].text for c in cuts] == [e.text for e in entries]
    for cut, e in zip(cuts[:5], entries[:5], strict=False):
        assert np.array_equal(cut.load_audio()[0], load_audio(e.audio_filepath))  # FLAC is lossless
        assert cut.duration == pytest.approx(e.duration, abs=1e-3)


def test_tarred_set_is_read_by_nemos_own_tarred_reader(sharded, small_corpus):
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoTarredIterator

    entries = read_manifest(small_corpus["hi_train"])
    assert shards.expand(sharded["tars"]) == [f"{sharded['tarred']}/audio_{i}.tar" for i in range(3)]
    cuts = list(LazyNeMoTarredIterator(sharded["tarred_manifest"], sharded["tars"]))
    assert sorted(c.supervisions[0].text for c in cuts) == sorted(e.text for e in entries)
    by_text = {e.text: e for e in entries}
    for cut in cuts[:5]:
        assert np.array_equal(cut.load_audio()[0], load_audio(by_text[cut.supervisions[0].text].audio_filepath))


def test_data_check_reads_sharded_sources_from_metadata_alone(sharded, small_corpus, monkeypatch):
    from enhi import datacheck

    headers = []
    real = datacheck._audio_info
    monkeypatch.setattr(datacheck, "_audio_info", lambda p: headers.append(p) or real(p))
    cfg = _cfg(small_corpus, [
        {"path": small_corpus["en_train"], "lang": "en"},
        {"type": "lhotse_shar", "path": str(sharded["shar"]), "lang": "en"},
        {"type": "nemo_tarred", "path": sharded["tarred_manifest"], "tarred_audio_filepaths": sharded["tars"], "lang": "hi"},
    ])
    reports = datacheck.check_data(cfg, verbose=False)
    plain, shar, tarred = reports[:3]
    en, hi = read_manifest(small_corpus["en_train"]), read_manifest(small_corpus["hi_train"])
    assert (shar.n, tarred.n) == (len(en), len(hi))
    assert shar.seconds == pytest.approx(sum(e.duration for e in en), abs=0.05)
    assert tarred.seconds == pytest.approx(sum(e.duration for e in hi), abs=1e-6)
    assert (tarred.min_s, tarred.max_s) == (min(e.duration for e in hi), max(e.duration for e in hi))
    assert shar.sample_rates == {16000: len(en)} and tarred.sample_rates == {}  # tarred manifests carry none
    assert tarred.chars == sum(len(e.text.replace(" ", "")) for e in hi) and not tarred.unk_chars
    # Audio headers were read for the plain manifests only, never inside a shard.
    assert len(headers) == plain.n + sum(r.n for r in reports[3:])
    assert not [h for h in headers if "shar" in h or "tarred" in h]
    table = datacheck.format_summary(reports)
    assert "| train | en | 48 |" in table and "en_shar (lhotse_shar)" in table and "(nemo_tarred)" in table


def _cfg(corpus: dict, train: list[dict], **train_ds):
    from enhi.config import ManifestSpec, NamedSet, load_run_config

    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [f"model.tokenizer.dir={MERGED_DIR}"])
    cfg.model.train_ds.manifests = [ManifestSpec(**{k: str(v) if k == "path" else v for k, v in d.items()}) for d in train]
    cfg.model.validation_ds.sets = [NamedSet("en", str(corpus["en_val"]), "en")]
    for k, v in train_ds.items():
        cfg.model.train_ds[k] = v
    return cfg


@pytest.mark.parametrize("damage, message", [
    ("delete_tar", "audio_1.tar: shard not found"),
    ("truncate_tar", "audio_1.tar: truncated shard"),
    ("garbage_tar", "audio_1.tar: not a readable tar"),
    ("drop_member", "is not in"),
    ("bad_line", "a tarred manifest line needs audio_filepath, duration, text and shard_id"),
])
def test_a_broken_tarred_set_is_one_line_naming_the_file(damage, message, sharded, small_corpus, tmp_path, capsys):
    import tarfile

    d = _copy(sharded["tarred"], tmp_path / "hi_tarred")
    tar = d / "audio_1.tar"
    if damage == "delete_tar":
        tar.unlink()
    elif damage == "truncate_tar":
        tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    elif damage == "garbage_tar":
        tar.write_bytes(b"not a tar at all" * 64)
    elif damage == "drop_member":
        with tarfile.open(tar) as t:
            members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
        with tarfile.open(tar, "w") as t:
            for m, data in members[1:]:
                import io

                t.addfile(m, io.BytesIO(data))
    elif damage == "bad_line":
        m = d / "sharded_manifests" / "manifest_1.json"
        m.write_text(m.read_text().replace('"shard_id"', '"shard"', 1))
    man, tars = shards.tarred_patterns(d)
    if damage == "delete_tar":  # the pattern still names three shards
        tars = f"{d}/audio__OP_0..2_CL_.tar"
    code, _, err = run_main(ROOT / "check_data.py", [f"model.tokenizer.dir={MERGED_DIR}",
        f"model.train_ds.manifests=[{{type: nemo_tarred, path: '{man}', tarred_audio_filepaths: '{tars}', lang: hi}}]",
        f"model.validation_ds.sets=[{{name: en, path: {small_corpus['en_val']}, lang: en}}]"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("damage, message", [
    ("delete_tar", "recording.000001.tar: shard not found"),
    ("truncate_tar", "recording.000001.tar: truncated shard"),
    ("truncate_cuts", "cuts.000001.jsonl.gz: unreadable"),
    ("not_a_folder", "Lhotse Shar folder not found"),
])
def test_a_broken_shar_folder_is_one_line_naming_the_file(damage, message, sharded, small_corpus, tmp_path):
    d = _copy(sharded["shar"], tmp_path / "en_shar")
    tar, cuts = d / "recording.000001.tar", d / "cuts.000001.jsonl.gz"
    if damage == "delete_tar":
        tar.unlink()
    elif damage == "truncate_tar":
        tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    elif damage == "truncate_cuts":
        cuts.write_bytes(cuts.read_bytes()[:40])
    path = d if damage != "not_a_folder" else tmp_path / "nowhere"
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        shards.shar_entries(path)


@pytest.mark.parametrize("entry, message", [
    ("{type: nemo_tared, path: x.json, lang: hi}", "type 'nemo_tared' is not one of nemo, nemo_tarred, lhotse_shar"),
    ("{type: nemo_tarred, path: x.json, lang: hi}", "type nemo_tarred needs tarred_audio_filepaths"),
    ("{path: x.json, tarred_audio_filepaths: a.tar, lang: hi}", "tarred_audio_filepaths is only for type nemo_tarred"),
    ("{type: nemo_tarred, path: x.json, tarred_audio_filepath: a.tar, lang: hi}", "tarred_audio_filepath"),
    ("{type: lhotse_shar, path: d, lang: hi}] trainer.max_steps=-1", "endless stream; set trainer.max_steps"),
])
def test_source_settings_are_checked_with_the_config(entry, message):
    from enhi.config import load_run_config

    entry, _, extra = entry.partition("] ")
    with pytest.raises(UserError, match=message):
        load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + [f"model.train_ds.manifests=[{entry.rstrip(']')}]", *extra.split()])


def test_the_command_line_makes_both_kinds_and_prints_the_config_entry(small_corpus, tmp_path, capsys):
    code, out, err = run_main(shards.main, ["tarred", str(small_corpus["hi_train"]), str(tmp_path / "t"), "--num-shards", "2",
                           "--lang", "hi"], capsys)
    assert code == 0, err
    entry = out.strip().splitlines()[-1].split("entry: ", 1)[1]
    spec = OmegaConf.create(f"x: {entry}").x
    assert spec.type == "nemo_tarred" and spec.lang == "hi" and len(shards.expand(spec.tarred_audio_filepaths)) == 2
    assert len(shards.tarred_entries(spec.path, spec.tarred_audio_filepaths)) == len(read_manifest(small_corpus["hi_train"]))
    code, out, err = run_main(shards.main, ["shar", str(small_corpus["en_val"]), str(tmp_path / "s"), "--shard-size", "5"], capsys)
    assert code == 0, err
    spec = OmegaConf.create("x: " + out.strip().splitlines()[-1].split("entry: ", 1)[1]).x
    assert spec.type == "lhotse_shar" and len(shards.shar_entries(spec.path)) == len(read_manifest(small_corpus["en_val"]))
    code, out, err = run_main(shards.main, ["tarred", str(small_corpus["hi_train"]), str(tmp_path / "t")], capsys)
    assert code == 2 and "output folder exists" in err  # nothing replaced without --force
    code, out, err = run_main(shards.main, ["shar", str(tmp_path / "missing.json"), str(tmp_path / "m")], capsys)
    assert code == 2 and "manifest not found" in err and not (tmp_path / "m").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "t"]  # no temporary folder left behind


def _train_argv(standin_nemo, corpus, sources: str, exp_dir: Path, workers: int, steps: int = 3) -> list[str]:
    return [
        *DEMO_SETTINGS,
        f"init_from_nemo_model={standin_nemo}", f"model.tokenizer.dir={MERGED_DIR}", "model.adaptation.new_rows=mean",
        f"model.train_ds.manifests={sources}",
        f"model.validation_ds.sets=[{{name: en, path: {corpus['en_val']}, lang: en}}]",
        "model.train_ds.batch_duration=12", "model.train_ds.num_buckets=1", f"model.train_ds.num_workers={workers}",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.log_every_n_steps=1",
        f"exp_manager.exp_dir={exp_dir}", "exp_manager.name=run",
    ]


@pytest.mark.parametrize("kind, workers", [("lhotse_shar", 2), ("nemo_tarred", 2), ("mix", 0)])
def test_three_training_steps_from_each_source(kind, workers, sharded, standin_nemo, small_corpus, tmp_path, capsys):
    shar = f"{{type: lhotse_shar, path: '{sharded['shar']}', lang: en}}"
    tarred = (f"{{type: nemo_tarred, path: '{sharded['tarred_manifest']}', tarred_audio_filepaths: '{sharded['tars']}', "
              "lang: hi}")
    plain = f"{{path: {small_corpus['en_train']}, lang: en}}"
    sources = {"lhotse_shar": f"[{shar}]", "nemo_tarred": f"[{tarred}]", "mix": f"[{plain}, {shar}, {tarred}]"}[kind]
    code, out, err = run_main(SCRIPT, _train_argv(standin_nemo, small_corpus, sources, tmp_path, workers), capsys)
    assert code == 0, err[-3000:]
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == [0, 1, 2] and all(np.isfinite(list(losses.values())))
    # one row per source in each of the data check's two tables (audio, text)
    assert out.count("(lhotse_shar)") == 2 * (kind != "nemo_tarred") and out.count("(nemo_tarred)") == 2 * (kind != "lhotse_shar")
    assert list((tmp_path / "run").rglob("*.nemo"))


def test_sharded_streams_differ_per_worker_and_after_a_resume(sharded, small_corpus):
    """With workers, each reads its own shuffled stream (no duplicated batches), and a resumed run draws a new one
    (it does not replay the batches before the kill); see enhi.training.train_ds_config."""
    from enhi.training import train_dataloader

    src = [{"type": "nemo_tarred", "path": sharded["tarred_manifest"], "tarred_audio_filepaths": sharded["tars"], "lang": "hi"}]

    def batches(resumed_step: int, n: int = 4) -> list[tuple]:
        cfg = _cfg(small_corpus, src, num_workers=2, batch_duration=8, num_buckets=1)
        out = []
        for b in train_dataloader(cfg, resumed_step=resumed_step):
            out.append(tuple(json.dumps(t.tolist()) for t in b[2]))
            if len(out) == n:
                return out
        return out

    first, again, resumed = batches(0), batches(0), batches(2)
    assert first == again  # deterministic from the seed
    assert len(set(first)) == len(first)  # workers 0 and 1 (batches alternate between them) do not duplicate
    assert not set(resumed) & set(first[:2])  # the resumed stream does not start over


@pytest.mark.parametrize("kind, workers", [("plain", 2), ("mix", 0)])
def test_resume_is_exact_where_the_sampler_lives_in_the_training_process(kind, workers, sharded, standin_nemo,
                                                                         small_corpus, tmp_path, capsys):
    """Plain manifests with dataloader workers (they only load audio) and sharded sources without workers: a run
    stopped at step 2 and started again ends as the run that never stopped, loss for loss and weight for weight."""
    import torch

    plain = f"{{path: {small_corpus['en_train']}, lang: en}}"
    tarred = (f"{{type: nemo_tarred, path: '{sharded['tarred_manifest']}', tarred_audio_filepaths: '{sharded['tars']}', "
              "lang: hi}")
    sources = f"[{plain}]" if kind == "plain" else f"[{plain}, {tarred}]"

    def run(exp_dir: Path, *extra: str) -> None:
        argv = [*_train_argv(standin_nemo, small_corpus, sources, exp_dir, workers, 4), "trainer.val_check_interval=2", *extra]
        code, _, err = run_main(SCRIPT, argv, capsys)
        assert code == 0, err[-3000:]

    # The uninterrupted run keeps every checkpoint; its step-2 one, put where a killed run's last.ckpt would be,
    # is what the same command resumes from (a run that merely ended at step 2 would have ended its epoch).
    run(tmp_path / "whole", "exp_manager.checkpoint_callback_params.save_top_k=-1",
        "exp_manager.checkpoint_callback_params.filename=run--{step}")
    (step2,) = (tmp_path / "whole" / "run" / "checkpoints").glob("run--step=2.ckpt")
    (tmp_path / "killed" / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(step2, tmp_path / "killed" / "run" / "checkpoints" / "run--step=2-last.ckpt")
    run(tmp_path / "killed")
    a, b = _losses(tmp_path / "whole" / "run"), _losses(tmp_path / "killed" / "run")
    assert sorted(a) == [0, 1, 2, 3] and sorted(b) == [2, 3]
    assert [a[s] for s in (2, 3)] == [b[s] for s in (2, 3)]
    wa, wb = _nemo_weights(tmp_path / "whole" / "run"), _nemo_weights(tmp_path / "killed" / "run")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
