"""What a run says about itself: the epoch lines of train.log and metrics.json."""

from __future__ import annotations

import logging
from typing import Any

from ..data.bad_images import unreadable_images
from ..models.summary import count_flops, count_macs

log = logging.getLogger("resnets.engine.trainer")


def log_validation(
    trainer: Any,
    val: dict[str, Any],
    train: dict[str, float] | None,
    epoch: int,
    finished_epoch: bool,
    epoch_time: float,
) -> None:
    """The epoch's line: train and validation figures (and the EMA's), the pass's seconds."""
    ema = val["ema"]
    where = f"epoch {epoch}/{trainer.cfg.trainer.epochs}" + (
        "" if finished_epoch else f" (partial, {trainer.samples_in_epoch} images)"
    )
    log.info(
        "%s step %d: %s | %s%s | %.1fs",
        where,
        trainer.step,
        figures("train", train, top5=False),
        figures("val", val),
        f" | {figures('EMA val', ema)}" if ema is not None else "",
        epoch_time,
    )


def figures(name: str, stats: dict[str, float] | None, top5: bool = True) -> str:
    if not stats:
        return f"{name}: -"
    text = f"{name} loss {stats['loss']:.4f} top-1 {stats['top1']:.2f}%"
    return text + (f" top-5 {stats['top5']:.2f}%" if top5 else "")


def final_metrics(trainer: Any, train: dict[str, float], val: dict[str, Any]) -> dict[str, Any]:
    """metrics.json. `wall_time_s`: the run's time from each attempt's start to its end (set-up,
    evaluation and saving included), summed over attempts; `train_time_s`: the part of it spent
    in training passes, so never more than `wall_time_s`."""
    cfg, data, model = trainer.cfg, trainer.data, trainer.model
    ema = val.get("ema") or {}
    return {
        "status": "finished",  # a failed sweep job writes status "failed" and the reason
        "best_val_top1": trainer.best,
        "best_epoch": trainer.best_epoch,
        "best_by": trainer.best_by,
        "val_top1": val.get("top1"),
        "val_top5": val.get("top5"),
        "val_loss": val.get("loss"),
        "val_ema_top1": ema.get("top1"),
        "val_ema_top5": ema.get("top5"),
        "val_ema_loss": ema.get("loss"),
        "val_samples": val.get("n"),
        "train_loss": train.get("loss"),
        "train_top1": train.get("top1"),
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "steps_per_epoch": trainer.layout["steps_per_epoch"],  # history steps -> epochs
        "train_time_s": round(trainer.train_time, 3),
        "wall_time_s": round(trainer.wall_time(), 3),
        "images_per_s": trainer.images_seen
        * trainer.dist.world_size
        / max(trainer.train_time, 1e-9),
        "num_params": trainer.num_params,
        # both conventions: torchvision's docs' "GFLOPS" are gmacs; gflops = 2 x gmacs
        "gmacs": count_macs(model, data.image_size, data.in_chans) / 1e9,
        "gflops": count_flops(model, data.image_size, data.in_chans) / 1e9,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "overrides": trainer.overrides,
        # image files skipped as unreadable (this process's shard)
        "bad_images": unreadable_images(data.train, data.val),
    }
