"""Which checkpoints a run keeps (the `checkpoint` config node): the policy is a callback, so
top-k or early stopping replace it without a loop edit. Saving itself (every rank hands in its
random generators, rank 0 writes) is `trainer.save(name)`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .callbacks import Callback


class BestAndLast(Callback):
    """best.pt: the evaluation with the highest validation top-1 of the weights trainer.best_by
    names (raw or EMA); last.pt: every trainer.save_every epochs and when the run ends."""

    def on_validation_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        tag = "val_ema/top1" if trainer.best_by == "ema" else "val/top1"
        if record[tag] > trainer.best:
            trainer.best, trainer.best_epoch = record[tag], record["epoch"]
            trainer.save("best.pt")

    def on_epoch_end(self, trainer: Any, last: bool) -> None:
        if last or trainer.epoch % trainer.cfg.trainer.save_every == 0:
            trainer.save("last.pt")
