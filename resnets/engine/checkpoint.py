"""Atomic checkpoint files that load with `weights_only=True`, and clear errors for bad ones."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

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
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
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
    """Half-written checkpoints left by a process killed mid-save (kill -9, power loss)."""
    stale = sorted(Path(folder).glob(f".*.pt{TMP_MARK}*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


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
    _check_contents(path, state)
    return state


def _check_contents(path: Path, state: dict[str, Any]) -> None:
    """The parts every reader relies on: a state dict of tensors and a YAML config with a model."""
    model = state["model"]
    if (
        not isinstance(model, dict)
        or not model
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    ):
        found = f"an empty {type(model).__name__}" if not model else type(model).__name__
        raise CheckpointError(
            path, f"'model' is not a state dict of tensors (found {found}); the file is damaged"
        )
    from omegaconf import OmegaConf  # the stored config is YAML written by OmegaConf

    text = state["config"]
    try:
        config = OmegaConf.create(text) if isinstance(text, str) else None
    except Exception as err:  # OmegaConf raises yaml's and its own errors for malformed text
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(path, f"its stored config is not valid YAML ({reason})") from err
    name = OmegaConf.select(config, "model.name") if OmegaConf.is_dict(config) else None
    if not name or OmegaConf.select(config, "data.name") is None:
        raise CheckpointError(
            path,
            "its stored config has no model.name and data.name (found "
            f"{str(text)[:60]!r}); the file is damaged",
        )


def load_weights_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` with its failures turned into one-line CheckpointErrors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "is empty (0 bytes)")
    if not _starts_like_torch_file(path):
        raise CheckpointError(path, "is not a PyTorch file (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:  # the file asks to import and call something: never allowed
            raise CheckpointError(
                path,
                f"refused: it would import and call {found.group(1)} on loading, so it could "
                "run code (weights_only=True allows only tensors and plain containers)",
            ) from err
        raise CheckpointError(
            path, f"is truncated or corrupt ({_weights_only_reason(err)})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        detail = str(err).split(". ")[0].splitlines()[0] if str(err) else ""
        raise CheckpointError(
            path,
            f"is truncated or corrupt ({type(err).__name__}: {detail})",
        ) from err


def _starts_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; files from before torch 1.6 are a bare pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _weights_only_reason(err: Exception) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
    return found.group(1).strip() if found else type(err).__name__


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
