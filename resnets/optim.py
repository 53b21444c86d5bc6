"""Optimizer and per-iteration learning-rate schedule factories."""

from __future__ import annotations

import math
import warnings
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
    steps_per_epoch: float,
    epochs: int,
    lr: float,
    total_steps: int | None = None,
    origin: float = 0.0,
    start_step: int = 0,
) -> lr_scheduler.LRScheduler:
    """A schedule stepped once per optimizer step, over `total_steps` steps (default
    `steps_per_epoch x epochs`); epochs in the config become step `origin + epochs x steps_per_epoch`.

    Every schedule is a closed form of the step number (a LambdaLR, or torch's OneCycleLR, which
    is one), so it can be laid out again at any step: a resumed run with other settings builds the
    schedule for its new total and starts it at `start_step`, where this run stands.
    """
    total = max(1, total_steps if total_steps is not None else round(steps_per_epoch * epochs))
    name = cfg["name"]
    if name not in SCHEDULES:
        raise ConfigError(f"sched.name={name!r} is not valid; accepted: {', '.join(SCHEDULES)}")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    if name == "onecycle" and total >= 4:  # has its own warm-up phase
        scheduler = lr_scheduler.OneCycleLR(
            optimizer,
            # per group, so the head keeps its multiple of the backbone's rate
            max_lr=[lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups],
            total_steps=total,
            # each phase needs at least one step, or OneCycleLR divides by zero
            pct_start=min(max(cfg["pct_start"], 2 / total), 1 - 2 / total),
            div_factor=cfg["div_factor"],
            final_div_factor=cfg["final_div_factor"],
        )
    else:  # (a one-cycle too short for two phases holds the peak rate)
        to_step = lambda e: round(origin + e * steps_per_epoch)  # noqa: E731
        warmup = min(max(to_step(cfg.get("warmup_epochs", 0)), 0), total - 1)
        factors = [
            _factor_fn(cfg, lr, total, warmup, steps_per_epoch, to_step)
            for group in optimizer.param_groups
        ]
        scheduler = lr_scheduler.LambdaLR(optimizer, factors)
    if start_step:
        seek(scheduler, start_step)
    return scheduler


SCHEDULES = ("cosine", "step", "multistep", "onecycle", "constant")


def _factor_fn(cfg, base_lr: float, total: int, warmup: int, steps_per_epoch: float, to_step):
    """The multiplier of `base_lr` at step k: linear warm-up to 1, then the named decay."""
    name, gamma = cfg["name"], cfg.get("gamma", 0.1)
    start_factor = cfg.get("warmup_start_factor", 0.1)
    if name == "cosine":  # a factor of each group's rate: a head keeps its multiple to the end
        floor = cfg["min_lr"] / base_lr if base_lr else 0.0
        span = total - warmup

        def main(j: int) -> float:  # stops at min_lr: a run never steps past its total
            return floor + (1 - floor) * (1 + math.cos(math.pi * min(j, span) / span)) / 2

    elif name == "step":  # periods count from the end of the warm-up
        period = max(1, round(cfg["step_size"] * steps_per_epoch))

        def main(j: int) -> float:
            return gamma ** (j // period)

    elif name == "multistep":  # milestones are epochs of the run; one inside the warm-up
        milestones = sorted(to_step(m) for m in cfg["milestones"])  # applies at its end

        def main(j: int) -> float:
            return gamma ** sum(1 for m in milestones if warmup + j >= m)

    else:

        def main(j: int) -> float:
            return 1.0

    constant_warmup = cfg.get("warmup_method", "linear") == "constant"

    def factor(k: int) -> float:
        if k < warmup:  # linear from lr x factor, or (He et al. 2016) held at lr x factor
            return (
                start_factor if constant_warmup else start_factor + (1 - start_factor) * k / warmup
            )
        return main(k - warmup)

    return factor


def seek(scheduler: lr_scheduler.LRScheduler, step: int) -> None:
    """Put a closed-form schedule at `step` (sets the optimizer's learning rates for that step)."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # the order warning is for loops, not for positioning
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
