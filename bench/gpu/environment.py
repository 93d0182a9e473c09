"""The check's first two parts: `setup` (wheels from .whl installed offline into a private folder, when the GPU
image lacks a package) and `cuda-tests` (the suite's CUDA tests through pytest; junit XML tells each outcome)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench.gpu.common import NO_GPU, ROOT, PartLog, cuda_available, versions

# The test suite's CUDA tests (each skips without a GPU). Named one by one so a renamed test fails the dry run
# ("not found") instead of silently dropping out of the GPU check.
CUDA_TESTS = (
    "tests/test_wkv7_op.py::test_matches_explicit_matrix_formula[cuda]",
    "tests/test_wkv7_op.py::test_cuda_matches_torch_bf16",
    "tests/test_wkv7_op.py::test_cuda_matches_torch_fp32",
    "tests/test_wkv7_op.py::test_cuda_state_carry_and_auto",
    "tests/test_birwkv7_layer.py::test_bf16_autocast_with_cuda_kernels_tracks_fp32",
    "tests/test_tdt_loss.py::test_matches_nemo_tdt_numba_cuda",
    "tests/test_transplant.py::test_a_model_on_a_gpu_is_changed_and_transplanted_on_the_gpu",
)

# Modules the parts import that a GPU image may lack (top-level module -> distribution), and fla, optional.
NEEDED_MODULES = {
    "nemo": "nemo_toolkit",
    "bitsandbytes": "bitsandbytes",
    "lhotse": "lhotse",
    "omegaconf": "omegaconf",
    "espeakng_loader": "espeakng-loader",
    "soundfile": "soundfile",
    "librosa": "librosa",
}

OPTIONAL_MODULES = {"fla": "fla-core"}


def missing_modules(modules: dict[str, str]) -> list[str]:
    """Top-level modules that cannot be found (located only: importing NeMo alone takes seconds)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def install_wheels(wheel_dir: Path, site: Path) -> tuple[list[str], float]:
    """`pip install --no-index --no-deps --target site` of every wheel in `wheel_dir`; returns their names."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    marker = site / ".gpu_check_wheels"
    names = [w.name for w in wheels]
    t0 = time.perf_counter()
    if marker.is_file() and marker.read_text().split() == names:
        return names, 0.0  # a second run on the same machine: already there
    site.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)]
    subprocess.run(cmd, check=True)
    marker.write_text("\n".join(names))
    return names, time.perf_counter() - t0


def use_site(site: Path) -> None:
    """Make `site` importable here and in every process this check starts."""
    if str(site) not in sys.path:
        sys.path.append(str(site))  # after the image's own packages: the wheels only add what is missing
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in parts if p != str(ROOT)], str(site)])


def _numpy_has_row_stack() -> bool:
    import numpy

    return hasattr(numpy, "row_stack")


def part_setup(args: argparse.Namespace, log: PartLog) -> None:
    missing = missing_modules(NEEDED_MODULES | OPTIONAL_MODULES)
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    # Installed only when something the check cannot do without is missing: a development environment (the
    # dry run's) has it all, and may have no pip.
    if wheels and any(m in NEEDED_MODULES for m in missing):
        names, seconds = install_wheels(args.wheels, args.site)
        use_site(args.site)
        log.note(f"installed {len(names)} wheels from {args.wheels} into {args.site} ({seconds:.1f} s)")
        log.put(wheels=names)
        missing = missing_modules(NEEDED_MODULES | OPTIONAL_MODULES)
    else:
        if args.site.is_dir():  # installed by an earlier run on this machine
            use_site(args.site)
        if not missing or not any(m in NEEDED_MODULES for m in missing):
            log.note("every needed package importable; no wheel installed")
        else:
            log.note(f"no wheels in {args.wheels} (run bench/prepare_gpu_wheels.py on a networked machine)")
    if args.site.is_dir() and not _numpy_has_row_stack():
        # The image's numba-cuda, which NeMo's CUDA TDT loss compiles with, registers np.row_stack, which NumPy
        # 2.5 removed: every TDT loss on the GPU failed there (H200 image, 2026-12-04). An alias, in the
        # processes this check starts (the folder is on their PYTHONPATH), lets it import; a no-op elsewhere.
        (args.site / "sitecustomize.py").write_text(
            "import numpy\nif not hasattr(numpy, 'row_stack'):\n    numpy.row_stack = numpy.vstack\n")
        log.note("numpy.row_stack aliased to numpy.vstack for numba-cuda (NumPy >= 2.5)")
    log.put(missing=missing)
    log.put(versions=versions())
    hard = [m for m in missing if m in NEEDED_MODULES]
    if hard:
        log.finish(f"failed: missing {', '.join(NEEDED_MODULES[m] for m in hard)}")
    else:
        log.finish("ok" + (f" (optional missing: {', '.join(OPTIONAL_MODULES[m] for m in missing)})" if missing else ""))


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """One dict per test case: name, outcome (passed/failed/skipped), seconds, message."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                lines = (el.get("message") or el.text or "").strip().splitlines()
                message = lines[0][:200] if lines else ""
                break
        name = f"{tc.get('classname', '').rsplit('.', 1)[-1]}::{tc.get('name')}"
        cases.append({"name": name, "outcome": outcome, "seconds": float(tc.get("time") or 0), "message": message})
    return cases


def part_cuda_tests(args: argparse.Namespace, log: PartLog, deadline: float) -> None:
    xml = args.work / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rs",
           f"--junitxml={xml}", *CUDA_TESTS]
    log.note("pytest " + " ".join(CUDA_TESTS))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc = None
    cases = parse_junit(xml) if xml.is_file() else []
    log.put(cases=cases, exit_code=None if proc is None else proc.returncode)
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    summary = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    if proc is None:
        log.finish(f"cut: time limit ({summary} before it)")
    elif proc.returncode not in (0, 5) or counts["failed"]:
        log.finish(f"failed: pytest exit {proc.returncode}; {summary}")
    elif not cuda_available():
        # Here every one of them must have been collected and skipped for want of a GPU.
        ok = cases and counts["skipped"] == len(cases)
        log.finish(f"{NO_GPU} ({len(cases)} CUDA tests collected, all skipped)" if ok else f"failed: {summary} on CPU")
    else:
        log.finish(f"ok: {summary}" if counts["passed"] and not counts["skipped"] else f"failed: {summary}")
