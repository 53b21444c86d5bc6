"""The trainer: `Trainer(cfg, output_dir).fit()`, the one training run of any network of the
registry on any dataset of resnets.data.

Read `Trainer._fit` top to bottom: set-up (setup.py), resume (restore.py), the loop (loop.py),
metrics.json. The loop's events go to the callbacks (loggers, history, progress, checkpoint
policy; callbacks.py); guards.py stops the run on signals and non-finite numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..models.presets import upsamples
from ..runtime import apply_device_defaults, check_runtime
from ..validation import validate
from . import distributed as D
from . import guards as G
from . import loop
from .checkpoint import FORMAT_VERSION, CheckpointError, capture_rng, save_checkpoint
from .guards import NonFiniteLossError, TrainingInterrupted, stop_message
from .logging import log_file, silence_file_logs
from .report import final_metrics, log_validation
from .restore import load_state_dict, resume
from .setup import build_callbacks, seed_everything, setup
from .signals import StopRequest

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "TrainingInterrupted",
    "seed_everything",
    "stop_message",
    "train",
]

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> float:
    """Train as `cfg` says into `output_dir`; returns the best validation top-1 accuracy in %.

    `overrides` (the command line's, recorded in metrics.json) only describe the run."""
    try:
        return Trainer(cfg, output_dir, overrides).fit()
    finally:
        D.cleanup()  # under torchrun: destroy the process group, even after a failure


class Trainer:
    """`Trainer(cfg, output_dir).fit()`: a plain Python API; the entry points own Hydra and pass
    its output directory and command-line overrides in.

    What the run is made of (data, model, ema, optimizer, scheduler, scaler, criterion, mix,
    settings, layout) is set by setup.setup; where it stands (epoch, step, samples_in_epoch,
    best, ...) here, and moved by a resume."""

    def __init__(
        self, cfg: DictConfig, output_dir: str | os.PathLike, overrides: Sequence[str] = ()
    ) -> None:
        validate(cfg)
        device = check_runtime(
            cfg.trainer, cfg.data, model=cfg.model, upsamples=upsamples(cfg.model.name)
        )
        self.device_defaults = apply_device_defaults(cfg.trainer, device)
        self.cfg = cfg
        self.overrides = list(overrides)
        self.events = build_callbacks(cfg)
        self.dist = D.init_distributed(cfg.trainer)
        # every rank uses rank 0's directory (their Hydra timestamps may differ)
        self.out = Path(D.broadcast_object(str(output_dir)))
        own = Path(output_dir)
        if not self.dist.is_main and own.resolve() != self.out.resolve() and own.is_dir():
            with contextlib.suppress(OSError):  # only ever removes an empty directory
                own.rmdir()
        self.ckpt_dir = self.out / "checkpoints"
        if not self.dist.is_main:
            silence_file_logs()
        # the place in the run
        self.epoch, self.step, self.samples_in_epoch = 0, 0, 0
        self.best, self.best_epoch, self.val_pending = -1.0, -1, False
        # over the whole run, resumes included: seconds in training passes, this rank's images,
        # and the wall time of earlier attempts
        self.train_time, self.images_seen, self.wall_before = 0.0, 0, 0.0
        self.started = time.perf_counter()
        self.stop = StopRequest()

    def _setup(self) -> None:
        setup(self)

    def wall_time(self) -> float:
        """Seconds since the run started, over every attempt (set-up, evaluation included)."""
        return self.wall_before + time.perf_counter() - self.started

    # ----------------------------------------------------------------------------- state
    def state_dict(self, rank_rng: list[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
        rank_rng = rank_rng or [capture_rng()]
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "samples_in_epoch": self.samples_in_epoch,
            "settings": dict(self.settings),
            "schedule": dict(self.layout),
            "val_pending": self.val_pending,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_by": self.best_by,  # the weights whose top-1 chose best.pt
            "train_time_s": self.train_time,
            "wall_time_s": self.wall_time(),
            "images_seen": self.images_seen,
            "callbacks": self.events.state_dict(),
            "rng": rank_rng[0],
            "rank_rng": rank_rng,
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "inference": self.data.inference_facts(),  # predict/export without the data
            "format_version": FORMAT_VERSION,
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        load_state_dict(self, state, path)

    def save(self, name: str, agree: bool = True) -> None:
        """Every rank calls this at the same step and hands in its random generators; rank 0
        writes. With `agree`, rank 0 tells the others whether the write failed, so all ranks
        stop with its message instead of waiting for it in the next collective."""
        # every rank holds the same weights, so every rank reaches the same verdict
        for module, what in ((self.model, "weights"), (self.ema, "EMA weights")):
            if module is not None:
                G.check_finite_state(self, module, what)
        path, failure = self.ckpt_dir / name, None
        rank_rng = D.all_gather_object(capture_rng()) if self.dist.distributed else None
        if self.dist.is_main:
            try:
                save_checkpoint(path, self.state_dict(rank_rng))
            except CheckpointError as err:
                failure = err
        if agree and self.dist.distributed:
            reason = D.broadcast_object(None if failure is None else str(failure))
            if reason is not None and failure is None:
                failure = CheckpointError(path, reason.removeprefix(f"{path}: "))
        if failure is not None:
            raise failure
        if self.dist.is_main:
            self.events.on_save(self, path)

    def report_validation(self, val, train, epoch: int, finished: bool, epoch_time: float) -> None:
        if self.dist.is_main:
            log_validation(self, val, train, epoch, finished, epoch_time)

    # ----------------------------------------------------------------------------- fit
    def fit(self) -> float:
        """Train to the end (or to a stop signal); returns the best validation top-1 in %."""
        if not self.dist.is_main:
            return self._fit()
        with log_file(self.out / "train.log"):
            return self._fit()

    def _fit(self) -> float:
        self.started = time.perf_counter()
        setup(self)
        resume(self)
        self.stop = StopRequest.for_this_job().install()
        self.events.on_fit_start(self)
        self._announce()
        metrics = None
        try:
            last_train, last_val = loop.fit(self)
            if self.stop.requested:
                G.stop_and_exit(self)
            metrics = self._finish(last_train, last_val)
        finally:
            self.stop.restore()
            self.events.on_fit_end(self, metrics)  # None: stopped or failed
        D.barrier()
        return self.best

    def _announce(self) -> None:
        cfg, t = self.cfg, self.cfg.trainer
        log.info(
            "%s (%.2fM params) on %s, precision %s: %d train / %d val images, %d steps per "
            "epoch, device %s",
            cfg.model.name,
            self.num_params / 1e6,
            cfg.data.name,
            t.precision,
            self.data.train_size,
            self.data.val_size,
            self.layout["steps_per_epoch"],
            self.dist.device,
        )

    def _finish(self, last_train: dict[str, float], last_val: dict[str, Any]) -> dict[str, Any]:
        """metrics.json, once the run trained to its end."""
        if self.step == 0:  # an untrained network is never reported as a result
            raise ConfigError(
                f"the run took no optimizer step ({len(self.data.train)} batches an epoch, "
                f"trainer.epochs={self.cfg.trainer.epochs}); nothing was trained or saved"
            )
        if not last_val:  # resumed a finished run: report the checkpoint's model
            last_val = loop.evaluate(self)
        if self.best < 0:  # never a placeholder: a checkpoint that has not been scored yet
            ema = last_val.get("ema")
            self.best = ema["top1"] if self.best_by == "ema" and ema else last_val["top1"]
            self.best_epoch = self.epoch
            self.save("best.pt")  # chosen by these weights now (resnets.engine.best)
        metrics = final_metrics(self, last_train, last_val)
        if self.dist.is_main:
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            log.info(
                "best val top-1 %.2f%% (%s weights, epoch %d); outputs in %s",
                self.best,
                "EMA" if self.best_by == "ema" else "raw",
                self.best_epoch,
                self.out,
            )
            log.info("history: %s; checkpoints: %s", self.out / "history.jsonl", self.ckpt_dir)
        return metrics
