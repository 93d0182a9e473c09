"""Download the wheels bench/gpu_check.py needs on a GPU machine that has no network, into .whl/ (git-ignored).

    python3 bench/prepare_gpu_wheels.py [--out .whl] [--max-mib 56] [--bnb-cuda 130 132]

Run it on a networked machine (any Python >= 3.11 with pip; without pip it runs pip through `uvx`). The GPU
image (see the device notes: Python 3.12, x86-64, torch, triton, ninja, nvcc, numba, lightning, pytest, ...)
lacks NeMo and what NeMo's ASR collection, bitsandbytes, eSpeak and fla import; those are listed below. Each is
fetched without its dependencies (`--no-deps`: the list is the closure minus what the image has) at the
version uv.lock pins, as a CPython 3.12 manylinux x86-64 wheel. A package published only as source
(antlr4-python3-runtime 4.9.3, pure Python) is built into a wheel here. bitsandbytes' wheel carries one
library per CUDA release (43 MB); only the CUDA 13 ones the image's torch (cu130) loads are kept, which brings
the set well under the 64 MiB a device call may carry. Prints every wheel and the total, and refuses a set
over --max-mib.

gpu_check installs them with `pip install --no-index --no-deps --target` into a private folder, offline.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the GPU image lacks, by who needs it. Found by running `gpu_check.py --dry-run` with every package that
# is neither on the image (device notes, KINDS.md) nor in this list made unimportable, and adding what failed.
WHEELS = [
    # NeMo's ASR collection as the recipe uses it (models, exp_manager, Lhotse data loading, TDT loss); Lightning
    # at the locked version too: the image's newer one declares Trainer.save_checkpoint(weights_only: bool | None)
    # and nv-one-logger's override of it then fails its signature check when NeMo is imported (H200, 2026-12-04)
    "lightning", "nemo-toolkit", "omegaconf", "antlr4-python3-runtime", "hydra-core", "lhotse", "intervaltree", "cytoolz",
    "kaldialign", "braceexpand", "webdataset", "text-unidecode", "datasets", "dill", "multiprocess",
    "nv-one-logger-core", "nv-one-logger-training-telemetry", "nv-one-logger-pytorch-lightning-integration",
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "overrides", "strenum", "toml",
    # audio I/O and features
    "soundfile", "cffi", "pycparser", "librosa", "audioread", "soxr", "decorator", "pooch", "platformdirs",
    # the recipe's own needs: AdamW8bit, eSpeak for the synthesized corpus, romanized new rows
    "bitsandbytes", "espeakng-loader", "uroman",
    # the wkv7 benchmark's comparison
    "fla-core",
]
# Not project dependencies, so not in uv.lock: the version the earlier GPU runs used.
NOT_IN_LOCK = {"fla-core": "0.6.0"}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    """name -> version from uv.lock; where the lock resolves a package per Python version, the one it resolves
    for Python 3.12 (the GPU image's)."""
    out: dict[str, str] = {}
    for pkg in tomllib.loads(lock.read_text())["package"]:
        name, version, markers = norm(pkg["name"]), pkg.get("version"), pkg.get("resolution-markers")
        if version and (not markers or any("python_full_version >= '3.12'" in m for m in markers)):
            out[name] = version
    return out


def pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    if shutil.which("uvx"):
        return ["uvx", "--from", "pip", "pip"]  # e.g. a uv-made venv, which has no pip
    sys.exit("needs pip (python3 -m pip) or uvx")


def fetch(pip: list[str], spec: str, dest: Path) -> Path:
    """One CPython 3.12 manylinux x86-64 wheel of `spec` (no dependencies); built here if only a source
    distribution exists and it builds a pure-Python wheel."""
    before = set(dest.glob("*.whl"))
    flags = ["--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
             "--abi", "abi3", "--abi", "none"]
    flags += [x for p in PLATFORMS for x in ("--platform", p)]
    done = subprocess.run([*pip, "download", "-q", *flags, "-d", str(dest), spec], capture_output=True, text=True)
    if done.returncode != 0:
        # Only a source distribution: build it here; refuse unless the result is pure Python (it must run there).
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), spec], check=True)
    new = sorted(set(dest.glob("*.whl")) - before)
    if len(new) != 1:
        sys.exit(f"{spec}: expected one wheel, got {[p.name for p in new]}")
    if done.returncode != 0 and not new[0].name.endswith("-none-any.whl"):
        sys.exit(f"{spec}: no binary wheel for CPython 3.12 manylinux x86-64, and the local build is not pure Python")
    return new[0]


def _record_hash(data: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def drop_members(wheel: Path, drop) -> list[str]:
    """Rewrite `wheel` without the members `drop(name)` selects, RECORD updated to match; returns them."""
    tmp = wheel.with_suffix(".tmp")
    dropped = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        keep = []
        for info in src.infolist():
            if info.filename != record_name and drop(info.filename):
                dropped.append(info.filename)
            elif info.filename != record_name:
                dst.writestr(info, src.read(info))
                keep.append(info.filename)
        lines = [ln for ln in src.read(record_name).decode().splitlines() if ln.split(",", 1)[0] in keep]
        dst.writestr(record_name, "\n".join([*lines, f"{record_name},,"]) + "\n")
    tmp.replace(wheel)
    return dropped


def trim_bitsandbytes(wheel: Path, cuda: list[str]) -> list[str]:
    """Keep the CPU library and the CUDA libraries of the given releases (e.g. 130 = CUDA 13.0); bitsandbytes
    loads the one matching torch.version.cuda."""
    keep = {f"libbitsandbytes_cuda{c}.so" for c in cuda}

    def drop(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return base.startswith("libbitsandbytes_") and base.endswith(".so") and "cpu" not in base and base not in keep

    return drop_members(wheel, drop)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".whl")
    ap.add_argument("--max-mib", type=float, default=56.0,
                    help="refuse a larger set (a device call carries 64 MiB with the repository, ~2 MiB)")
    ap.add_argument("--bnb-cuda", nargs="+", default=["130", "132"],
                    help="bitsandbytes CUDA libraries to keep (default 130 132: the image's torch is cu130)")
    args = ap.parse_args(argv)

    versions = locked_versions(ROOT / "uv.lock") | NOT_IN_LOCK
    missing = [n for n in WHEELS if norm(n) not in versions]
    if missing:
        sys.exit(f"not in uv.lock and no pinned version: {missing}")
    pip = pip_command()
    with tempfile.TemporaryDirectory(prefix="gpu_wheels_") as tmp:
        dest = Path(tmp)
        for name in WHEELS:
            wheel = fetch(pip, f"{name}=={versions[norm(name)]}", dest)
            if norm(name) == "bitsandbytes":
                dropped = trim_bitsandbytes(wheel, args.bnb_cuda)
                print(f"  {wheel.name}: dropped {len(dropped)} libraries for other CUDA/ROCm/XPU releases")
        wheels = sorted(dest.glob("*.whl"))
        names = [norm(w.name.split("-")[0]) for w in wheels]
        if len(set(names)) != len(names):
            sys.exit(f"two versions of one package would stop the install: {wheels}")
        total = sum(w.stat().st_size for w in wheels)
        for w in wheels:
            print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
        print(f"{total / 2**20:8.2f} MiB  total, {len(wheels)} wheels")
        if total > args.max_mib * 2**20:
            sys.exit(f"over --max-mib {args.max_mib}")
        args.out.mkdir(parents=True, exist_ok=True)
        for old in args.out.glob("*.whl"):  # one version of each: the old set goes
            old.unlink()
        for w in wheels:
            shutil.move(str(w), args.out / w.name)
    print(f"wrote {args.out}/ (git-ignored); the device run carries it with carry=['.whl']")


if __name__ == "__main__":
    main()
