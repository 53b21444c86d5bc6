"""Loggers of the `logger` config group (conf/logger/<name>.yaml names the class with
`_target_`). Each writes on rank 0 only. A new logger: a `Callback` subclass here or anywhere
importable, and one YAML file; see docs/engine.md."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from .callbacks import Callback, figures_of
from .hparams import result_hparams
from .logging import TensorBoard

log = logging.getLogger("resnets.engine.trainer")


class TensorBoardLogger(Callback):
    """Scalars, the first batch's images, the config and the hparams table in <run dir>/tb;
    a resume drops the events past the checkpoint (purge_step)."""

    def __init__(self, subdir: str = "tb") -> None:
        self.subdir = subdir
        self.tb = TensorBoard(None)

    def on_fit_start(self, trainer: Any) -> None:
        log_dir = trainer.out / self.subdir if trainer.dist.is_main else None
        # events after the checkpoint belong to the interrupted attempt
        self.tb = TensorBoard(log_dir, purge_step=trainer.step + 1 if trainer.step else None)
        if trainer.step == 0:
            self.tb.text("config", OmegaConf.to_yaml(trainer.cfg, resolve=True))

    def on_inputs(self, trainer: Any, images: Any) -> None:
        self.tb.image_grid("inputs", images, trainer.data.mean, trainer.data.std, 0)

    def on_step_end(self, trainer: Any, record: Mapping[str, Any] | None) -> None:
        if record is not None:
            self.tb.scalars(figures_of(record), record["step"])

    def on_validation_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        self.tb.scalars(figures_of(record), record["step"])

    def on_fit_end(self, trainer: Any, metrics: Mapping[str, Any] | None) -> None:
        if metrics is not None:
            final = {
                "hparam/best_val_top1": metrics["best_val_top1"],
                "hparam/val_top1": metrics["val_top1"],
            }
            if metrics["val_ema_top1"] is not None:
                final["hparam/val_ema_top1"] = metrics["val_ema_top1"]
            self.tb.hparams(result_hparams(trainer.cfg, trainer.dist.world_size), final)
            if trainer.dist.is_main:
                log.info("TensorBoard: tensorboard --logdir %s", trainer.out / self.subdir)
        self.tb.close()
