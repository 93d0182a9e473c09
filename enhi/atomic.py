"""Files and folders that appear whole or not at all: write under a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from enhi.errors import UserError


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; on success it replaces `dest`, on any error it is removed.

    Refuses an existing `dest` unless `force`, before any work is done.
    """
    dest = Path(dest)
    if dest.exists() and not force:
        raise UserError(f"{dest}: output folder exists; pass --force to replace it or choose another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest.name), dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _usual_mode(tmp, folder=True)
    # Swap in two renames so a crash leaves either the old folder or the new one, never a mix.
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file beside `dest` for writing; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dest.name), dir=dest.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        _usual_mode(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest` for a writer that takes a path (e.g. `model.save_to`).

    The temporary keeps `dest`'s extension (writers may check it) unless `suffix` is given.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dest.name), suffix=dest.suffix if suffix is None else suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):  # a writer may have replaced it; it then has its own writer's mode
            _usual_mode(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_temporaries(folder: str | os.PathLike, suffix: str) -> None:
    """Delete what `atomic_path(..., suffix=suffix)` writers killed mid-write left in `folder` (a SIGKILL runs no
    cleanup). Only for folders with one writer at a time: a live writer's temporary matches too."""
    for stale in Path(folder).glob(_tmp_prefix("*") + "*" + suffix):
        stale.unlink(missing_ok=True)


def _usual_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a temporary the mode a plain `open` or `mkdir` would have (mkstemp/mkdtemp make it private to the
    owner, so a model written for a server or a colleague could not be read by them)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def _tmp_prefix(name: str) -> str:
    return f".{name}.tmp-"
