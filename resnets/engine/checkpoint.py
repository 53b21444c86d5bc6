"""Atomic checkpoint files that load with `weights_only=True`, and clear errors for bad ones."""

from __future__ import annotations

import os
import pickle
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "epoch", "step", "config", "format_version")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message starts with the path."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A crash or a full disk leaves the previous file untouched: the rename is the only step
    that replaces it, and it happens after the new bytes are safely on disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            path, f"could not be written ({err}); the previous file is intact"
        ) from err
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a resnets checkpoint safely; any problem becomes a CheckpointError naming the file."""
    path = Path(path)
    state = load_weights_file(path, map_location)
    if not isinstance(state, dict) or not all(k in state for k in REQUIRED_KEYS):
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            path,
            f"is not a resnets checkpoint (needs keys {', '.join(REQUIRED_KEYS)}; found {keys})",
        )
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"format_version {state['format_version']} is newer than this code ({FORMAT_VERSION})",
        )
    return state


def load_weights_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` with its failures turned into one-line CheckpointErrors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling failed"
        raise CheckpointError(
            path,
            f"refused: it is not plain tensors and containers, and loading it could run code ({first})",
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        detail = str(err).split(". ")[0].splitlines()[0] if str(err) else ""
        raise CheckpointError(
            path,
            f"is truncated or corrupt ({type(err).__name__}: {detail})",
        ) from err


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
        torch.cuda.set_rng_state_all(list(rng["cuda"]))
