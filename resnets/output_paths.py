"""Output folders checked before any work: a folder (not a file), writable, with free space.

predict.py used to classify every image and then fail at `out.mkdir` (`output_dir=/proc/nope`, a
read-only folder); export.py raised FileExistsError for an existing file. The check creates the
folder and writes a probe file there, which is what the work will do, so it holds for root, for
read-only mounts and for pseudo file systems alike; folders it created are removed if it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .config import ConfigError

MIN_FREE_BYTES = 16 * 2**20  # a CSV or one exported network fits; less and the write would fail


def check_output_dir(path: str | os.PathLike, field: str, need_bytes: int = MIN_FREE_BYTES) -> Path:
    """`path` as a usable output folder, or ConfigError naming `field`, the path and the reason."""
    path = Path(path).expanduser()
    accepted = "accepted: a writable folder with free space (or null for the default)"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field}={str(path)!r} is a file, not a folder; {accepted}")
    created = _missing_parents(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        for folder in created:  # leave nothing behind for a refused run
            with contextlib.suppress(OSError):
                folder.rmdir()
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            f"{field}={str(path)!r} cannot be written ({reason}); {accepted}"
        ) from err
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise ConfigError(
            f"{field}={str(path)!r} has {free / 2**20:.1f} MiB free, needs about "
            f"{need_bytes / 2**20:.0f} MiB; {accepted}"
        )
    return path


def _missing_parents(path: Path) -> list[Path]:
    """The folders mkdir(parents=True) would create, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing
