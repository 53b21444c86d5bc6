"""Why a state dict does not fit a model, in one line: which settings and which tensors differ."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn


def config_differences(stored_yaml: str | None, model_cfg: Mapping[str, Any]) -> list[str]:
    """`model.<field>: checkpoint X, this run Y` for each model field the two configs set apart."""
    if not stored_yaml:
        return []
    try:
        stored = OmegaConf.to_container(OmegaConf.create(stored_yaml)).get("model") or {}
    except Exception:  # an unreadable stored config only costs the explanation
        return []
    ours = OmegaConf.to_container(model_cfg) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    keys = sorted(set(stored) | set(ours), key=lambda k: (k != "name", k))
    return [
        f"model.{k}: checkpoint {stored.get(k)!r}, this run {ours.get(k)!r}"
        for k in keys
        if stored.get(k) != ours.get(k)
    ]


def tensor_differences(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Counts and first examples of missing keys, unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
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
        out.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return out


def mismatch(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    stored_yaml: str | None = None,
    model_cfg: Mapping[str, Any] | None = None,
) -> str:
    settings = config_differences(stored_yaml, model_cfg) if model_cfg is not None else []
    parts = [*settings, *tensor_differences(model, state)]
    return "; ".join(parts) if parts else "the weights do not load"


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"
