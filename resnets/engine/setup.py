"""What a run is made of, built from its config: data, model, EMA, optimizer, schedule, loss,
mixing and the callbacks. `setup(trainer)` sets them on the trainer, at step 0; a resume
(resnets/engine/restore.py) then moves them to the checkpoint's place."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchvision.transforms import v2

from ..config import ConfigError
from ..data import build_data
from ..models import build_model_from_config
from ..models.pretrained import pretrained_stats
from ..optim import build_optimizer, build_scheduler
from ..runtime import PRECISIONS, check_channels_last
from . import resume as R
from .batching import derive_batch_size
from .best import default_best_by
from .callbacks import Callback, Callbacks
from .ema import EMA
from .history import History
from .losses import build_criterion
from .progress import Progress

log = logging.getLogger("resnets.engine.trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(trainer: Any) -> None:
    cfg, t, device = trainer.cfg, trainer.cfg.trainer, trainer.dist.device
    seed_everything(cfg.seed + trainer.dist.rank)
    derive_batch_size(t, trainer.dist.world_size)  # trainer.global_batch_size: the recipe's
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    trainer.data = data = _data(cfg, trainer.dist)
    trainer.model = model = build_model_from_config(
        cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size
    )
    record_resolved(cfg, data, model)
    trainer.num_params = sum(p.numel() for p in model.parameters())
    check_channels_last(t, model, device.type, defaulted="channels_last" in trainer.device_defaults)
    trainer.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(device, memory_format=trainer.memory_format)
    trainer.ema = EMA(model, t.ema_decay, every=t.ema_every) if t.ema_decay else None
    trainer.optim_cfg = scaled_optim(cfg.optim, t, trainer.dist.world_size)
    trainer.optimizer = build_optimizer(model, trainer.optim_cfg)
    # this run's hyper-parameters, before any schedule writes into the groups
    trainer.hyper = [
        {k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups
    ]
    trainer.settings = epoch_settings(cfg, data.train_size, trainer.dist.world_size)
    trainer.layout = R.fresh_layout(trainer.settings)
    _check_steps(trainer.layout, trainer.settings)
    trainer.scaler = torch.amp.GradScaler("cuda") if PRECISIONS[t.precision].grad_scaler else None
    trainer.criterion = build_criterion(t)  # trainer.loss: ce | bce
    trainer.mix = mixing(t, data.num_classes)
    # whose validation top-1 picks best.pt; the EMA's when there is one, unless told otherwise
    trainer.best_by = default_best_by(t.best_by, trainer.ema is not None)
    build_schedule(trainer)  # a resume lays it out again


def _data(cfg: DictConfig, dist: Any):
    t = cfg.trainer
    data = build_data(
        cfg.data,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        num_workers=t.workers,
        device=dist.device,
        seed=cfg.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        accumulate=t.accumulate_grad_batches,
        stats=pretrained_stats(cfg.model),
    )
    if len(data.train) == 0:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is larger than the training set "
            f"({data.train_size} images over {dist.world_size} process(es)), so "
            f"data.drop_last=true leaves no batch; accepted: a batch size of at most "
            f"{data.train_size // dist.world_size}, or data.drop_last=false"
        )
    return data


def epoch_settings(cfg: DictConfig, train_size: int, world_size: int) -> dict[str, Any]:
    """What cuts each epoch into optimizer steps (resnets.data.plan); the schedule follows it."""
    t = cfg.trainer
    return {
        "train_size": train_size,
        "batch_size": t.batch_size,
        "accumulate": t.accumulate_grad_batches,
        "world_size": world_size,
        "drop_last": bool(cfg.data.get("drop_last", True)),
        "epochs": t.epochs,
        "seed": cfg.seed,
        # 0 and 1 both mean off: one copy of each image
        "repeated_aug": max(1, int(cfg.data.get("repeated_aug") or 0)),
    }


def _check_steps(layout: dict[str, float], s: dict[str, Any]) -> None:
    if layout["steps_per_epoch"] == 0:
        images = s["batch_size"] * s["accumulate"] * s["world_size"]
        raise ConfigError(
            f"trainer.batch_size={s['batch_size']} x trainer.accumulate_grad_batches="
            f"{s['accumulate']} x {s['world_size']} process(es) needs {images} images a step; "
            f"the data has {s['train_size']} training images "
            f"(data.drop_last={s['drop_last']}). Accepted: a smaller batch size "
            "or accumulation, or data.drop_last=false"
        )


def build_schedule(trainer: Any) -> None:
    """The schedule as `trainer.layout` lays it out, standing at the current step."""
    trainer.scheduler = build_scheduler(
        trainer.optimizer,
        trainer.cfg.sched,
        lr=trainer.optim_cfg.lr,
        layout=trainer.layout,
        start_step=trainer.step,
    )


def scaled_optim(optim: DictConfig, t: DictConfig, world_size: int) -> DictConfig:
    """optim.lr is the rate of optim.base_batch_size images a step; another global batch
    scales it linearly (Goyal et al. 2017; the recipes' warm-up covers the first epochs)."""
    global_batch = t.batch_size * world_size * t.accumulate_grad_batches
    base = optim.get("base_batch_size")
    scaled = optim.copy()
    if base:
        scaled.lr = optim.lr * global_batch / base
    log.info(
        "global batch %d (trainer.batch_size %d x %d ranks x %d accumulated), lr %.4g%s",
        global_batch,
        t.batch_size,
        world_size,
        t.accumulate_grad_batches,
        scaled.lr,
        f" (optim.lr {optim.lr:g} x {global_batch} / optim.base_batch_size {base})" if base else "",
    )
    return scaled


def mixing(t: DictConfig, num_classes: int) -> v2.RandomChoice | None:
    ops = []
    if t.mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=t.mixup_alpha, num_classes=num_classes))
    if t.cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=t.cutmix_alpha, num_classes=num_classes))
    return v2.RandomChoice(ops) if ops else None


def record_resolved(cfg: DictConfig, data, model: nn.Module) -> None:
    """With pretrained weights, write the stem and statistics they chose into the config that
    checkpoints store, so evaluation and export rebuild the same network without the weights."""
    if not cfg.model.get("pretrained"):
        return
    if cfg.model.get("stem") in (None, "auto") and hasattr(model, "stem_type"):
        cfg.model.stem = model.stem_type
    if not cfg.data.get("mean"):
        cfg.data.mean, cfg.data.std = list(data.mean), list(data.std)


def build_callbacks(cfg: DictConfig) -> Callbacks:
    """The history file and progress output (always), the chosen loggers (`cfg.logger`: name ->
    a node with `_target_`), then the checkpoint policy (`cfg.checkpoint`)."""
    named: dict[str, Callback] = {"history": History(), "progress": Progress()}
    for name, node in (cfg.get("logger") or {}).items():
        if node is not None:
            named[str(name)] = _instantiate(f"logger.{name}", node)
    named["checkpoint"] = _instantiate("checkpoint", cfg.checkpoint)
    return Callbacks(named)


def _instantiate(where: str, node: DictConfig) -> Callback:
    callback = instantiate(node)
    if not isinstance(callback, Callback):
        raise ConfigError(
            f"{where}._target_={node.get('_target_')!r} builds a {type(callback).__name__}, not "
            "a resnets.engine.callbacks.Callback; accepted: a Callback subclass"
        )
    return callback
