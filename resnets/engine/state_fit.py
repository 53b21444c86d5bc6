"""Why a state dict does not fit a model, in one line: which settings and which tensors differ."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from ..models.fit import tensor_differences


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


def mismatch(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    stored_yaml: str | None = None,
    model_cfg: Mapping[str, Any] | None = None,
) -> str:
    settings = config_differences(stored_yaml, model_cfg) if model_cfg is not None else []
    parts = [*settings, *tensor_differences(model, state)]
    return "; ".join(parts) if parts else "the weights do not load"
