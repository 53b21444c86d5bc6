"""The events of a run and the callbacks that act on them.

The loop (resnets/engine/loop.py) calls `trainer.events.<hook>(trainer, ...)` at fixed points;
loggers (the `logger` config group), the history file, progress output and the checkpoint
policy (the `checkpoint` config node) are callbacks. A new logger is one `Callback` subclass and
one `conf/logger/<name>.yaml` naming it with `_target_`; nothing in the loop changes.

Every rank calls every hook at the same point, so a hook may take part in a collective (the
checkpoint policy saves on all ranks); a logger that writes files acts on `trainer.dist.is_main`
only. A callback's `state_dict()` is saved in every checkpoint under its name and handed back
to `load_state_dict()` on resume, before `on_fit_start`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# the keys of a record that describe where it was taken; every other key is a figure
RECORD_KEYS = ("kind", "step", "epoch", "images_seen", "wall_time_s")


class Callback:
    """Every hook does nothing; a callback overrides the ones it needs.

    `figures` of `on_step_end` is None on steps that log nothing (every trainer.log_every-th
    step logs); a record (`on_step_end`, `on_validation_end`) is a flat dict: RECORD_KEYS plus
    figures named by tag (`train/loss`, `train/top1`, `lr`, `val/top1`, `val_ema/top5`, ...)."""

    def on_fit_start(self, trainer: Any) -> None:
        """Set-up and resume are done; `trainer.step` is where training continues."""

    def on_epoch_start(self, trainer: Any, done: int, total: int) -> None:
        """A training pass starts at batch `done` of the epoch's `total` (this rank's)."""

    def on_inputs(self, trainer: Any, images: Any) -> None:
        """The run's first training batch (step 0 only), normalised, on the device."""

    def on_step_end(self, trainer: Any, record: Mapping[str, Any] | None) -> None:
        """After an optimizer step; `record` on logged steps, else None."""

    def on_train_epoch_end(self, trainer: Any) -> None:
        """The training pass ended (the epoch's end, max_steps or a stop)."""

    def on_validation_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        """Validation figures of the weights (and of the EMA, `val_ema/...`)."""

    def on_epoch_end(self, trainer: Any, last: bool) -> None:
        """After validation; `last` when the run ends (or pauses inside an epoch) here."""

    def on_save(self, trainer: Any, path: Path) -> None:
        """A checkpoint was written to `path` (rank 0)."""

    def on_fit_end(self, trainer: Any, metrics: Mapping[str, Any] | None) -> None:
        """The run ended: with metrics.json's content, or None after a stop or a failure."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's `state_dict()`."""


class Callbacks:
    """The run's callbacks by name, called in order (the checkpoint policy last, so a checkpoint
    holds what the other callbacks did before it)."""

    def __init__(self, callbacks: Mapping[str, Callback]) -> None:
        self.named = dict(callbacks)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any, **kwargs: Any) -> None:
            for callback in self.named.values():
                getattr(callback, hook)(*args, **kwargs)

        return call

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {name: cb.state_dict() for name, cb in self.named.items()}

    def load_state_dict(self, states: Mapping[str, Mapping[str, Any]] | None) -> None:
        """Each callback gets its own state; one the checkpoint lacks (added since) starts afresh."""
        for name, callback in self.named.items():
            if states and name in states:
                callback.load_state_dict(states[name])


def figures_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The figures of a record, without its position."""
    return {k: v for k, v in record.items() if k not in RECORD_KEYS}
