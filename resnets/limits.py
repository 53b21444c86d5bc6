"""The range of every numeric config field, and the values that make training meaningless.

`limit_violation(cfg)` runs first in `validation.validate`, which raises its message as a ConfigError
(this module imports nothing of the package, so no cycle): NaN and infinity fail every range (they pass
`value <= 0` tests), upper bounds stop values no machine can serve (`data.image_size=100000` is a
3.8 TB batch), schedule fields are bounded so every rate stays within [0, peak] over the whole run,
and settings that train on nothing (blank crops, one class, one image an epoch) are refused with
the reason. One line naming the field, the value and the accepted range.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

# numpy's seed is a uint32; torch takes more but the run must be reproducible with both
SEED_MAX = 2**32 - 1
REPEATS_MAX = 16  # copies of an image an epoch (DeiT uses 3): more and an epoch sees a handful

# field -> (low, high, low included, high included); None values (optional fields) pass
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    # model
    "model.groups": (1, 1024, True, True),
    "model.width_per_group": (1, 4096, True, True),
    "model.widen_factor": (0, 64, False, True),
    "model.base_channels": (1, 4096, True, True),
    "model.drop_path_rate": (0, 1, True, False),
    "model.drop_rate": (0, 1, True, False),
    "model.inner_dropout": (0, 1, True, False),
    "model.in_chans": (1, 64, True, True),
    "model.radix": (1, 64, True, True),
    # data
    "data.image_size": (8, 4096, True, True),
    "data.val_resize": (8, 4096, True, True),
    "data.val_crop": (8, 4096, True, True),
    "data.num_classes": (2, 100_000, True, True),  # one class: always right, nothing learnt
    "data.val_fraction": (0, 1, False, False),
    "data.prefetch_factor": (1, 64, True, True),
    "data.fake_size": (1, 10_000_000, True, True),
    "data.max_bad_images": (0, 1, True, True),
    "data.augment.crop_padding": (0, 2048, True, True),
    "data.augment.cutout": (0, 4096, True, True),
    "data.augment.random_erasing": (0, 1, True, False),
    # optim
    "optim.lr": (0, 1000, False, True),  # linear scaling at a 64k batch: 25.6
    "optim.momentum": (0, 1, True, False),
    "optim.weight_decay": (0, 1, True, True),
    "optim.eps": (0, 1, False, True),
    "optim.head_lr_mult": (0, 1000, False, True),
    "optim.base_batch_size": (1, 10_000_000, True, True),
    # sched: factors of the peak rate stay in [0, 1]; periods are positive
    "sched.warmup_epochs": (0, 100_000, True, True),
    "sched.warmup_start_factor": (0, 1, True, True),
    "sched.min_lr": (0, 10, True, True),
    "sched.step_size": (0, 100_000, False, True),
    "sched.gamma": (0, 1, False, True),
    "sched.pct_start": (0, 1, False, False),
    "sched.div_factor": (1, 1e6, True, True),
    "sched.final_div_factor": (1, 1e12, True, True),
    # trainer
    "trainer.epochs": (1, 100_000, True, True),
    "trainer.max_steps": (1, 10**12, True, True),
    "trainer.batch_size": (1, 1_000_000, True, True),
    "trainer.eval_batch_size": (1, 1_000_000, True, True),
    "trainer.workers": (0, 256, True, True),
    "trainer.accumulate_grad_batches": (1, 65_536, True, True),
    "trainer.grad_clip": (0, 1e6, False, True),
    "trainer.eval_every": (1, 100_000, True, True),
    "trainer.log_every": (1, 10**12, True, True),
    "trainer.label_smoothing": (0, 1, True, False),
    "trainer.mixup_alpha": (0, 100, True, True),
    "trainer.cutmix_alpha": (0, 100, True, True),
    "trainer.ema_decay": (0, 1, False, False),
    "trainer.ema_every": (1, 1_000_000, True, True),
    "trainer.progress_every": (0, 10**12, True, True),
    "trainer.save_every": (1, 100_000, True, True),
    # run
    "seed": (0, SEED_MAX, True, True),
    "expected.top1": (0, 100, True, True),
    "expected.tolerance": (0, 100, True, True),
}
# list fields: each element's range
ELEMENT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "sched.milestones": (0, 100_000, False, True),
    "data.mean": (-10, 10, True, True),
    "data.std": (0, 10, False, True),
    "data.augment.random_resized_crop_scale": (0, 1, False, True),
    "optim.betas": (0, 1, True, False),
}


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _kind(bounds: tuple[float, float, bool, bool]) -> str:
    low, _, low_in, _ = bounds
    if low > 0 or (low == 0 and not low_in):
        return "a positive number"
    return "0 or a positive number" if low == 0 else "a finite number"


def in_range(value: Any, bounds: tuple[float, float, bool, bool]) -> bool:
    """A finite number (not a bool) inside `bounds`; NaN and infinity never are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not math.isfinite(value):
        return False
    low, high, low_in, high_in = bounds
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return above and below


def _select(cfg: DictConfig, dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return False, None
        node = node[part]
    return True, node


def limit_violation(cfg: DictConfig) -> str | None:
    """The first field out of its range, or setting that makes training meaningless; None if none."""
    for dotted, bounds in RANGES.items():
        found, value = _select(cfg, dotted)
        if found and value is not None and not in_range(value, bounds):
            return (
                f"{dotted}={value!r} is not valid; accepted: {_kind(bounds)} in "
                f"{_interval(*bounds)}" + (" (or null)" if _optional(dotted) else "")
            )
    for dotted, bounds in ELEMENT_RANGES.items():
        found, values = _select(cfg, dotted)
        if found and values is not None and not all(in_range(v, bounds) for v in values):
            return (
                f"{dotted}={list(values)!r} is not valid; accepted: finite numbers in "
                f"{_interval(*bounds)}"
            )
    return _meaningless(cfg)


_OPTIONAL = {
    "model.",
    "data.val_resize",
    "data.val_crop",
    "data.num_classes",
    "optim.base_batch_size",
    "trainer.max_steps",
    "trainer.eval_batch_size",
    "trainer.grad_clip",
    "trainer.ema_decay",
    "expected.top1",
}


def _optional(dotted: str) -> bool:
    return any(dotted == o or (o.endswith(".") and dotted.startswith(o)) for o in _OPTIONAL)


def _meaningless(cfg: DictConfig) -> str | None:
    """Values inside their ranges that still train on nothing or make the rate leave [0, peak]."""
    d, s, o = cfg.data, cfg.sched, cfg.optim
    size, aug = d.image_size, d.augment
    if 2 * aug.crop_padding > size:
        return (
            f"data.augment.crop_padding={aug.crop_padding} is not valid with data.image_size="
            f"{size}: a crop could be mostly padding (blank); accepted: 0 to {size // 2}"
        )
    if aug.cutout >= size:
        return (
            f"data.augment.cutout={aug.cutout} is not valid with data.image_size={size}: the "
            f"square could blank the whole image; accepted: 0 (off) to {size - 1}"
        )
    if d.repeated_aug > REPEATS_MAX:  # its lower end: data/repeated.py, which knows the rule
        return (
            f"data.repeated_aug={d.repeated_aug} is not valid: each epoch would hold 1/"
            f"{d.repeated_aug} of the images; accepted: 0 or 1 (off) to {REPEATS_MAX}"
        )
    scale = list(aug.random_resized_crop_scale)
    if len(scale) != 2 or scale[0] > scale[1]:
        return (
            f"data.augment.random_resized_crop_scale={scale!r} is not valid; accepted: "
            "[low, high] with 0 < low <= high <= 1"
        )
    if s.min_lr > o.lr:
        return (
            f"sched.min_lr={s.min_lr!r} is not valid with optim.lr={o.lr!r}: the rate would rise "
            f"to it; accepted: 0 to {o.lr!r}"
        )
    if list(s.milestones) != sorted(s.milestones):
        return (
            f"sched.milestones={list(s.milestones)!r} is not valid; accepted: epochs in "
            "increasing order"
        )
    if o.lr * o.head_lr_mult > RANGES["optim.lr"][1]:
        return (
            f"optim.head_lr_mult={o.head_lr_mult!r} is not valid with optim.lr={o.lr!r}: the "
            f"head's rate {o.lr * o.head_lr_mult:g} is above {RANGES['optim.lr'][1]:g}"
        )
    return None
