"""Optimizer and per-iteration learning-rate schedule factories."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from .config import ConfigError


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Two groups: weights that decay, and norm scales/shifts and biases (1-d tensors) that do not."""
    if not no_decay_norm_bias:
        return [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups(model, float(cfg["weight_decay"]), bool(cfg["no_decay_norm_bias"]))
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=bool(cfg["nesterov"])
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])
    raise ConfigError(f"optim.name={name!r} is not valid; accepted: sgd, adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Any],
    *,
    steps_per_epoch: int,
    epochs: int,
    lr: float,
) -> lr_scheduler.LRScheduler:
    """A schedule stepped once per optimizer step; epochs in the config are converted to steps."""
    total = max(1, steps_per_epoch * epochs)
    name = cfg["name"]
    if name == "onecycle":  # has its own warm-up phase
        if total < 4:  # too short for two phases: hold the peak rate
            return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=total,
            # each phase needs at least one step, or OneCycleLR divides by zero
            pct_start=min(max(cfg["pct_start"], 2 / total), 1 - 2 / total),
            div_factor=cfg["div_factor"],
            final_div_factor=cfg["final_div_factor"],
        )
    warmup = min(round(cfg["warmup_epochs"] * steps_per_epoch), total - 1)
    to_steps = lambda e: max(1, round(e * steps_per_epoch) - warmup)  # noqa: E731
    if name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total - warmup, eta_min=cfg["min_lr"]
        )
    elif name == "step":
        main = lr_scheduler.StepLR(
            optimizer, step_size=to_steps(cfg["step_size"]), gamma=cfg["gamma"]
        )
    elif name == "multistep":
        milestones = [to_steps(m) for m in cfg["milestones"]]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg["gamma"])
    elif name == "constant":
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ConfigError(
            f"sched.name={name!r} is not valid; accepted: cosine, step, multistep, onecycle, constant"
        )
    if warmup <= 0:
        return main
    factor = cfg["warmup_start_factor"]
    if cfg.get("warmup_method", "linear") == "constant":  # He et al. 2016: hold lr x factor
        start = lr_scheduler.ConstantLR(optimizer, factor=factor, total_iters=warmup)
    else:
        start = lr_scheduler.LinearLR(
            optimizer, start_factor=factor, end_factor=1.0, total_iters=warmup
        )
    return lr_scheduler.SequentialLR(optimizer, [start, main], milestones=[warmup])
