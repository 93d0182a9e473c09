"""Shared fixtures: the reference tokenizers, NeMo tokenizer folders, tiny models and a small synthesized corpus."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "reference"
EN_MODEL = ROOT / "assets" / "tokenizers" / "en1024" / "tokenizer.model"
HI_DIR = ROOT / "assets" / "tokenizers" / "hi256"
MERGED_DIR = ROOT / "en1024_hi256"

# Under pytest-xdist (`-n 2` in pyproject.toml) each worker gets one core's share: one torch thread, and one for
# the subprocesses it starts (OMP_NUM_THREADS is inherited). Two 2-thread processes on 2 cores stall each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, len(os.sched_getaffinity(0))))  # the cores this process may use


@pytest.fixture
def one_torch_thread():
    """Run a test on one intra-op thread. Tests of many small ops (the chunked WKV scan loops over chunks) stall
    at every op's barrier with two threads on 2 shared cores (seen: 1.7 s on one thread vs 9-45 s on two for the
    10-minute file)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_script(path: Path):
    """Import a top-level script (not a package module) so tests can call its `main` in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_main(script: Path | Callable[[list[str]], None], argv: list[str], capsys) -> tuple[int, str, str]:
    """A top-level script's `main(argv)` (or a module's `main` function) in-process, ending as its command would:
    (exit status, stdout, stderr)."""
    main = script if callable(script) else load_script(script).main
    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code
    printed = capsys.readouterr()
    return code, printed.out, printed.err


@pytest.fixture(scope="session")
def en_tok_dir(tmp_path_factory) -> Path:
    """Parakeet's real English tokenizer as a NeMo tokenizer folder."""
    from enhi.tokenizer_merge import write_nemo_tokenizer_folder

    out = tmp_path_factory.mktemp("tok") / "en1024"
    write_nemo_tokenizer_folder(EN_MODEL, out)
    return out


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test run: under pytest-xdist the workers share one copy (the first to ask
    builds it under a file lock, the other waits and reuses it) instead of each paying for the same fixture."""
    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    out, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            # A build that failed on the other worker left a partial folder: start afresh, so this worker reports
            # the build's own error rather than FileExistsError.
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> dict[str, Path]:
    """A few synthesized English and Hindi utterances (unseen voices in val)."""
    from demo.corpus import build_corpus

    out = built_once(tmp_path_factory, "corpus", lambda d: build_corpus(d / "c", n_train_per_lang=48,
                                                                         n_val_per_lang=8, seed=0)) / "c"
    m = out / "manifests"
    return {f"{lang}_{split}": m / f"{lang}_{split}.json" for lang in ("en", "hi") for split in ("train", "val")}


def train_briefly(model, manifest: Path, steps: int, batch: int = 12, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """A plain training loop (no Lightning) on one manifest: enough to make a tiny model emit real transcripts."""
    from enhi.evaluate import audio_batch
    from enhi.manifest import load_audio, read_manifest

    random.seed(seed)
    torch.manual_seed(seed)
    entries = read_manifest(manifest)
    audio = [load_audio(e.audio_filepath) for e in entries]
    ids = [model.tokenizer.text_to_ids(e.text) for e in entries]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        idx = [(step * batch + i) % len(entries) for i in range(batch)]
        sig, lens = audio_batch([audio[i] for i in idx], torch.device("cpu"))
        tl = torch.tensor([len(ids[i]) for i in idx])
        tr = torch.zeros(batch, int(tl.max()), dtype=torch.long)
        for j, i in enumerate(idx):
            tr[j, : len(ids[i])] = torch.tensor(ids[i])
        enc, el = model.forward(input_signal=sig, input_signal_length=lens)
        dec, _, _ = model.decoder(targets=tr, target_length=tl)
        joint = model.joint.joint(enc.transpose(1, 2), dec.transpose(1, 2))
        loss = model.loss(log_probs=joint, targets=tr, input_lengths=el, target_lengths=tl)
        ctc = model.ctc_loss(log_probs=model.ctc_decoder(encoder_output=enc), targets=tr, input_lengths=el, target_lengths=tl)
        total = 0.7 * loss + 0.3 * ctc
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(total))
    model.eval()
    return losses


def assert_averaged(averaged, trained, start: dict[str, torch.Tensor], w: float, **tol) -> None:
    """`averaged`'s weights are (1 - w) x `trained`'s + w x `start`, the new tokens' rows exactly `trained`'s
    (what model.adaptation.average_with_pretrained promises), computed here independently of enhi.adaptation's
    callback; `tol` goes to torch.allclose."""
    from enhi.rows import new_token_rows

    rows = {id(p): r for p, r in new_token_rows(averaged)}
    for (name, p), q in zip(averaged.named_parameters(), trained.parameters(), strict=True):
        want = (1 - w) * q.detach() + w * start[name]
        if id(p) in rows:
            want[rows[id(p)]] = q.detach()[rows[id(p)]]
        assert torch.allclose(p.detach(), want, **tol), name


@pytest.fixture(scope="session")
def standin_nemo(tmp_path_factory, en_tok_dir, small_corpus) -> Path:
    """A tiny English model trained briefly on synthesized English speech, saved as .nemo (a pretrained stand-in)."""
    from enhi.tiny_model import build_parakeet_model
    from enhi.transplant import install_cpu_tdt_loss

    def build(out: Path) -> None:
        model = build_parakeet_model(en_tok_dir, seed=0, d_model=48, n_layers=2, n_heads=2, pred_hidden=48,
                                     joint_hidden=48)
        install_cpu_tdt_loss(model)
        train_briefly(model, small_corpus["en_train"], steps=60)
        model.save_to(str(out / "standin_en.nemo"))

    return built_once(tmp_path_factory, "standin", build) / "standin_en.nemo"
