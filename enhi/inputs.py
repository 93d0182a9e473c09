"""One-line checks of the files a user names (a model, an audio file), made before anything slow is imported or
loaded, so a typo costs a second, not NeMo's import."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from enhi.errors import UserError


def unreadable_nemo(path: Path, e: BaseException) -> UserError:
    """The one-line error for a .nemo that is not a complete tar archive."""
    return UserError(f"{path}: not a readable .nemo checkpoint ({e}); give a .nemo file saved by NeMo")


def check_model_file(path: Path) -> None:
    """One-line errors for a model path that is missing or not a .nemo, before the slow NeMo import."""
    if not path.exists():
        raise UserError(f"{path}: model not found; give the path of a .nemo file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the .nemo file itself")
    try:
        # A .nemo is a tar archive with model_config.yaml; listing the members also reads to the end of the
        # archive, so a truncated download fails here rather than halfway through restoring.
        with tarfile.open(path, "r:*") as tar:
            names = {os.path.basename(m.name) for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise unreadable_nemo(path, e) from None
    if "model_config.yaml" not in names:
        raise UserError(
            f"{path}: not a NeMo checkpoint (no model_config.yaml inside); give a .nemo file saved by NeMo"
        )


def check_audio_file(path: Path) -> None:
    """One-line errors for an audio path that is missing, unreadable or empty, before the model is loaded."""
    if not path.exists():
        raise UserError(f"{path}: audio file not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give one audio file")
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for files it cannot parse
        raise UserError(f"{path}: cannot read audio ({e}); convert it to WAV or FLAC") from None
    if info.frames == 0:
        raise UserError(f"{path}: audio file has no samples")
