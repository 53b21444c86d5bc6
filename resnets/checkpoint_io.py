"""The one safe reader of weight files: `torch.load(weights_only=True)` with one-line errors.

A leaf module (torch, the standard library and resnets.renamed; OmegaConf when a checkpoint's
config is checked), so both the engine, which writes checkpoints, and the models, which read pretrained
and fine-tuning weights, use it without importing each other.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .messages import first_line
from .pickle_globals import refused_globals
from .renamed import upgrade_stored_config

FORMAT_VERSION = 2  # 2: position in samples, per-rank generators, run settings
REQUIRED_KEYS = ("model", "epoch", "step", "config", "format_version")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message starts with the path."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a resnets checkpoint safely; any problem becomes a CheckpointError naming the file."""
    path = Path(path)
    return checked_checkpoint(path, load_weights_file(path, map_location))


def is_checkpoint(loaded: Any) -> bool:
    """Whether a loaded file is a resnets checkpoint (rather than bare weights)."""
    return isinstance(loaded, dict) and "format_version" in loaded


def checked_checkpoint(path: Path, state: Any) -> dict[str, Any]:
    """A file's loaded contents checked as a resnets checkpoint (no second read of the file)."""
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
    # older checkpoints stored renamed model fields under their old names
    state["config"] = upgrade_stored_config(state["config"])
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
        reason = first_line(err)
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
        _refuse_code(path, err)
        raise CheckpointError(
            path, f"is truncated or corrupt ({_weights_only_reason(err)})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        _refuse_code(path, err)
        detail = str(err).split(". ")[0].splitlines()[0] if str(err) else ""
        raise CheckpointError(
            path,
            f"is truncated or corrupt ({type(err).__name__}: {detail})",
        ) from err


def _refuse_code(path: Path, err: Exception) -> None:
    """A file that names a callable torch does not admit is refused as such, whatever torch said
    (its wording changes between releases; the globals are read from the pickle's opcodes)."""
    refused = refused_globals(path)
    if refused:
        raise CheckpointError(
            path,
            f"refused: it would import and call {', '.join(refused[:3])} on loading, so it could "
            "run code (weights_only=True allows only tensors and plain containers)",
        ) from err


def _starts_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; files from before torch 1.6 are a bare pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _weights_only_reason(err: Exception) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
    return found.group(1).strip() if found else type(err).__name__
