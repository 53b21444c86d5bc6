"""Optimizer and per-iteration learning-rate schedule factories."""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


def _sgd(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=bool(cfg["nesterov"])
    )


def _adamw(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])


TIMM_EXTRA = "pip install 'resnets[timm]'"
FROM_TIMM = {"lamb": "Lamb", "lars": "Lars"}  # optim.name -> class in timm.optim


class MissingExtraError(ConfigError):
    """An optional dependency the chosen setting needs is not installed (exit status 2)."""


def check_installed(name: str) -> None:
    """Refuse an optimizer whose optional dependency is missing, before any work."""
    if name in FROM_TIMM and importlib.util.find_spec("timm") is None:
        raise MissingExtraError(
            f"optim.name={name!r} needs timm, which is not installed; run: {TIMM_EXTRA}"
        )


def _timm_optim(name: str) -> type:
    """timm's maintained implementation (timm.optim), installed with the `timm` extra."""
    check_installed(name)
    import timm.optim

    return getattr(timm.optim, FROM_TIMM[name])


def _lamb(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    # You et al. 2019 as timm implements it (ResNet strikes back trained with it): Adam moments,
    # the update scaled per tensor by ||w|| / ||update||; timm's default clips the global gradient
    # norm at 1.0 inside the step
    return _timm_optim("lamb")(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])


def _lars(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    # You et al. 2017: SGD with momentum, the step scaled per tensor by trust_coeff x ||w|| / ||g||
    return _timm_optim("lars")(
        groups,
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        nesterov=bool(cfg["nesterov"]),
        trust_coeff=cfg.get("trust_coeff", 0.001),
        eps=cfg["eps"],
    )


# optim.name -> factory(param groups, optim config). The one list of optimizers: config
# validation, the error messages and build_optimizer all read it.
OPTIMIZERS: dict[str, Callable[[list[dict], Mapping[str, Any]], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
    "lamb": _lamb,  # timm.optim.Lamb (the `timm` extra)
    "lars": _lars,  # timm.optim.Lars (the `timm` extra)
}


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={name!r} is not valid; accepted: {', '.join(OPTIMIZERS)}")
    groups = param_groups(
        model,
        float(cfg["weight_decay"]),
        bool(cfg["no_decay_norm_bias"]),
        lr=float(cfg["lr"]),
        head_lr_mult=float(cfg.get("head_lr_mult", 1.0)),
    )
    return OPTIMIZERS[name](groups, cfg)


@dataclass(frozen=True)
class SchedulePlan:
    """What a schedule factory needs besides the optimizer and the `sched` config."""

    lr: float  # the base (backbone) learning rate
    total: int  # optimizer steps the schedule spans
    steps_per_epoch: float
    origin: float  # the step where epoch 0 of the config's epochs sits

    def to_step(self, epochs: float) -> int:
        return round(self.origin + epochs * self.steps_per_epoch)

    def warmup(self, cfg: Mapping[str, Any]) -> int:
        return min(max(self.to_step(cfg.get("warmup_epochs", 0)), 0), self.total - 1)


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
    if name not in SCHEDULERS:
        raise ConfigError(f"sched.name={name!r} is not valid; accepted: {', '.join(SCHEDULERS)}")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    plan = SchedulePlan(lr=lr, total=total, steps_per_epoch=steps_per_epoch, origin=origin)
    scheduler = SCHEDULERS[name](optimizer, cfg, plan)
    if start_step:
        seek(scheduler, start_step)
    return scheduler


ScheduleFactory = Callable[
    [torch.optim.Optimizer, Mapping[str, Any], SchedulePlan], lr_scheduler.LRScheduler
]
# A decay: (sched config, plan, warm-up steps) -> the multiplier of each group's rate at step j
# after the warm-up.
Decay = Callable[[Mapping[str, Any], SchedulePlan, int], Callable[[int], float]]


def _cosine(cfg: Mapping[str, Any], plan: SchedulePlan, warmup: int) -> Callable[[int], float]:
    # a factor of each group's rate: a head keeps its multiple to the end
    floor = cfg["min_lr"] / plan.lr if plan.lr else 0.0
    span = plan.total - warmup

    def main(j: int) -> float:  # stops at min_lr: a run never steps past its total
        return floor + (1 - floor) * (1 + math.cos(math.pi * min(j, span) / span)) / 2

    return main


def _step(cfg: Mapping[str, Any], plan: SchedulePlan, warmup: int) -> Callable[[int], float]:
    # periods count from the end of the warm-up
    gamma, period = cfg.get("gamma", 0.1), max(1, round(cfg["step_size"] * plan.steps_per_epoch))
    return lambda j: gamma ** (j // period)


def _multistep(cfg: Mapping[str, Any], plan: SchedulePlan, warmup: int) -> Callable[[int], float]:
    # milestones are epochs of the run; one inside the warm-up applies at its end
    gamma, milestones = cfg.get("gamma", 0.1), sorted(plan.to_step(m) for m in cfg["milestones"])
    return lambda j: gamma ** sum(1 for m in milestones if warmup + j >= m)


def _constant(cfg: Mapping[str, Any], plan: SchedulePlan, warmup: int) -> Callable[[int], float]:
    return lambda j: 1.0


# sched.warmup_method -> the factor at warm-up step k of `steps`, starting from `start` (the
# one list of warm-ups: validation reads its keys)
WARMUPS: dict[str, Callable[[float, int, int], float]] = {
    "linear": lambda start, k, steps: start + (1 - start) * k / steps,  # rise to the full rate
    "constant": lambda start, k, steps: start,  # held (He et al. 2016)
}


def _with_warmup(decay: Decay) -> ScheduleFactory:
    """A LambdaLR: the warm-up (linear from lr x start factor, or held there as in He et al.
    2016), then `decay`."""

    def build(
        optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], plan: SchedulePlan
    ) -> lr_scheduler.LRScheduler:
        warmup = plan.warmup(cfg)
        main = decay(cfg, plan, warmup)
        start = cfg.get("warmup_start_factor", 0.1)
        rise = WARMUPS[cfg.get("warmup_method", "linear")]

        def factor(k: int) -> float:
            return rise(start, k, warmup) if k < warmup else main(k - warmup)

        return lr_scheduler.LambdaLR(optimizer, [factor] * len(optimizer.param_groups))

    return build


def _one_cycle(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], plan: SchedulePlan
) -> lr_scheduler.LRScheduler:
    total = plan.total
    if total < 4:  # too short for two phases: hold the peak rate (and any warm-up)
        return _with_warmup(_constant)(optimizer, cfg, plan)
    return lr_scheduler.OneCycleLR(  # has its own warm-up phase
        optimizer,
        # per group, so the head keeps its multiple of the backbone's rate
        max_lr=[plan.lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups],
        total_steps=total,
        # each phase needs at least one step, or OneCycleLR divides by zero
        pct_start=min(max(cfg["pct_start"], 2 / total), 1 - 2 / total),
        div_factor=cfg["div_factor"],
        final_div_factor=cfg["final_div_factor"],
    )


# sched.name -> factory(optimizer, sched config, plan). The one list of schedules: config
# validation, the error messages and build_scheduler all read it.
SCHEDULERS: dict[str, ScheduleFactory] = {
    "cosine": _with_warmup(_cosine),
    "step": _with_warmup(_step),
    "multistep": _with_warmup(_multistep),
    "onecycle": _one_cycle,
    "constant": _with_warmup(_constant),
}


def seek(scheduler: lr_scheduler.LRScheduler, step: int) -> None:
    """Put a closed-form schedule at `step` (sets the optimizer's learning rates for that step)."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # the order warning is for loops, not for positioning
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
