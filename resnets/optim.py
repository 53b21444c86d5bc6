"""Optimizer and learning-rate schedule factories; schedules follow training progress in images
(resnets.progress), stepped once per optimizer step."""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from .config import ConfigError
from .data.plan import EpochPlan
from .progress import stretch_of, timeline_of


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


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer: its factory (param groups, optim config) -> torch optimizer, and the optim
    fields only some optimizers read, of which it reads `reads` (the fields every optimizer
    reads, lr and the decay settings, are not listed). The hparams table reports a run's
    optimizer's fields and leaves out the others'."""

    build: Callable[[list[dict], Mapping[str, Any]], torch.optim.Optimizer]
    reads: tuple[str, ...] = ()

    def __call__(self, groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
        return self.build(groups, cfg)


# optim.name -> entry. The one list of optimizers: config validation, the error messages, the
# hparams table and build_optimizer all read it.
OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry(_sgd, reads=("momentum", "nesterov")),
    "adamw": OptimizerEntry(_adamw, reads=("betas", "eps")),
    # timm.optim.Lamb and Lars (the `timm` extra)
    "lamb": OptimizerEntry(_lamb, reads=("betas", "eps")),
    "lars": OptimizerEntry(_lars, reads=("momentum", "nesterov", "trust_coeff", "eps")),
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
    """What a schedule factory needs besides the optimizer and the `sched` config. A schedule is
    a curve over `total` curve steps: `steps_per_epoch` of them an epoch (the steps per epoch
    of the run that laid it out), so epoch-valued settings are curve positions."""

    lr: float  # the base (backbone) learning rate
    total: int  # curve steps the schedule spans
    steps_per_epoch: float
    origin: float = 0.0  # the curve step where epoch 0 sits

    def to_step(self, epochs: float) -> int:
        return round(self.origin + epochs * self.steps_per_epoch)

    def warmup(self, cfg: Mapping[str, Any]) -> int:
        return min(max(self.to_step(cfg.get("warmup_epochs", 0)), 0), self.total - 1)


@dataclass(frozen=True)
class Curve:
    """A schedule: each group's learning rate at a curve position (a float number of curve
    steps), and for one-cycle each group's momentum (SGD) or beta1 (Adam-like) there."""

    rates: Callable[[float], list[float]]
    momenta: Callable[[float], list[float]] | None = None


class ProgressLR(lr_scheduler.LRScheduler):
    """The learning rate of optimizer step k is the curve's at the training progress of step k
    (resnets.progress): the rate follows the images seen, whatever cuts them into steps.
    `last_epoch` counts optimizer steps, as torch's schedulers do."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        curve: Curve,
        position: Callable[[int], float],
        progress: Callable[[int], float],
        total_steps: int,
    ) -> None:
        self.curve, self.position, self.progress = curve, position, progress
        self.total_steps = total_steps  # the steps the loop takes to its last epoch
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        at = self.position(self.last_epoch)
        if self.curve.momenta is not None:
            for group, momentum in zip(
                self.optimizer.param_groups, self.curve.momenta(at), strict=True
            ):
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                elif "momentum" in group:
                    group["momentum"] = momentum
        return self.curve.rates(at)

    def state_dict(self) -> dict[str, Any]:
        """Plain values only (checkpoints load with weights_only=True), and the progress in
        epochs at the current step."""
        skip = ("optimizer", "curve", "position", "progress")
        state = {k: v for k, v in self.__dict__.items() if k not in skip}
        state["epochs_progress"] = float(self.progress(self.last_epoch))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "epochs_progress"})


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Any],
    *,
    lr: float,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    layout: Mapping[str, Any] | None = None,
    start_step: int = 0,
) -> lr_scheduler.LRScheduler:
    """A schedule stepped once per optimizer step, as a function of training progress.

    `layout` (resnets.engine.resume: fresh_layout / resumed_layout) says how steps map to
    progress and where the curve lies; without it, a fresh run of `epochs` epochs of
    `steps_per_epoch` steps. The curve is drawn in the steps of the run that laid it out (epoch
    settings such as warm-up and milestones round to those steps); any run evaluates it at its
    own progress, so a resume with another batch size, accumulation, world size or drop_last
    continues the same curve. The scheduler is put at `start_step`.
    """
    if layout is None:
        layout = _steps_layout(int(steps_per_epoch), int(epochs))
    name = cfg["name"]
    if name not in SCHEDULERS:
        raise ConfigError(f"sched.name={name!r} is not valid; accepted: {', '.join(SCHEDULERS)}")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    curve_cfg = layout["curve"]
    per_epoch = int(curve_cfg["steps_per_epoch"])
    total = max(1, per_epoch * int(curve_cfg["epochs"]))
    plan = SchedulePlan(lr=lr, total=total, steps_per_epoch=per_epoch)
    curve = SCHEDULERS[name](optimizer, cfg, plan)
    timeline, stretch = timeline_of(layout), stretch_of(layout)

    def position(k: int) -> float:  # exact until here: whole curve steps stay whole
        return float(stretch(timeline.at(k)) * per_epoch)

    scheduler = ProgressLR(
        optimizer, curve, position, timeline.at, int(layout.get("total_steps", total))
    )
    if start_step:
        seek(scheduler, start_step)
    return scheduler


def _steps_layout(steps_per_epoch: int, epochs: int) -> dict[str, Any]:
    """The layout of a run of `epochs` epochs of `steps_per_epoch` steps, for callers that
    know no more (one image a step)."""
    plan = EpochPlan(steps_per_epoch, batch_size=1)
    return layout_for(plan, epochs)


def layout_for(plan: EpochPlan, epochs: int) -> dict[str, Any]:
    """A new run's layout: its steps from epoch 0, its curve over `epochs` epochs of its
    steps. Plain values: it is stored in checkpoints."""
    spe = plan.steps()
    return {
        "version": 2,
        "steps_per_epoch": spe,
        "total_steps": spe * epochs,
        "plan": dict(vars(plan)),
        "anchor": {"step": 0, "epoch": 0, "samples": 0, "progress": [0, 1]},
        "curve": {
            "epochs": epochs,
            "steps_per_epoch": spe,
            "to": epochs,
            "from": [0, 1],
            "curve_from": [0, 1],
        },
    }


ScheduleFactory = Callable[[torch.optim.Optimizer, Mapping[str, Any], SchedulePlan], Curve]
# A decay: (sched config, plan, warm-up steps) -> the multiplier of each group's rate at curve
# step j after the warm-up.
Decay = Callable[[Mapping[str, Any], SchedulePlan, int], Callable[[float], float]]


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
    """Each group's rate times a factor: the warm-up (linear from lr x start factor, or held
    there as in He et al. 2016), then `decay`."""

    def build(
        optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], plan: SchedulePlan
    ) -> Curve:
        warmup = plan.warmup(cfg)
        main = decay(cfg, plan, warmup)
        start = cfg.get("warmup_start_factor", 0.1)
        rise = WARMUPS[cfg.get("warmup_method", "linear")]
        base = [g["initial_lr"] for g in optimizer.param_groups]

        def rates(u: float) -> list[float]:
            factor = rise(start, u, warmup) if u < warmup else main(u - warmup)
            return [lr * factor for lr in base]  # LambdaLR's product, bit for bit

        return Curve(rates)

    return build


def _one_cycle(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], plan: SchedulePlan
) -> Curve:
    """torch's OneCycleLR (cosine annealing, momentum cycled 0.95 -> 0.85 -> 0.95) in closed
    form, the same expressions at whole curve steps, so it can be read at any position."""
    total = plan.total
    if total < 4:  # too short for two phases: hold the peak rate
        base = [g["initial_lr"] for g in optimizer.param_groups]
        return Curve(lambda u: list(base))
    # each phase needs at least one step, as OneCycleLR needs
    pct = min(max(cfg["pct_start"], 2 / total), 1 - 2 / total)
    peak, end = float(pct * total) - 1, total - 1
    # per group, so the head keeps its multiple of the backbone's rate
    peaks = [plan.lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups]
    starts = [p / cfg["div_factor"] for p in peaks]
    floors = [s / cfg["final_div_factor"] for s in starts]

    def phase(u: float) -> tuple[bool, float]:
        u = min(u, total)
        return (True, u / peak) if u <= peak else (False, (u - peak) / (end - peak))

    def rates(u: float) -> list[float]:
        rising, pct = phase(u)
        return [
            _anneal(s, p, pct) if rising else _anneal(p, f, pct)
            for s, p, f in zip(starts, peaks, floors, strict=True)
        ]

    def momenta(u: float) -> list[float]:
        rising, pct = phase(u)
        value = _anneal(0.95, 0.85, pct) if rising else _anneal(0.85, 0.95, pct)
        return [value] * len(peaks)

    return Curve(rates, momenta)


def _anneal(start: float, end: float, pct: float) -> float:
    """OneCycleLR's cosine annealing from `start` to `end` as pct goes from 0 to 1."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


# the sched fields of the warm-up, read by every schedule built with `_with_warmup`
WARMUP_FIELDS = ("warmup_epochs", "warmup_method", "warmup_start_factor")


@dataclass(frozen=True)
class ScheduleEntry:
    """A schedule: its factory (optimizer, sched config, plan) -> Curve, the sched fields of its
    own it reads (`reads`, besides the warm-up's), and the fields it never reads with the reason
    (`unread`): set to anything but 0 they are refused (resnets.validation). A schedule with
    `warmup_epochs` unread has no warm-up: the hparams table leaves the warm-up fields out."""

    curve: ScheduleFactory
    reads: tuple[str, ...] = ()
    unread: Mapping[str, str] = field(default_factory=dict)

    @property
    def warms_up(self) -> bool:
        return "warmup_epochs" not in self.unread

    def __call__(
        self, optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], plan: SchedulePlan
    ) -> Curve:
        return self.curve(optimizer, cfg, plan)


# sched.name -> entry. The one list of schedules: config validation, the error messages, the
# hparams table and build_scheduler all read it.
SCHEDULERS: dict[str, ScheduleEntry] = {
    "cosine": ScheduleEntry(_with_warmup(_cosine), reads=("min_lr",)),
    "step": ScheduleEntry(_with_warmup(_step), reads=("step_size", "gamma")),
    "multistep": ScheduleEntry(_with_warmup(_multistep), reads=("milestones", "gamma")),
    # the one place that says one-cycle has no warm-up and no floor of its own
    "onecycle": ScheduleEntry(
        _one_cycle,
        reads=("pct_start", "div_factor", "final_div_factor"),
        unread={
            "warmup_epochs": "one-cycle rises over its first sched.pct_start of the steps",
            "min_lr": "one-cycle ends at lr / (div_factor * final_div_factor)",
        },
    ),
    "constant": ScheduleEntry(_with_warmup(_constant)),
}


def seek(scheduler: lr_scheduler.LRScheduler, step: int) -> None:
    """Put a closed-form schedule at `step` (sets the optimizer's learning rates for that step)."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # the order warning is for loops, not for positioning
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
