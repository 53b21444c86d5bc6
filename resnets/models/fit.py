"""The one strict load of a state dict: every key and shape fits, or nothing loads and the
differences come back as short phrases for a one-line message (checkpoints, pretrained weights,
resumes all report through it)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn


def tensor_differences(
    model: nn.Module, state: Mapping[str, torch.Tensor], allowed_missing: Collection[str] = ()
) -> list[str]:
    """Counts and first examples of tensors of another shape, missing and unexpected keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {_shape(state[k])} vs {_shape(own[k])}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    out = []
    if shapes:
        out.append(
            f"{len(shapes)} tensors of another shape (checkpoint vs model, e.g. {shapes[0]})"
        )
    if missing:
        out.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    return out


def load_state_strictly(
    model: nn.Module, state: Mapping[str, torch.Tensor], allowed_missing: Collection[str] = ()
) -> list[str]:
    """Load `state` when it fits (keys in `allowed_missing` may be absent); otherwise load
    nothing and return what differs."""
    problems = tensor_differences(model, state, allowed_missing)
    if not problems:
        model.load_state_dict(state, strict=False)
    return problems


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"
