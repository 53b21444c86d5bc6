"""Progress output: a tqdm bar on a terminal; without one (batch jobs) a log line every
trainer.progress_every steps and at the end of every training pass, with the rate and the time
left of the epoch and of the run. Rank 0 only; positions count epochs and batches from 1 and
read the true place in the epoch after a resume (batch 6/16, not 1/9)."""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm  # not tqdm.auto: its asyncio class iterates the loader twice

from .callbacks import Callback

log = logging.getLogger("resnets.engine.trainer")


class Progress(Callback):
    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.done = self.total = self.steps_at_start = 0
        self.start = 0.0
        self.printed_at = -1

    def on_epoch_start(self, trainer: Any, done: int, total: int) -> None:
        t = trainer.cfg.trainer
        self.done, self.total = done, total
        self.start, self.steps_at_start = time.perf_counter(), trainer.step
        self.bar = tqdm(
            total=total,
            initial=done,
            disable=not (t.progress and trainer.dist.is_main and sys.stdout.isatty()),
            dynamic_ncols=True,
            desc=f"epoch {trainer.epoch + 1}/{t.epochs}",
            leave=False,
        )

    def on_step_end(self, trainer: Any, record: Mapping[str, Any] | None) -> None:
        assert self.bar is not None
        self.bar.update(trainer.cfg.trainer.accumulate_grad_batches)
        if record is not None:
            self.bar.set_postfix(
                loss=f"{record['train/loss']:.3f}",
                top1=f"{record['train/top1']:.1f}",
                lr=f"{record['lr']:.3g}",
                ips=rate(record["perf/images_per_s"]),
            )
        every = trainer.cfg.trainer.progress_every
        if self._lines(trainer) and every and trainer.step % every == 0:
            self._line(trainer)

    def on_train_epoch_end(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        # a pass shorter than progress_every steps still says where it stands
        fresh = self.printed_at != trainer.step and trainer.step > self.steps_at_start
        if fresh and self._lines(trainer) and trainer.cfg.trainer.progress_every:
            self._line(trainer)

    def _lines(self, trainer: Any) -> bool:
        return trainer.dist.is_main and self.bar is not None and self.bar.disable

    def _line(self, trainer: Any) -> None:
        t, tally = trainer.cfg.trainer, trainer.tally
        loss, top1 = tally.means()
        seconds = max(time.perf_counter() - self.start, 1e-9)
        steps = max(trainer.step - self.steps_at_start, 1)
        per_step = seconds / steps
        batch = self.done + tally.batches
        epoch_left = (self.total - batch) / t.accumulate_grad_batches * per_step
        run_left = max(int(trainer.layout["total_steps"]) - trainer.step, 0) * per_step
        log.info(
            "epoch %d/%d step %d (batch %d/%d): train loss %.4f top-1 %.2f%%, lr %.3g, "
            "%s images/s, time left %s (epoch), %s (run)",
            trainer.epoch + 1,
            t.epochs,
            trainer.step,
            batch,
            self.total,
            loss,
            top1,
            trainer.optimizer.param_groups[0]["lr"],
            rate(tally.seen * trainer.dist.world_size / seconds),
            duration(epoch_left),
            duration(run_left),
        )
        self.printed_at = trainer.step


def rate(value: float) -> str:
    """Whole numbers from 100 on, else decimals: 0.42, 1.00, 12.3, 307."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def duration(seconds: float) -> str:
    """h:mm:ss."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))
