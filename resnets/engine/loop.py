"""The training loop, top to bottom: epochs of steps, each epoch followed by evaluation and the
checkpoint policy. A step: forward and backward of each micro-batch (DDP's no_sync on all but
the last), unscale and clip, optimizer step, schedule, EMA, events.

`trainer` (resnets/engine/trainer.py) holds what the run is made of (model, optimizer, data,
...) and where it stands (epoch, step, samples_in_epoch); loggers and checkpoints act through
`trainer.events` (resnets/engine/callbacks.py); guards.py stops the run on signals and
non-finite numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from ..data import progressive
from ..optim import learning_rates
from . import distributed as D
from . import guards as G
from .resume import steps_per_epoch
from .steps import TrainTally, evaluate_model, forward_backward


def fit(trainer: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Train to trainer.epochs (or max_steps, or a stop signal); returns the last training
    pass's figures and the last validation's."""
    t = trainer.cfg.trainer
    net = D.wrap_model(trainer.model, trainer.dist, t.sync_batchnorm)
    # reduce-overhead replays CUDA graphs: the per-step launch cost of small models disappears
    forward = torch.compile(net, mode=t.compile_mode) if t.compile else net
    last_train: dict[str, float] = {}
    last_val: dict[str, Any] = {}
    if trainer.val_pending:  # stopped right after an epoch's last step, before validating
        trainer.val_pending = False
        last_val = validate_and_save(trainer, 0.0, 0, finished_epoch=True)
    with torch.autograd.set_detect_anomaly(t.detect_anomaly):
        while trainer.epoch < t.epochs and not reached_max_steps(trainer):
            start = time.perf_counter()
            last_train, seen, finished = train_epoch(trainer, net, forward)
            epoch_time = time.perf_counter() - start
            trainer.train_time += epoch_time
            if trainer.stop.requested:
                trainer.val_pending = finished  # the resumed run validates it first
                break
            if finished or reached_max_steps(trainer):
                val = validate_and_save(trainer, epoch_time, seen, finished, last_train)
                last_val = val or last_val
    return last_train, last_val


def train_epoch(
    trainer: Any, net: nn.Module, forward: nn.Module
) -> tuple[dict[str, float], int, bool]:
    """Steps from the current place in the epoch to its end (or to a stop); returns the
    epoch's train figures, the images this rank saw, and whether the epoch ran to its end.

    The loader yields `accumulate` equal micro-batches per step on every rank
    (resnets.data.plan), so each micro-batch's mean loss over `accumulate` is the step's mean
    loss, a short last step included."""
    t, loader = trainer.cfg.trainer, trainer.data.train
    # data.progressive: this epoch's training size (a pure function of the epoch)
    loader = progressive.for_epoch(loader, trainer.cfg.data, trainer.epoch, t.epochs)
    accumulate = t.accumulate_grad_batches
    trainer.model.train()
    loader.set_epoch(trainer.epoch, start_sample=trainer.samples_in_epoch)
    batches = len(loader)  # this pass, on this rank: a multiple of `accumulate`
    total = steps_per_epoch(trainer.settings) * accumulate
    trainer.tally = tally = TrainTally(trainer.dist.device)
    trainer.events.on_epoch_start(trainer, max(total - batches, 0), max(total, batches))
    for i, (images, labels) in enumerate(loader):
        steps_now = (i + 1) % accumulate == 0
        # `net` is the DDP module itself: a compiled wrapper around it has no no_sync
        sync = D.no_sync_if(net, not steps_now)
        micro_batch(trainer, images, labels, forward, sync, tally, first=i == 0)
        if not steps_now:
            continue
        log_now = (trainer.step + 1) % t.log_every == 0
        grad_norm = optimizer_step(trainer, log_now)
        trainer.step += 1
        images_in_step = tally.end_step()
        trainer.images_seen += images_in_step  # this rank's, over the whole run
        # every rank's micro-batches of a step are the same size
        trainer.samples_in_epoch += images_in_step * trainer.dist.world_size
        record = step_record(trainer, tally, grad_norm) if log_now else None
        trainer.events.on_step_end(trainer, record)
        # ranks must stop (and save) at the same step: they compare notes where the loop syncs
        stopping = G.agree_to_stop(trainer, log_now)
        G.save_if_signalled(trainer, stopping, log_now, tally.sums[0])
        if stopping or reached_max_steps(trainer):
            break
    trainer.events.on_train_epoch_end(trainer)
    G.agree_to_stop(trainer, at_sync_point=True)
    G.check_finite(trainer, tally.sums[0], f"in epoch {trainer.epoch + 1}")
    finished = tally.batches == batches
    if finished:
        trainer.epoch, trainer.samples_in_epoch = trainer.epoch + 1, 0
    return tally.reduced(), tally.seen, finished


def micro_batch(
    trainer: Any, images, labels, forward: nn.Module, sync, tally: TrainTally, first: bool
) -> None:
    """Forward and backward of one loader batch, tallied: on the device, mixed when
    MixUp/CutMix is on, in the model's layout."""
    device, t = trainer.dist.device, trainer.cfg.trainer
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if first and trainer.step == 0:
        trainer.events.on_inputs(trainer, images)
    targets = labels
    if trainer.mix is not None:
        images, targets = trainer.mix(images, labels)
    # after mixing: the mixed batch is a new tensor, whatever layout the mix gave it
    images = images.contiguous(memory_format=trainer.memory_format)
    logits, loss = forward_backward(
        forward,
        images,
        targets,
        trainer.criterion,
        precision=t.precision,
        scaler=trainer.scaler,
        accumulate=t.accumulate_grad_batches,
        sync=sync,
    )
    tally.add(loss, logits, labels, skip_non_finite=trainer.scaler is not None)


def optimizer_step(trainer: Any, log_now: bool) -> torch.Tensor | None:
    """Unscale, clip, step, zero the gradients, advance the schedule and the EMA; returns the
    gradient norm before clipping when it was clipped or is logged now (else None)."""
    model, optimizer, scaler = trainer.model, trainer.optimizer, trainer.scaler
    grad_clip = trainer.cfg.trainer.grad_clip
    if scaler:
        scaler.unscale_(optimizer)
    grad_norm = None
    if grad_clip is not None or log_now:
        # max_norm=inf measures without clipping
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    trainer.scheduler.step()
    ema = trainer.ema
    if ema is not None and (trainer.step + 1) % ema.every == 0:
        ema.update_parameters(model)
    return grad_norm


def step_record(trainer: Any, tally: TrainTally, grad_norm) -> dict[str, Any]:
    """A logged step's figures: the epoch's running loss and top-1 on this rank, the learning
    rates, the log interval's images/s, the gradient norm when measured."""
    G.check_finite(trainer, tally.sums[0], f"by step {trainer.step}")
    loss, top1 = tally.means()
    images, seconds = tally.window()
    tally.new_window()
    record = position(trainer, "train", trainer.epoch + 1)
    record.update({"train/loss": loss, "train/top1": top1, **learning_rates(trainer.optimizer)})
    record["perf/images_per_s"] = images * trainer.dist.world_size / max(seconds, 1e-9)
    if grad_norm is not None:
        record["train/grad_norm"] = float(grad_norm)
    return record


def position(trainer: Any, kind: str, epoch: int) -> dict[str, Any]:
    """Where a record was taken: the keys callbacks.RECORD_KEYS names."""
    return {
        "kind": kind,
        "step": trainer.step,
        "epoch": epoch,
        "images_seen": trainer.images_seen * trainer.dist.world_size,
        "wall_time_s": round(trainer.wall_time(), 3),
    }


def validate_and_save(
    trainer: Any,
    epoch_time: float,
    seen: int,
    finished_epoch: bool,
    train: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Evaluate when the epoch calls for it, then the checkpoint policy; returns the figures
    (empty when this epoch is not evaluated)."""
    t = trainer.cfg.trainer
    # the run ends here (or pauses inside an epoch): always evaluate and save
    last = not finished_epoch or trainer.epoch >= t.epochs or reached_max_steps(trainer)
    val: dict[str, Any] = {}
    if last or trainer.epoch % t.eval_every == 0:
        val = evaluate(trainer)
        if not math.isfinite(val["loss"]):
            where = f"at step {trainer.step}"
            message = G.non_finite_message(trainer, "validation loss became", val["loss"], where)
            raise G.NonFiniteLossError(message)
        # a partial epoch (stopped by max_steps) is named by the epoch it ran in
        epoch = trainer.epoch if finished_epoch else trainer.epoch + 1
        record = validation_record(trainer, val, epoch, epoch_time, seen)
        trainer.report_validation(val, train, epoch, finished_epoch, epoch_time)
        trainer.events.on_validation_end(trainer, record)
    trainer.events.on_epoch_end(trainer, last)
    return val


def validation_record(
    trainer: Any, val: dict[str, Any], epoch: int, epoch_time: float, seen: int
) -> dict[str, Any]:
    record = position(trainer, "val", epoch)
    record.update({"val/loss": val["loss"], "val/top1": val["top1"], "val/top5": val["top5"]})
    ema = val["ema"]
    if ema is not None:
        record.update(
            {"val_ema/loss": ema["loss"], "val_ema/top1": ema["top1"], "val_ema/top5": ema["top5"]}
        )
    record["perf/epoch_time_s"] = epoch_time
    record["perf/epoch_images_per_s"] = seen * trainer.dist.world_size / max(epoch_time, 1e-9)
    return record


def evaluate(trainer: Any) -> dict[str, Any]:
    """Validation figures of the weights, and under "ema" those of the EMA (or None). Rank 0's
    batch-norm statistics (and the EMA's) go to every rank first."""
    t, device = trainer.cfg.trainer, trainer.dist.device
    # the EMA module's own buffers only: AveragedModel's host counter `n_averaged` is the same
    # on every rank, and NCCL cannot send it
    D.broadcast_buffers(trainer.model)
    if trainer.ema is not None:
        D.broadcast_buffers(trainer.ema.module)
    val: dict[str, Any] = evaluate_model(
        trainer.model, trainer.data.val, device, t.precision, t.channels_last
    )
    val["ema"] = None
    if trainer.ema is not None:
        val["ema"] = evaluate_model(
            trainer.ema.module, trainer.data.val, device, t.precision, t.channels_last
        )
    return val


def reached_max_steps(trainer: Any) -> bool:
    return (
        trainer.cfg.trainer.max_steps is not None and trainer.step >= trainer.cfg.trainer.max_steps
    )
