"""Optimizer and per-iteration learning-rate schedule factories."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from .config import ConfigError


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_norm_bias: bool,
    lr: float | None = None,
    head_lr_mult: float = 1.0,
) -> list[dict]:
    """Weights that decay, and norm scales/shifts and biases (1-d tensors) that do not; with
    `head_lr_mult` != 1 the classifier's parameters get groups of their own at lr * head_lr_mult.
    Frozen parameters (requires_grad false) are in no group: no update, no weight decay."""
    head: set[int] = set()
    if head_lr_mult != 1.0:
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        if classifier is None:
            raise ConfigError(
                f"optim.head_lr_mult={head_lr_mult!r} needs a network with a classifier; "
                "accepted here: 1.0"
            )
        head = {id(p) for p in classifier.parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = _decay_groups(body, weight_decay, no_decay_norm_bias)
    if head:
        in_head = [p for p in model.parameters() if p.requires_grad and id(p) in head]
        groups += [
            {**g, "name": "head", "lr_mult": head_lr_mult, "lr": lr * head_lr_mult}
            for g in _decay_groups(in_head, weight_decay, no_decay_norm_bias)
            if g["params"]
        ]
    return groups


def _decay_groups(params: list, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    if not no_decay_norm_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """What the trainer logs: `lr` (the first group's) and `lr_head` when the head has its own."""
    rates = {"lr": optimizer.param_groups[0]["lr"]}
    for group in optimizer.param_groups:
        if group.get("name") == "head":
            rates["lr_head"] = group["lr"]
            break
    return rates


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups(
        model,
        float(cfg["weight_decay"]),
        bool(cfg["no_decay_norm_bias"]),
        lr=float(cfg["lr"]),
        head_lr_mult=float(cfg.get("head_lr_mult", 1.0)),
    )
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
            # per group, so the head keeps its multiple of the backbone's rate
            max_lr=[lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups],
            total_steps=total,
            # each phase needs at least one step, or OneCycleLR divides by zero
            pct_start=min(max(cfg["pct_start"], 2 / total), 1 - 2 / total),
            div_factor=cfg["div_factor"],
            final_div_factor=cfg["final_div_factor"],
        )
    warmup = min(round(cfg["warmup_epochs"] * steps_per_epoch), total - 1)
    to_steps = lambda e: max(1, round(e * steps_per_epoch) - warmup)  # noqa: E731
    if name == "cosine" and cfg["min_lr"] > 0 and _has_lr_multiples(optimizer):
        # CosineAnnealingLR's one eta_min would shrink the head's ratio toward the end:
        # the same curve as a factor of each group's rate keeps it
        floor, steps = cfg["min_lr"] / lr, total - warmup
        main = lr_scheduler.LambdaLR(
            optimizer,
            lambda s: floor + (1 - floor) * (1 + math.cos(math.pi * min(s, steps) / steps)) / 2,
        )
    elif name == "cosine":
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


def _has_lr_multiples(optimizer: torch.optim.Optimizer) -> bool:
    return any(g.get("lr_mult", 1.0) != 1.0 for g in optimizer.param_groups)
