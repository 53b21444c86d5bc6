"""Config values the schema's types cannot check, refused before any data or model is touched.

`validate(cfg)` names the field, the bad value and the accepted values (a ConfigError, exit status
2). A field that names a factory accepts the keys of that factory's table (`choices`), so this
module sits above the factories (optim, runtime, data, losses), and resnets.config, the schema
they all import, imports none of them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from .config import ConfigError, check_renamed
from .data import LOADERS, dataset_names
from .data.datasets import SPLITS
from .data.progressive import check as check_progressive
from .engine.losses import LOSSES
from .limits import limit_violation
from .optim import OPTIMIZERS, SCHEDULERS, WARMUPS, check_installed
from .runtime import DEVICE_DEFAULTS, PRECISIONS

# Fields with a fixed set of values that no factory table owns; the rest come from the tables of
# the code acting on them (see `choices`).
CHOICES: dict[str, tuple[str, ...]] = {
    "trainer.dist_backend": ("auto", "nccl", "gloo"),
    "trainer.compile_mode": ("default", "reduce-overhead", "max-autotune"),
}


def choices() -> dict[str, tuple[str, ...]]:
    """Every field with a fixed set of values -> the accepted values, in message order.

    A field that names a factory reads the keys of that factory's table (optimizers and schedules
    in optim.py, precisions and devices in runtime.py, datasets and loaders in the data package),
    so adding one is one edit there.
    """
    return {
        "trainer.precision": ("auto", *PRECISIONS),
        "trainer.device": ("auto", *DEVICE_DEFAULTS),
        **CHOICES,
        "optim.name": tuple(OPTIMIZERS),
        "sched.name": tuple(SCHEDULERS),
        "sched.warmup_method": tuple(WARMUPS),
        "trainer.loss": tuple(LOSSES),
        "data.name": dataset_names(),
        "data.loader": ("auto", *LOADERS),
        "data.split": SPLITS,
    }


POSITIVE: tuple[str, ...] = (
    "trainer.epochs",
    "trainer.batch_size",
    "trainer.accumulate_grad_batches",
    "trainer.eval_every",
    "trainer.log_every",
    "trainer.save_every",
    "trainer.ema_every",
    "optim.lr",
    "optim.head_lr_mult",
    "optim.eps",
    "data.image_size",
    "data.fake_size",
    "data.prefetch_factor",
)
PROBABILITIES: tuple[str, ...] = (
    "trainer.label_smoothing",
    "data.augment.random_erasing",
    "optim.momentum",
)
NON_NEGATIVE: tuple[str, ...] = (
    "trainer.workers",
    "data.augment.crop_padding",
    "data.augment.cutout",
    "optim.weight_decay",
    "sched.warmup_epochs",
    "sched.min_lr",
)
POSITIVE_OR_NULL: tuple[str, ...] = (
    "trainer.eval_batch_size",
    "trainer.global_batch_size",
    "data.num_classes",
)


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Check values that the schema's types cannot, before any data or model is touched."""
    check_renamed(cfg.model)
    out_of_range = limit_violation(cfg)  # NaN, infinity, bounds, meaningless values (limits.py)
    if out_of_range:
        raise ConfigError(out_of_range)
    for dotted, accepted in choices().items():
        value = str(_get(cfg, dotted))
        if value not in accepted:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: {', '.join(accepted)}")
    check_installed(cfg.optim.name)
    check_progressive(cfg.data)
    _validate_signs(cfg)
    _validate_ranges(cfg)
    _validate_expected(cfg.get("expected"))
    _validate_trainer(cfg)


def _validate_signs(cfg: DictConfig) -> None:
    """The fields of each class (positive, probability, non-negative, positive or null)."""
    for dotted in POSITIVE:
        value = _get(cfg, dotted)
        if value <= 0:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: a positive number")
    for dotted in PROBABILITIES:
        value = _get(cfg, dotted)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: a number in [0, 1)")
    for dotted in NON_NEGATIVE:
        value = _get(cfg, dotted)
        if value < 0:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: 0 or a positive number")
    for dotted in POSITIVE_OR_NULL:
        value = _get(cfg, dotted)
        if value is not None and value <= 0:
            raise ConfigError(
                f"{dotted}={value!r} is not valid; accepted: null or a positive integer"
            )


def _validate_expected(expected: DictConfig | None) -> None:
    """A recipe's published figure: a percentage, of raw or EMA weights, with a tolerance."""
    if expected is None or expected.top1 is None:
        return
    if not 0.0 <= expected.top1 <= 100.0:
        raise ConfigError(
            f"expected.top1={expected.top1!r} is not valid; accepted: a percentage in [0, 100]"
        )
    if expected.weights not in ("raw", "ema"):
        raise ConfigError(f"expected.weights={expected.weights!r} is not valid; accepted: raw, ema")
    if expected.tolerance < 0:
        raise ConfigError(
            f"expected.tolerance={expected.tolerance!r} is not valid; "
            "accepted: a non-negative number of percentage points"
        )


def _validate_trainer(cfg: DictConfig) -> None:
    """Trainer fields whose accepted values depend on another field or are null-or-bounded."""
    t = cfg.trainer
    if t.max_steps is not None and t.max_steps <= 0:
        raise ConfigError(
            f"trainer.max_steps={t.max_steps!r} is not valid; accepted: a positive integer or null"
        )
    if t.best_by not in (None, "raw", "ema"):
        raise ConfigError(
            f"trainer.best_by={t.best_by!r} is not valid; accepted: null (ema when EMA is on), raw, ema"
        )
    if t.best_by == "ema" and not t.ema_decay:
        raise ConfigError(
            "trainer.best_by='ema' needs an EMA of the weights; set trainer.ema_decay "
            "(e.g. 0.999) or use trainer.best_by=raw"
        )
    if t.progress_every < 0:
        raise ConfigError(
            f"trainer.progress_every={t.progress_every!r} is not valid; accepted: 0 (off) or a "
            "positive number of steps"
        )
    if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
        raise ConfigError(
            f"trainer.ema_decay={t.ema_decay!r} is not valid; accepted: null or a number in (0, 1)"
        )
    for name in ("mixup_alpha", "cutmix_alpha"):
        if t[name] < 0:
            raise ConfigError(
                f"trainer.{name}={t[name]!r} is not valid; accepted: 0 (off) or a positive number"
            )
    base = cfg.optim.get("base_batch_size")
    if base is not None and base <= 0:
        raise ConfigError(
            f"optim.base_batch_size={base!r} is not valid; accepted: null or a positive integer"
        )
    threshold = t.get("bce_target_threshold")
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ConfigError(
            f"trainer.bce_target_threshold={threshold!r} is not valid; accepted: null or a "
            "number in [0, 1)"
        )
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(
            f"trainer.grad_clip={t.grad_clip!r} is not valid; accepted: null or a positive number"
        )


def _validate_ranges(cfg: DictConfig) -> None:
    """Checks of one field against a range or another field (train.py only)."""
    d, o, s, m = cfg.data, cfg.optim, cfg.sched, cfg.model
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction={d.val_fraction!r} is not valid; accepted: a number in (0, 1)"
        )
    if not 0.0 <= d.max_bad_images <= 1.0:
        raise ConfigError(
            f"data.max_bad_images={d.max_bad_images!r} is not valid; accepted: a fraction in [0, 1]"
        )
    betas = list(o.betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(
            f"optim.betas={betas!r} is not valid; accepted: two numbers in [0, 1), e.g. [0.9, 0.999]"
        )
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ConfigError(
            "optim.nesterov=true is not valid with optim.momentum=0; accepted: a momentum in "
            "(0, 1), or optim.nesterov=false"
        )
    for name in ("mean", "std"):
        values = d[name]
        if values is not None and len(values) == 0:
            raise ConfigError(
                f"data.{name}=[] is not valid; accepted: null or one number a channel"
            )
    schedule = SCHEDULERS[s.name]  # a key: the choices were checked first
    if schedule.warms_up and s.warmup_epochs > 0 and s.warmup_epochs >= cfg.trainer.epochs:
        raise ConfigError(
            f"sched.warmup_epochs={s.warmup_epochs!r} is not valid with trainer.epochs="
            f"{cfg.trainer.epochs}; accepted: fewer warm-up epochs than training epochs"
        )
    for name, why in schedule.unread.items():
        if s[name] != 0:
            raise ConfigError(
                f"sched.{name}={s[name]!r} is not read by sched={s.name} ({why}); accepted "
                f"with {s.name}: 0, or another schedule"
            )
    # train.py trains a classifier: a backbone's feature maps have no loss to train on
    if m.include_top is False:
        raise ConfigError(
            "model.include_top=false is not valid for train.py (a backbone returns feature maps, "
            "not class scores); accepted: true or null"
        )
    if m.out_indices is not None:
        raise ConfigError(
            f"model.out_indices={list(m.out_indices)!r} is not valid for train.py (it returns "
            "feature maps, not class scores); accepted: null"
        )
