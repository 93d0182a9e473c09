"""bench/gpu_check.py: its dry run (every part at toy size on CPU) and the pieces that decide what it reports.

The dry run keeps the GPU check from rotting between the rare runs on a GPU: every part runs, the CUDA-only ones
say "skipped: no GPU", and bench/RESULTS.md is left alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT
from omegaconf import OmegaConf

from bench import gpu_check as gc
from bench import prepare_gpu_wheels as pw
from bench.gpu import common, environment, kernels, memory, report
from bench.gpu import decoder as ladder
from bench.gpu import finetune as gft

pytestmark = pytest.mark.xdist_group("gpu_check")  # on one worker, which builds the shared run once
RESULTS = ROOT / "bench" / "RESULTS.md"


@pytest.fixture(scope="session")  # session: under xdist a module fixture can be rebuilt
def dry_run(tmp_path_factory):
    """One dry run for the whole module (about a minute and a half on 2 cores): its exit code, output, JSON."""
    out = tmp_path_factory.mktemp("gpu_check")
    before = hashlib.sha256(RESULTS.read_bytes()).hexdigest()
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--results", str(out / "RESULTS.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    data = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else None
    return SimpleNamespace(proc=proc, out=out, data=data, results_before=before)


def test_xdist_keeps_a_grouped_module_on_one_worker(request):
    """The dry run here, and the shared runs of test_resume and test_shards, are built once only if pytest-xdist
    sends each of these modules to one worker. pytest 9.2 silently broke that (pytest-dev/pytest-xdist#1386):
    every costly fixture was built on both workers."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and getattr(request.config.option, "loadgroup", False)):
        pytest.skip("runs only under pytest-xdist with --dist loadgroup (the suite's default)")
    assert request.node.nodeid.endswith("@gpu_check"), request.node.nodeid


def test_dry_run_reports_every_part(dry_run):
    assert dry_run.proc.returncode == 0, dry_run.proc.stdout[-3000:] + dry_run.proc.stderr[-3000:]
    parts = dry_run.data["parts"]
    assert list(parts) == list(common.PARTS)
    assert parts["setup"]["status"].startswith("ok")
    assert parts["finetune"]["status"] == "ok"
    assert parts["setup"]["data"]["versions"]["nemo_toolkit"] == "3.0.0"
    for name in ("cuda-tests", "batch-24g", "wkv7", "long-audio", "wkv7-fla"):
        assert parts[name]["status"].startswith("skipped: no GPU"), (name, parts[name]["status"])
    assert not dry_run.data["gpu"] and dry_run.data["dry_run"]
    # The CPU cases of bench_wkv7 ran at toy size (in a child process: the path every part takes on a GPU).
    assert "ours: wkv7 torch (chunked)" in parts["wkv7"]["data"]["toy_cpu_cases"]


def test_dry_run_collects_each_cuda_test_and_skips_it(dry_run):
    cases = dry_run.data["parts"]["cuda-tests"]["data"]["cases"]
    names = {c["name"] for c in cases}
    for node in environment.CUDA_TESTS:  # each named test was found (a renamed one fails here) ...
        module, test = node.split("/")[-1].replace(".py", "").split("::")
        assert any(n == f"{module}::{test}" or n.startswith(f"{module}::{test.split('[')[0]}[") for n in names), node
    assert all(c["outcome"] == "skipped" for c in cases)  # ... and skipped for want of a GPU


def test_dry_run_fine_tunes_with_both_optimizers_and_the_dispatched_tdt_loss(dry_run):
    ft = dry_run.data["parts"]["finetune"]["data"]
    runs = ft["runs"]
    assert [runs["AdamW"]["optimizer"], runs["AdamW8bit"]["optimizer"]] == ["torch.AdamW", "bitsandbytes.AdamW8bit"]
    for r in runs.values():
        assert r["steps"] == common.DRY_SIZES.steps and r["precision"] == gft.precision_for("cpu")
        assert len(r["losses"]) == r["steps"] and all(math.isfinite(x) for x in r["losses"]) and r["finite"]
        # On CPU the dispatcher must have sent every call to the PyTorch loss, with the model's durations.
        assert "TDTLossTorch, durations [0, 1, 2, 3, 4]" in r["loss_check"]
        assert "on cpu float32 acts, none on the other branch" in r["loss_check"]
        assert r["peak_gpu_gib"] is None  # never a GPU figure from a CPU run
    assert runs["AdamW8bit"]["state_bytes"] < runs["AdamW"]["state_bytes"]
    tr = ft["transcribe"]
    assert set(tr) == {"unadapted", "adapted (transplant)", "fine-tuned (AdamW)"}
    assert tr["adapted (transplant)"]["same_texts"]  # the transplant leaves greedy transcripts as they were
    assert all(r["rtfx"] > 0 for r in tr.values())
    assert ft["decoder_graphs"] == "disabled"  # the recipe's default decoder mode


def test_dry_run_climbs_the_decoder_ladder(dry_run):
    """On a CPU every mode is NeMo's PyTorch decoder: all run, all give the graph-free decoder's transcripts."""
    d = dry_run.data["parts"]["decoder-ladder"]
    assert [r["step"] for r in d["data"]["rows"]] == list(ladder.LADDER)
    assert all(r["status"] == "ok" and r["space_byte_intact"] for r in d["data"]["rows"])
    assert all(r["same_as_disabled"] for r in d["data"]["rows"][1:])
    assert d["data"]["safe"] == list(ladder.LADDER[1:]) and d["status"].startswith("ok: safe disabled, no_graphs")
    # Each forced mode was in force when its step ran (not silently NeMo's own choice).
    assert [r["mode_in_force"] for r in d["data"]["rows"][1:]] == list(ladder.LADDER[1:])


def test_the_dry_run_trains_in_fp32_on_a_cpu_without_bf16(monkeypatch):
    from enhi import training

    monkeypatch.setattr(training, "cpu_runs_bf16_lstm", lambda: False)
    assert gft.precision_for("cpu") == "32" and gft.precision_for("cuda") == "bf16-mixed"
    monkeypatch.setattr(training, "cpu_runs_bf16_lstm", lambda: True)
    assert gft.precision_for("cpu") == "bf16-mixed"


def test_dry_run_summary_and_results_copy(dry_run):
    stdout = dry_run.proc.stdout
    assert "targets:" in stdout and stdout.count("NOT MEASURED") == 7
    assert " PASS " not in stdout and " MISS " not in stdout  # verdicts come only from GPU measurements
    assert hashlib.sha256(RESULTS.read_bytes()).hexdigest() == dry_run.results_before
    text = (dry_run.out / "RESULTS.md").read_text()
    for key in ("gpu-check-dry-run", "gpu-check-finetune-dry-run", "gpu-check-decoder-dry-run"):
        assert f"<!-- {key}:start -->" in text
    # GPU sections of the copy are the original's: a CPU run writes none of them.
    for key in ("wkv7-bench", "long-audio-bench", "gpu-check", "gpu-check-finetune", "gpu-check-decoder",
                "gpu-check-batch-24g"):
        start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
        section = lambda t, s=start, e=end: t.split(s, 1)[1].split(e, 1)[0] if s in t else None  # noqa: E731
        assert section(text) == section(RESULTS.read_text()), key
    assert (dry_run.out / "gpu_check_summary.txt").read_text().startswith("GPU check (dry run")


def test_dry_run_refuses_to_write_bench_results():
    assert gc.main(["--dry-run", "--results", str(RESULTS)]) == 2


# ----------------------------------------------------------------------------------------------------------
# The loss assertion, on stand-ins for the model (both branches, without a GPU or NeMo).
# ----------------------------------------------------------------------------------------------------------


class TDTLossNumba(torch.nn.Module):  # named as NeMo's numba loss: the check goes by class name
    def __init__(self, durations, sigma=0.02, omega=0.1):
        super().__init__()
        self.durations, self.sigma, self.omega, self.reduction = durations, sigma, omega, "mean_batch"

    def forward(self, acts, labels, act_lens, label_lens):
        return acts.sum()


def _model(durations=(0, 1, 2, 3, 4), numba_durations=(0, 1, 2, 3, 4)):
    from enhi.tdt_loss import TDTLossTorch
    from enhi.transplant import DeviceDispatchTDTLoss

    cfg = OmegaConf.create({"loss": {"tdt_kwargs": {"durations": list(durations), "sigma": 0.02, "omega": 0.1}},
                            "decoding": {"durations": list(durations)}})
    inner = DeviceDispatchTDTLoss(TDTLossNumba(list(numba_durations)), TDTLossTorch(5, list(durations), sigma=0.02, omega=0.1))
    return SimpleNamespace(cfg=cfg, loss=SimpleNamespace(_loss=inner), joint=SimpleNamespace(num_extra_outputs=len(durations)))


def _call(model, on_cuda_branch: bool):
    inner = model.loss._loss
    acts = torch.zeros(1, 2, 2, 6 + 5)
    loss = inner.cuda_loss if on_cuda_branch else inner.cpu_loss
    loss(acts=acts, labels=torch.zeros(1, 1, dtype=torch.long), act_lens=torch.tensor([2]), label_lens=torch.tensor([1]))


def test_check_tdt_loss_accepts_the_branch_of_the_device():
    model = _model()
    calls = gft.tdt_loss_calls(model)
    _call(model, on_cuda_branch=False)
    assert "TDTLossTorch" in gft.check_tdt_loss(model, calls, "cpu")
    # The CUDA form of the check, on the numba stand-in: it wants calls there and none on the PyTorch loss.
    model = _model()
    calls = gft.tdt_loss_calls(model)
    _call(model, on_cuda_branch=True)
    calls["cuda_loss"] = [("cuda", d) for _, d in calls["cuda_loss"]]  # as if the acts had been on a GPU
    assert gft.check_tdt_loss(model, calls, "cuda").startswith("NeMo's CUDA TDT loss TDTLossNumba, durations [0, 1, 2, 3, 4]")


def test_check_tdt_loss_refuses_the_wrong_branch_or_durations():
    model = _model()
    calls = gft.tdt_loss_calls(model)
    _call(model, on_cuda_branch=True)  # on "CPU", the numba branch ran: refused
    with pytest.raises(AssertionError, match="loss calls"):
        gft.check_tdt_loss(model, calls, "cpu")
    model = _model(numba_durations=(0, 1, 2))
    calls = gft.tdt_loss_calls(model)
    _call(model, on_cuda_branch=True)
    with pytest.raises(AssertionError, match="durations"):
        gft.check_tdt_loss(model, calls, "cuda")
    with pytest.raises(AssertionError, match="not DeviceDispatchTDTLoss"):
        gft.tdt_loss_calls(SimpleNamespace(loss=SimpleNamespace(_loss=torch.nn.Identity())))


# ----------------------------------------------------------------------------------------------------------
# The long-audio ladder and the targets.
# ----------------------------------------------------------------------------------------------------------


def _ladder(kind: str, gib_per_h: float, base: float, total: float, limit: int = 30) -> list[tuple[float, float | None]]:
    done: list[tuple[float, float | None]] = []
    while (h := kernels.next_hours(kind, done, total)) is not None and len(done) < limit:
        mem = base + gib_per_h * h
        done.append((h, mem if mem <= total else None))
    return done


def test_long_audio_ladder_passes_the_target_then_climbs_to_the_first_oom():
    done = _ladder("birwkv7", gib_per_h=3.5, base=2.0, total=139.8)
    hours = [h for h, _ in done]
    assert hours[:3] == [0.25, 1.0, common.TARGET_LONG_AUDIO_H + 1]
    assert 34 <= hours[3] <= 38  # 95% of the straight-line limit (39.1 h), in one step
    assert done[-1][1] is None and all(m is not None for _, m in done[:-1])  # stops at the first OOM
    assert len(done) <= 8
    att = _ladder("attention", gib_per_h=80.0, base=1.0, total=79.2)
    assert [h for h, _ in att] == [0.25, 0.5, 1.0] and att[-1][1] is None


def _parts(ours=4.0, fla=5.0, rows=(("birwkv7", 13.0, 24.0, 1950.0, 48.0, ""),), state=(1000, 256), step=(0.2, 0.21),
           rtfx=(500.0, 495.0), batch=((600, 800), (300, 420)), safe=("disabled", "no_graphs")):
    run = lambda b, s: {"state_bytes": b, "median_step_s": s}  # noqa: E731
    fit = lambda s: {"largest_s": s, "refused_s": s + 60, "trials": [(s, True)], "params": 1e8}  # noqa: E731
    return {
        "decoder-ladder": {"status": "ok", "data": {"safe": list(safe), "fastest_safe": safe[0] if safe else None}},
        "batch-24g": {"status": "ok", "data": {"results": {
            "110m AdamW": fit(batch[0][0]), "110m AdamW8bit": fit(batch[0][1]),
            "0.6b AdamW": fit(batch[1][0]), "0.6b AdamW8bit": fit(batch[1][1])}}},
        "wkv7-fla": {"status": "ok", "data": {"rows": [
            {"shape": "B=8 H=8 N=64 T=4096", "name": "ours: wkv7 cuda", "fwdbwd": ours},
            {"shape": "B=8 H=8 N=64 T=4096", "name": "fla chunk_rwkv7", "fwdbwd": fla},
        ]}},
        "long-audio": {"status": "ok", "data": {"total_gib": 79.2, "rows": [list(r) for r in rows]}},
        "finetune": {"status": "ok", "data": {
            "runs": {"AdamW": run(state[0], step[0]), "AdamW8bit": run(state[1], step[1])},
            "transcribe": {"unadapted": {"rtfx": rtfx[0]}, "adapted (transplant)": {"rtfx": rtfx[1]}},
        }},
    }


def test_targets_pass_and_miss_only_from_measured_numbers():
    assert [v for v, *_ in report.targets(_parts(), gpu=True)] == ["PASS"] * 7
    missed = report.targets(_parts(ours=6.0, rows=(("birwkv7", 13.0, None, None, None, "OOM"),), state=(1000, 400),
                               rtfx=(500.0, 400.0), batch=((600, 780), (300, 300)), safe=("nemo",)), gpu=True)
    assert [v for v, *_ in missed] == ["MISS"] * 7
    assert "600 s -> 780 s (1.30x)" in missed[4][2]  # just short of the seed's 800 s
    assert [v for v, *_ in report.targets(_parts(), gpu=False)] == ["NOT MEASURED"] * 7
    # A part that was cut or never ran leaves its targets unmeasured, not passed or missed.
    cut = _parts(fla=None, rows=(("birwkv7", 13.0, None, None, None, "not run: time"),))
    del cut["finetune"]["data"]["runs"]["AdamW8bit"]
    del cut["batch-24g"]["data"]["results"]["0.6b AdamW8bit"]
    del cut["decoder-ladder"]["data"]["safe"]
    assert [v for v, *_ in report.targets(cut, gpu=True)] == ["NOT MEASURED", "NOT MEASURED", "NOT MEASURED", "PASS",
                                                              "PASS", "NOT MEASURED", "NOT MEASURED"]


def test_largest_fitting_doubles_then_halves_the_gap():
    limit = 1000.0
    r = memory.largest_fitting(lambda s: s <= limit)
    assert r["largest_s"] == 960 and r["refused_s"] == 1020  # within 60 s of the true limit, below it
    assert [s for s, _ in r["trials"]][:3] == [300, 600, 1200]
    assert memory.largest_fitting(lambda s: False)["largest_s"] is None
    assert memory.largest_fitting(lambda s: True, limit=2400)["refused_s"] is None  # never refused up to the limit


def test_ladder_verdict_keeps_only_modes_that_ran_and_agreed():
    rows = [{"step": "encoder", "status": "ok", "wall_s": 0.1},
            {"step": "disabled", "status": "ok", "wall_s": 2.0, "same_as_disabled": True},
            {"step": "no_while_loops", "status": "ok", "wall_s": 1.0, "same_as_disabled": False},
            {"step": "full_graph", "status": "failed: RuntimeError: x", "wall_s": 0.5},
            {"step": "nemo", "status": "not run: CUDA context lost at full_graph"}]
    assert ladder.ladder_verdict(rows) == {"safe": ["disabled"], "fastest_safe": "disabled", "failed": ["full_graph"]}


# ----------------------------------------------------------------------------------------------------------
# bench/prepare_gpu_wheels.py, offline parts.
# ----------------------------------------------------------------------------------------------------------


def test_every_wheel_has_a_locked_version_for_python_312():
    versions = pw.locked_versions(ROOT / "uv.lock") | pw.NOT_IN_LOCK
    assert all(pw.norm(n) in versions for n in pw.WHEELS)
    assert len({pw.norm(n) for n in pw.WHEELS}) == len(pw.WHEELS)
    assert versions["nemo-toolkit"] == "3.0.0"


def test_trim_bitsandbytes_keeps_the_cpu_and_chosen_cuda_libraries(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.0-py3-none-manylinux_2_24_x86_64.whl"
    libs = ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda118.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_rocm64.so"]
    members = ["bitsandbytes/__init__.py", *(f"bitsandbytes/{x}" for x in libs)]
    with zipfile.ZipFile(wheel, "w") as z:
        for m in members:
            z.writestr(m, m)
        z.writestr("bitsandbytes-0.0.dist-info/RECORD", "".join(f"{m},sha256=x,1\n" for m in members))
    dropped = pw.trim_bitsandbytes(wheel, ["130"])
    assert sorted(dropped) == ["bitsandbytes/libbitsandbytes_cuda118.so", "bitsandbytes/libbitsandbytes_rocm64.so"]
    with zipfile.ZipFile(wheel) as z:
        kept = set(z.namelist())
        record = z.read("bitsandbytes-0.0.dist-info/RECORD").decode()
    assert kept == {*members, "bitsandbytes-0.0.dist-info/RECORD"} - set(dropped)
    assert "cuda118" not in record and "cuda130" in record


# ----------------------------------------------------------------------------------------------------------
# What a GPU run writes, from synthetic measurements (a crash there would lose a rare GPU run's tables).
# ----------------------------------------------------------------------------------------------------------


def test_gpu_tables_and_summary_from_synthetic_measurements(tmp_path):
    parts = _parts()
    run = {"optimizer": "torch.AdamW", "batch_duration": 60.0, "steps": 50, "median_step_s": 0.2, "peak_gpu_gib": 9.5,
           "state_bytes": 900 * 2**20, "losses": [300.0, 120.0], "finite": True, "loss_check": "NeMo's CUDA TDT loss"}
    parts["finetune"]["data"] = {
        "model": "110m", "vocab": 1278, "corpus": {"utterances": 104},
        "runs": {"AdamW": run, "AdamW8bit": {**run, "optimizer": "bitsandbytes.AdamW8bit", "state_bytes": 230 * 2**20}},
        "transcribe": {name: {"rtfx": 800.0, "wall_s": 0.3, "audio_s": 240.0, "chars": 900}
                       for name in ("unadapted", "adapted (transplant)", "fine-tuned (AdamW)")},
    }
    parts["finetune"]["data"]["transcribe"]["adapted (transplant)"]["same_texts"] = True
    row = {"shape": "B=8 H=8 N=64 T=4096", "fwd": 1.0, "fwdbwd": 4.0, "note": ""}
    parts["wkv7"] = {"status": "ok", "data": {"rows": [{**row, "name": "ours: wkv7 cuda"},
                                                       {**row, "name": "torch SDPA (non-causal)", "fwd": None, "fwdbwd": None,
                                                        "note": "skipped: out of memory"}]}}
    parts["wkv7-fla"]["data"]["rows"] = [{**r, "fwd": 1.0, "note": ""} for r in parts["wkv7-fla"]["data"]["rows"]]
    parts["wkv7-fla"]["data"]["first_call_s_0"] = 190.0
    parts["long-audio"]["data"].update(layers=24, rows=[["attention", 1.0, None, None, None, "OOM"],
                                                        ["birwkv7", 13.0, 24.0, 1950.0, 48.0, ""]])
    parts["cuda-tests"] = {"status": "ok: 1 passed", "data": {"cases": [
        {"name": "test_tdt_loss::test_matches_nemo_tdt_numba_cuda[0.0--1.0]", "outcome": "passed", "seconds": 9.0, "message": ""}]}}
    for d in parts.values():
        d.setdefault("seconds", 1.0)
    summary = report.summary_text(parts, gpu=True, machine="NVIDIA H200", elapsed=400, budget=470, dry=False)
    assert summary.count("PASS") == 7 and "ours: wkv7 cuda 4.00 ms; fla chunk_rwkv7 5.00 ms" in summary
    path = tmp_path / "RESULTS.md"
    report.write_results(parts, summary, path, gpu=True, dry=False, command="python3 bench/gpu_check.py")
    text = path.read_text()
    for key in ("gpu-check", "gpu-check-finetune", "wkv7-bench", "long-audio-bench", "gpu-check-batch-24g"):
        assert f"<!-- {key}:start -->" in text
    assert "| 110m AdamW8bit | 100.0 | 800 | 860 | 1 |" in text
    assert "| AdamW8bit (bitsandbytes.AdamW8bit) | 50 | 0.200 | 9.5 | 230.0 |" in text
    assert "| birwkv7 | 13.0 | 24.00 | 1950 | 48.0 |" in text and "| attention | 1.0 | OOM | - | - |" in text
    assert "| B=8 H=8 N=64 T=4096 | fla chunk_rwkv7 | 1.00 | 5.00 |" in text
    assert "command (repository root): `python3 bench/gpu_check.py`" in text


def test_a_part_past_its_time_limit_is_cut_and_reported(tmp_path):
    args = SimpleNamespace(work=tmp_path, dry_run=True)
    d = gc.run_part_isolated("long-audio", args, deadline=time.time() + 0.3)
    assert d["status"].startswith("cut: time limit")


# ----------------------------------------------------------------------------------------------------------
# The GPU branches of the benchmark parts, driven on CPU with the benchmarks' own functions stood in for.
# ----------------------------------------------------------------------------------------------------------


def test_wkv7_parts_on_a_gpu_split_fla_from_the_rest(monkeypatch):
    from bench import bench_wkv7 as bw

    seen = []

    def bench_shape(B, H, N, T, reps, device, skip):
        seen.append((T, tuple(skip)))
        names = ["ours: wkv7 cuda", "torch SDPA (non-causal)", "fla chunk_rwkv7", "ours: wkv7 torch (chunked)"]
        return [{"shape": f"B={B} H={H} N={N} T={T}", "name": n, "fwd": 1.0, "fwdbwd": 2.0,
                 "note": "skipped (--skip)" if any(w in n for w in skip) else ""} for n in names]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bw, "bench_shape", bench_shape)
    logs = {}
    for with_fla in (False, True):
        logs[with_fla] = common.PartLog("wkv7", None)
        kernels.part_wkv7(common.GPU_SIZES, logs[with_fla], deadline=float("inf"), with_fla=with_fla)
    assert seen == [(4096, ("fla",)), (32768, ("fla", "chunked")), (4096, ("torch",)), (32768, ("torch",))]
    assert [r["name"] for r in logs[True].d["data"]["rows"]] == ["ours: wkv7 cuda", "fla chunk_rwkv7"] * 2
    assert "fla chunk_rwkv7" not in [r["name"] for r in logs[False].d["data"]["rows"]]
    assert logs[True].d["status"] == "ok" and "first_call_s_0" in logs[True].d["data"]


def test_long_audio_part_on_a_gpu_runs_its_ladder_to_the_first_oom(monkeypatch):
    from bench import bench_long_audio as bla

    total = 139.8

    def run_one(enc, seconds):
        h = seconds / 3600
        mem = (1.0 + 60.0 * h * h) if enc == "attention" else (2.0 + 3.5 * h)
        if mem > total:
            raise torch.OutOfMemoryError("simulated")
        return seconds / 2000.0, mem  # RTFx 2000

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=total * 2**30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(bla, "encoder", lambda kind, layers: kind)
    monkeypatch.setattr(bla, "run_one", run_one)
    monkeypatch.setattr(kernels, "quiet_nemo", lambda: None)
    clock = [0.0]  # the simulated runs take no real time: advance a clock by each run's wall time instead
    monkeypatch.setattr(time, "time", lambda: clock[0])
    monkeypatch.setattr(bla, "run_one", lambda enc, s: (clock.__setitem__(0, clock[0] + s / 2000.0), run_one(enc, s))[1])
    log = common.PartLog("long-audio", None)
    kernels.part_long_audio(common.GPU_SIZES, log, deadline=1e9)
    rows = log.d["data"]["rows"]
    att = [r for r in rows if r[0] == "attention"]
    rw = [r for r in rows if r[0] == "birwkv7"]
    assert [r[1] for r in att] == [0.25, 0.5, 1.0, 2.0] and att[-1][5] == "OOM"
    assert [r[1] for r in rw][:3] == [0.25, 1.0, 13.0] and rw[-1][5] == "OOM"
    assert [v for v, *_ in report.targets({"long-audio": log.d}, gpu=True)][1] == "PASS"
    # With too little time left for the next length, the ladder stops and says so (no run is cut midway).
    clock[0] = 0.0
    log = common.PartLog("long-audio", None)
    kernels.part_long_audio(common.GPU_SIZES, log, deadline=30.0)
    assert ["birwkv7", 13.0, None, None, None, "not run: time"] in log.d["data"]["rows"]


def test_a_recorded_command_names_no_folder_of_the_machine(monkeypatch):
    from bench.results import header
    from enhi.portable import REPO_ROOT as ROOT

    monkeypatch.setenv("OUT", "/root/out/")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "gpu_check.py"), "--results", "/root/out/RESULTS.md",
                                      f"--wheels={ROOT}/.whl", "--budget-s", "340"])
    line = next(x for x in header("t") if x.startswith("- command"))
    assert line.endswith(" bench/gpu_check.py --results '$OUT/RESULTS.md' --wheels=.whl --budget-s 340`"), line
    assert "/root" not in line and str(ROOT) not in line


# ----------------------------------------------------------------------------------------------------------
# finetune's fallback: NeMo's greedy TDT decoder with CUDA graphs disabled after a CUDA fault (the H200 run of
# 2026-12-04 died of an illegal memory access at its first transcription).
# ----------------------------------------------------------------------------------------------------------

FAULT = "failed: AcceleratorError: CUDA error: an illegal memory access was encountered"


def _attempts(outcomes: dict[str, str]):
    calls = []

    def run(graphs: str) -> dict:
        calls.append(graphs)
        return {"part": "finetune", "status": outcomes[graphs], "notes": [graphs], "data": {"decoder_graphs": graphs},
                "seconds": 1.0}

    return run, calls


def test_a_cuda_fault_with_the_graph_decoder_runs_the_fine_tune_again_without_it():
    run, calls = _attempts({"nemo": FAULT, "disabled": "ok"})
    d = gc.finetune_with_decoder_fallback(run, "nemo", lambda: 300.0)
    assert calls == ["nemo", "disabled"]
    assert d["status"] == f"ok (decoder CUDA graphs disabled; with `nemo`: {FAULT})"
    assert d["first_attempt"]["status"] == FAULT and d["first_attempt"]["notes"] == ["nemo"]
    line = report.decoder_line(d)
    assert line.startswith("Greedy TDT decoder, CUDA graphs `disabled`") and FAULT in line
    assert report.decoder_line({"data": {"decoder_graphs": "nemo"}}).endswith("CUDA graphs `nemo` (`model.decoder_cuda_graphs`, enhi/decoding.py).")


@pytest.mark.parametrize(("outcomes", "first", "seconds_left"), [
    ({"nemo": "ok"}, "nemo", 300.0),  # nothing to retry
    ({"nemo": "failed: AssertionError: trained in 32-true, not bf16-mixed"}, "nemo", 300.0),  # not a CUDA fault
    ({"nemo": FAULT}, "nemo", gc.MIN_RETRY_S - 1),  # no time for a second fine-tune
    ({"disabled": FAULT}, "disabled", 300.0),  # already without the graphs
])
def test_no_second_fine_tune_unless_the_graph_decoder_died_with_time_left(outcomes, first, seconds_left):
    run, calls = _attempts(outcomes)
    d = gc.finetune_with_decoder_fallback(run, first, lambda: seconds_left)
    assert calls == [first] and d["status"] == outcomes[first] and "first_attempt" not in d
