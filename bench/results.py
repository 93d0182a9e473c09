"""Shared by the benchmarks: write one marked section of bench/RESULTS.md, leaving the others as they are."""

from __future__ import annotations

import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from demo.common import cpu_name

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """The GPU's name when there is one, else the CPU, with torch's version."""
    import torch

    if torch.cuda.is_available():
        dev = f"{torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda})"
    else:
        dev = f"CPU {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}"
    return dev


def portable_arg(arg: str) -> str:
    """A command-line argument as a record shows it: paths inside the repository relative to it, and the device
    machine's output folder as `$OUT` (the shell expanded it), so no machine's own folders enter the records."""
    from enhi.portable import relative_text

    out = os.environ.get("OUT", "").rstrip("/")
    if out:
        arg = arg.replace(out + "/", "$OUT/")
    return relative_text(arg)


def header(title: str, command: str | None = None) -> list[str]:
    cmd = command or " ".join(shlex.quote(portable_arg(a)) for a in [Path(sys.executable).name, *sys.argv])
    return [
        f"## {title}",
        "",
        f"- machine: {machine()}",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- command (repository root): `{cmd}`",
        "",
    ]


def write_section(key: str, section: str, path: Path = RESULTS) -> None:
    """Replace the text between `<!-- key:start -->` and `<!-- key:end -->` (or append it)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    from enhi.atomic import atomic_file

    with atomic_file(path, "w", encoding="utf-8") as f:  # a killed benchmark leaves the old file whole
        f.write(text)
