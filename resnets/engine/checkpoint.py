"""Atomic checkpoint files that load with `weights_only=True`, and clear errors for bad ones."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint_io import (  # noqa: F401
    FORMAT_VERSION,
    REQUIRED_KEYS,
    CheckpointError,
    load_checkpoint,
    load_weights_file,
)

# the reader lives in a leaf module that resnets.models uses too; these names stay public here
from ..messages import first_line
from .run_lock import pid_alive

log = logging.getLogger(__name__)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A crash or a full disk leaves the previous file untouched: the rename is the only step
    that replaces it, and it happens after the new bytes are safely on disk. The temporary file
    never outlives this call (kill -9 aside: `remove_stale_temporaries` takes those).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):  # a read-only folder must not hide the cause
                tmp.unlink(missing_ok=True)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        reason = first_line(err)
        raise CheckpointError(
            path,
            f"could not be written ({reason}); {_free_space(path.parent)}; "
            "the previous file is intact",
        ) from err
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


TMP_MARK = ".tmp-"


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"free space in {folder} unknown"
    return f"{free / 2**20:.1f} MiB free in {folder}"


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Half-written checkpoints left by a process killed mid-save (kill -9, power loss); a
    temporary whose writer (the pid in its name) still runs on this host is a live save: kept."""
    found = sorted(Path(folder).glob(f".*.pt{TMP_MARK}*"))
    stale = [p for p in found if not _writer_alive(p)]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _writer_alive(tmp: Path) -> bool:
    pid = tmp.name.rpartition(TMP_MARK)[2]
    return pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))


def set_aside_previous(folder: str | os.PathLike) -> tuple[Path, list[str]] | None:
    """Move checkpoints a fresh run did not write into `previous-<time>/`, so nothing overwrites
    them; returns the folder and the names moved, or None when there was nothing."""
    folder = Path(folder)
    found = sorted(p for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = folder / f"previous-{stamp}", 1
    while target.exists():
        n += 1
        target = folder / f"previous-{stamp}-{n}"
    target.mkdir()
    for p in found:
        os.replace(p, target / p.name)
    return target, [p.name for p in found]


def move_aside(path: str | os.PathLike) -> Path:
    """Rename a bad checkpoint out of the way so no later save can overwrite it."""
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def capture_rng() -> dict[str, torch.Tensor]:
    """Every RNG the training loop touches, as tensors (weights_only=True can load them)."""
    version, mt_state, gauss = random.getstate()
    _kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    rng = {
        "python_version": torch.tensor(version),
        "python_state": torch.tensor(mt_state, dtype=torch.int64),
        "python_gauss": torch.tensor(float("nan") if gauss is None else gauss, dtype=torch.float64),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": torch.tensor(np_pos),
        "numpy_gauss": torch.tensor([np_has_gauss, np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return rng


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    gauss = float(rng["python_gauss"])
    random.setstate(
        (
            int(rng["python_version"]),
            tuple(int(v) for v in rng["python_state"].tolist()),
            None if np.isnan(gauss) else gauss,
        )
    )
    has_gauss, np_gauss = rng["numpy_gauss"].tolist()
    np.random.set_state(
        (
            "MT19937",
            rng["numpy_keys"].numpy().astype(np.uint32),
            int(rng["numpy_pos"]),
            int(has_gauss),
            np_gauss,
        )
    )
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        restore_cuda_rng(rng["cuda"])


def restore_cuda_rng(states: torch.Tensor) -> int:
    """Restore one saved state per visible CUDA device; returns how many were restored.

    A checkpoint of an 8-GPU job resumed on one GPU holds 8 states: `set_rng_state_all` would
    raise IndexError. The first states are restored, the rest said out loud and dropped (those
    devices are not here to draw from them)."""
    visible = torch.cuda.device_count()
    restored = min(len(states), visible)
    for index in range(restored):
        torch.cuda.set_rng_state(states[index], index)
    if len(states) > visible:
        log.warning(
            "checkpoint holds CUDA RNG states for %d devices, %d visible: restored devices "
            "0-%d; the others' states are not used",
            len(states),
            visible,
            restored - 1,
        )
    return restored
