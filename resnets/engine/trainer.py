"""The one training loop: any network from the registry on any dataset of resnets.data.

Read `Trainer.fit` top to bottom: set-up, resume, then epochs of steps with evaluation and
checkpoints. Nothing here knows about a particular architecture or dataset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.transforms import v2

from ..config import ConfigError, validate
from ..data import build_data, progressive
from ..data.bad_images import unreadable_images
from ..data.plan import mix_seeds
from ..models import build_model_from_config
from ..models.pretrained import pretrained_stats
from ..models.summary import count_flops, count_macs
from ..optim import build_optimizer, build_scheduler, learning_rates
from ..runtime import PRECISIONS, apply_device_defaults, check_channels_last, check_runtime
from . import distributed as D
from . import resume as R
from .batching import derive_batch_size
from .best import default_best_by, resume_best
from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    move_aside,
    remove_stale_temporaries,
    restore_rng,
    save_checkpoint,
    set_aside_previous,
)
from .continue_hint import continue_command
from .ema import EMA
from .hparams import result_hparams
from .logging import TensorBoard, log_file, progress, silence_file_logs
from .losses import build_criterion
from .signals import StopRequest
from .state_fit import mismatch
from .steps import TrainTally, evaluate_model, forward_backward, optimizer_step

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


class TrainingInterrupted(SystemExit):
    """Raised after last.pt is written on SIGINT/SIGTERM; the exit status is 128 + signal."""


def train(cfg: DictConfig, output_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> float:
    """Train as `cfg` says into `output_dir`; returns the best validation top-1 accuracy in %.

    `overrides` (the command line's, recorded in metrics.json) only describe the run."""
    try:
        return Trainer(cfg, output_dir, overrides).fit()
    finally:
        D.cleanup()  # under torchrun: destroy the process group, even after a failure


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """`Trainer(cfg, output_dir).fit()`: a plain Python API; the entry points own Hydra and pass
    its output directory and command-line overrides in."""

    def __init__(
        self, cfg: DictConfig, output_dir: str | os.PathLike, overrides: Sequence[str] = ()
    ) -> None:
        validate(cfg)
        self.device_defaults = apply_device_defaults(
            cfg.trainer, check_runtime(cfg.trainer, cfg.data, model=cfg.model)
        )
        self.cfg = cfg
        self.overrides = list(overrides)
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

    # ----------------------------------------------------------------------------- set-up
    def _setup(self) -> None:
        cfg, t, device = self.cfg, self.cfg.trainer, self.dist.device
        seed_everything(cfg.seed + self.dist.rank)
        derive_batch_size(t, self.dist.world_size)  # trainer.global_batch_size: the recipe's
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.data = build_data(
            cfg.data,
            batch_size=t.batch_size,
            eval_batch_size=t.eval_batch_size,
            num_workers=t.workers,
            device=device,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            accumulate=t.accumulate_grad_batches,
            stats=pretrained_stats(cfg.model),
        )
        if len(self.data.train) == 0:
            raise ConfigError(
                f"trainer.batch_size={t.batch_size} is larger than the training set "
                f"({self.data.train_size} images over {self.dist.world_size} process(es)), so "
                f"data.drop_last=true leaves no batch; accepted: a batch size of at most "
                f"{self.data.train_size // self.dist.world_size}, or data.drop_last=false"
            )
        self.model = build_model_from_config(
            cfg.model,
            num_classes=self.data.num_classes,
            in_chans=self.data.in_chans,
            image_size=self.data.image_size,
        )
        record_resolved(cfg, self.data, self.model)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        check_channels_last(
            t, self.model, device.type, defaulted="channels_last" in self.device_defaults
        )
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model.to(device, memory_format=self.memory_format)
        self.ema = None
        if t.ema_decay:
            self.ema = EMA(self.model, t.ema_decay, every=t.ema_every)
        self.optim_cfg = self._scaled_optim(cfg.optim, t)
        self.optimizer = build_optimizer(self.model, self.optim_cfg)
        # this run's hyper-parameters, before any schedule writes into the groups
        self.hyper = [
            {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
        ]
        # what cuts each epoch into optimizer steps (resnets.data.plan); the schedule follows it
        self.settings = {
            "train_size": self.data.train_size,
            "batch_size": t.batch_size,
            "accumulate": t.accumulate_grad_batches,
            "world_size": self.dist.world_size,
            "drop_last": bool(cfg.data.get("drop_last", True)),
            "epochs": t.epochs,
            "seed": cfg.seed,
            # 0 and 1 both mean off: one copy of each image
            "repeated_aug": max(1, int(cfg.data.get("repeated_aug") or 0)),
        }
        self.layout = R.fresh_layout(self.settings)
        if self.layout["steps_per_epoch"] == 0:
            raise ConfigError(
                f"trainer.batch_size={t.batch_size} x trainer.accumulate_grad_batches="
                f"{t.accumulate_grad_batches} x {self.dist.world_size} process(es) needs "
                f"{t.batch_size * t.accumulate_grad_batches * self.dist.world_size} images a step; "
                f"the data has {self.data.train_size} training images "
                f"(data.drop_last={self.settings['drop_last']}). Accepted: a smaller batch size "
                "or accumulation, or data.drop_last=false"
            )
        self.scaler = torch.amp.GradScaler("cuda") if PRECISIONS[t.precision].grad_scaler else None
        self.criterion = build_criterion(t)  # trainer.loss: ce | bce
        self.mix = self._mixing(t, self.data.num_classes)
        self.epoch, self.step, self.samples_in_epoch = 0, 0, 0
        self.best, self.best_epoch, self.val_pending = -1.0, -1, False
        # whose validation top-1 picks best.pt; the EMA's when there is one, unless told otherwise
        self.best_by = default_best_by(t.best_by, self.ema is not None)
        self.train_time, self.images_seen = 0.0, 0  # over the whole run, resumes included
        self._build_schedule()  # a resume lays it out again

    def _reset_hyperparameters(self) -> None:
        """Give every parameter group this run's values back (and drop what a schedule added)."""
        for group, values in zip(self.optimizer.param_groups, self.hyper, strict=True):
            for key in [k for k in group if k != "params" and k not in values]:
                del group[key]
            group.update(values)

    def _build_schedule(self) -> None:
        """The schedule as `self.layout` lays it out, standing at the current step."""
        self.scheduler = build_scheduler(
            self.optimizer,
            self.cfg.sched,
            lr=self.optim_cfg.lr,
            layout=self.layout,
            start_step=self.step,
        )

    def _scaled_optim(self, optim: DictConfig, t: DictConfig) -> DictConfig:
        """optim.lr is the rate of optim.base_batch_size images a step; another global batch
        scales it linearly (Goyal et al. 2017; the recipes' warm-up covers the first epochs)."""
        global_batch = t.batch_size * self.dist.world_size * t.accumulate_grad_batches
        base = optim.get("base_batch_size")
        scaled = optim.copy()
        if base:
            scaled.lr = optim.lr * global_batch / base
        log.info(
            "global batch %d (trainer.batch_size %d x %d ranks x %d accumulated), lr %.4g%s",
            global_batch,
            t.batch_size,
            self.dist.world_size,
            t.accumulate_grad_batches,
            scaled.lr,
            f" (optim.lr {optim.lr:g} x {global_batch} / optim.base_batch_size {base})"
            if base
            else "",
        )
        return scaled

    @staticmethod
    def _mixing(t, num_classes: int):
        ops = []
        if t.mixup_alpha > 0:
            ops.append(v2.MixUp(alpha=t.mixup_alpha, num_classes=num_classes))
        if t.cutmix_alpha > 0:
            ops.append(v2.CutMix(alpha=t.cutmix_alpha, num_classes=num_classes))
        return v2.RandomChoice(ops) if ops else None

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
            "images_seen": self.images_seen,
            "rng": rank_rng[0],
            "rank_rng": rank_rng,
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "inference": self.data.inference_facts(),  # predict/export without the data
            "format_version": FORMAT_VERSION,
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Continue from `state`; settings that changed since it was written are honoured from
        the current step and logged. What cannot be honoured raises before anything changes."""
        if int(state["format_version"]) < 2:
            state = R.upgrade_format_1(state, self.dist.world_size)
        old_settings = state.get("settings") or {}
        samples = int(state.get("samples_in_epoch", 0))
        R.check_resumable(path, old_settings, self.settings, samples)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            why = mismatch(self.model, state["model"], state.get("config"), self.cfg.model)
            raise CheckpointError(
                path,
                f"does not fit model {self.cfg.model.name!r}: {why}. Resume with the "
                "checkpoint's settings, or start afresh in another directory (hydra.run.dir=...)",
            ) from None
        self.epoch, self.step, self.samples_in_epoch = (
            int(state["epoch"]),
            int(state["step"]),
            samples,
        )
        self.best_by, self.best, self.best_epoch = resume_best(
            state, self.cfg.trainer.best_by, self.ema is not None
        )
        self.val_pending = bool(state.get("val_pending", False))
        self.train_time = float(state.get("train_time_s", 0.0))
        self.images_seen = int(state.get("images_seen", 0))
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # EMA switched on now: average from the resumed weights on
                self.ema = EMA(self.model, self.cfg.trainer.ema_decay, every=self.ema.every)
                log.info(
                    "trainer.ema_decay set on resume: the EMA starts from step %d's weights",
                    self.step,
                )
        self._load_optimizer(state)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self._restore_rng(state)
        self.layout, notes = R.resumed_layout(
            state, self.settings, epoch=self.epoch, samples=samples, step=self.step
        )
        for note in notes:
            log.warning(note)
        changed = R.config_changes(state["config"], self.cfg, ("optim", "sched"))
        if changed:
            log.warning("%s: in effect from step %d", ", ".join(changed), self.step)

    def _load_optimizer(self, state: dict[str, Any]) -> None:
        """Keep the optimizer's per-parameter state (momentum, moments); its hyper-parameters
        (lr, weight decay, ...) are this run's config, so a changed value takes effect now."""
        old = OmegaConf.select(OmegaConf.create(state["config"]), "optim.name")
        if old is not None and old != self.cfg.optim.name:
            log.warning(
                "optim.name changed from %s to %s: the optimizer state starts afresh",
                old,
                self.cfg.optim.name,
            )
            return
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:  # other parameter groups: nothing was loaded
            log.warning("optimizer state does not fit this run (%s): it starts afresh", err)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Each rank gets back its own generators; on another world size each rank is reseeded
        from (seed, step, rank), which is deterministic but not the stream it would have had."""
        saved = state.get("rank_rng") or ([state["rng"]] if state.get("rng") is not None else [])
        if len(saved) == self.dist.world_size and (
            state.get("rank_rng") or self.dist.world_size == 1
        ):
            restore_rng(saved[self.dist.rank])
            return
        seed_everything(mix_seeds(self.cfg.seed, self.step, self.dist.rank))
        log.warning(
            "checkpoint holds random generators of %d process(es), this run has %d: each rank "
            "reseeded from (seed, step, rank)",
            len(saved),
            self.dist.world_size,
        )

    def _resume(self) -> None:
        explicit = self.cfg.ckpt_path
        path = Path(explicit) if explicit else self.ckpt_dir / "last.pt"
        own = self.ckpt_dir / "last.pt"
        if self.dist.is_main:
            for tmp in remove_stale_temporaries(self.ckpt_dir):
                log.warning("removed %s, a checkpoint left half-written by a killed run", tmp)
            continuing = (
                self.cfg.resume
                and own.exists()
                and (not explicit or path.resolve() == own.resolve())
            )
            if not continuing:  # this run's saves must not replace checkpoints it did not write
                self._set_aside_previous()
        if explicit or (self.cfg.resume and path.exists()):
            try:
                state = load_checkpoint(path)
            except CheckpointError as err:
                if explicit:
                    raise
                # never let this run's first save overwrite the evidence
                aside = move_aside(path) if self.dist.is_main else path
                raise CheckpointError(
                    path,
                    f"{str(err).split(': ', 1)[1]}. Moved it to {aside}; run again to start "
                    f"afresh (the other checkpoints in {self.ckpt_dir} are then moved to "
                    f"previous-<time>/ first, never overwritten), or resume from another file "
                    f"with ckpt_path=...",
                ) from err
            self.load_state_dict(state, path)
            log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)
            self._reset_hyperparameters()  # changed lr, weight decay ... apply from here
            self._build_schedule()

    def _set_aside_previous(self) -> None:
        moved = set_aside_previous(self.ckpt_dir)
        if moved:
            log.warning(
                "fresh start: moved checkpoints this run did not write (%s) to %s",
                ", ".join(moved[1]),
                moved[0],
            )

    def _save(self, name: str, agree: bool = True) -> None:
        """Every rank calls this at the same step and hands in its random generators; rank 0
        writes. With `agree`, rank 0 tells the others whether the write failed, so all ranks
        stop with its message instead of waiting for it in the next collective."""
        # every rank holds the same weights, so every rank reaches the same verdict
        for module, what in ((self.model, "weights"), (self.ema, "EMA weights")):
            if module is not None:
                self._check_finite_state(module, what)
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

    def _check_finite_state(self, module: nn.Module, what: str) -> None:
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad = tensor[~torch.isfinite(tensor)].flatten()[0].item()
                raise NonFiniteLossError(
                    self._non_finite_message(f"{what} ({key}) became", bad, f"by step {self.step}")
                )

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> float:
        """Train to the end (or to a stop signal); returns the best validation top-1 in %."""
        if not self.dist.is_main:
            return self._fit()
        with log_file(self.out / "train.log"):
            return self._fit()

    def _fit(self) -> float:
        cfg, t, device = self.cfg, self.cfg.trainer, self.dist.device
        self._setup()
        self._resume()
        main = self.dist.is_main
        # events after the checkpoint belong to the interrupted attempt: TensorBoard drops them
        self.tb = TensorBoard(
            self.out / "tb" if main else None, purge_step=self.step + 1 if self.step else None
        )
        if self.step == 0:
            self.tb.text("config", OmegaConf.to_yaml(cfg, resolve=True))
        net = D.wrap_model(self.model, self.dist, t.sync_batchnorm)
        # reduce-overhead replays CUDA graphs: the per-step launch cost of small models disappears
        forward = torch.compile(net, mode=t.compile_mode) if t.compile else net
        stop = StopRequest.for_this_job().install()
        log.info(
            "%s (%.2fM params) on %s, precision %s: %d train / %d val images, %d steps per epoch, device %s",
            cfg.model.name,
            self.num_params / 1e6,
            cfg.data.name,
            t.precision,
            self.data.train_size,
            self.data.val_size,
            self.layout["steps_per_epoch"],
            device,
        )
        started = time.perf_counter()
        last_train: dict[str, float] = {}
        last_val: dict[str, Any] = {}
        try:
            if self.val_pending:  # stopped right after an epoch's last step, before validating
                self.val_pending = False
                last_val = self._validate_and_save(0.0, 0, finished_epoch=True)
            with torch.autograd.set_detect_anomaly(t.detect_anomaly):
                while self.epoch < t.epochs and not self._reached_max_steps():
                    epoch_start = time.perf_counter()
                    last_train, seen, finished = self._train_epoch(net, forward, stop)
                    self.images_seen += seen
                    epoch_time = time.perf_counter() - epoch_start
                    self.train_time += epoch_time
                    if stop.requested:
                        self.val_pending = finished  # the resumed run validates it first
                        break
                    if finished or self._reached_max_steps():
                        last_val = (
                            self._validate_and_save(epoch_time, seen, finished, last_train)
                            or last_val
                        )
            if stop.requested:
                self._save("last.pt")
                log.warning(stop_message(int(stop.signum), self.step, self.out))
                stop.hand_over()  # under submitit: requeue the job (exits here on rank 0)
                raise TrainingInterrupted(128 + int(stop.signum))
        finally:
            stop.restore()
            self.tb.close()
        if self.step == 0:  # an untrained network is never reported as a result
            raise ConfigError(
                f"the run took no optimizer step ({len(self.data.train)} batches an epoch, "
                f"trainer.epochs={t.epochs}); nothing was trained or saved"
            )
        if not last_val:  # resumed a finished run: report the checkpoint's model
            last_val = self._evaluate()
        if self.best < 0:  # never a placeholder: a checkpoint that has not been scored yet
            ema = last_val.get("ema")
            self.best = ema["top1"] if self.best_by == "ema" and ema else last_val["top1"]
            self.best_epoch = self.epoch
            self._save("best.pt")  # chosen by these weights now (resnets.engine.best)
        metrics = self._final_metrics(last_train, last_val, time.perf_counter() - started)
        if main:
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            final = {"hparam/best_val_top1": self.best, "hparam/val_top1": metrics["val_top1"]}
            if metrics["val_ema_top1"] is not None:
                final["hparam/val_ema_top1"] = metrics["val_ema_top1"]
            self.tb.hparams(result_hparams(cfg, self.dist.world_size), final)
            log.info(
                "best val top-1 %.2f%% (%s weights, epoch %d); outputs in %s",
                self.best,
                "EMA" if self.best_by == "ema" else "raw",
                self.best_epoch,
                self.out,
            )
            log.info(
                "TensorBoard: tensorboard --logdir %s; checkpoints: %s",
                self.out / "tb",
                self.ckpt_dir,
            )
        D.barrier()
        return self.best

    def _reached_max_steps(self) -> bool:
        return self.cfg.trainer.max_steps is not None and self.step >= self.cfg.trainer.max_steps

    def _train_epoch(
        self, net: nn.Module, forward: nn.Module, stop: StopRequest
    ) -> tuple[dict[str, float], int, bool]:
        """Steps from the current place in the epoch to its end (or to a stop); returns the
        epoch's train figures, the images this rank saw, and whether the epoch ran to its end.

        The loader yields `accumulate` equal micro-batches per step on every rank
        (resnets.data.plan), so each micro-batch's mean loss over `accumulate` is the step's
        mean loss, a short last step included."""
        t, loader = self.cfg.trainer, self.data.train
        # data.progressive: this epoch's training size (a pure function of the epoch)
        loader = progressive.for_epoch(loader, self.cfg.data, self.epoch, t.epochs)
        accumulate = t.accumulate_grad_batches
        self.model.train()
        loader.set_epoch(self.epoch, start_sample=self.samples_in_epoch)
        batches = len(loader)  # this pass, on this rank: a multiple of `accumulate`
        tally = TrainTally(self.dist.device)
        bar = progress(
            loader,
            enabled=t.progress and self.dist.is_main,
            total=batches,
            desc=f"epoch {self.epoch + 1}/{t.epochs}",
            leave=False,
        )
        for i, (images, labels) in enumerate(bar):
            steps_now = (i + 1) % accumulate == 0
            self._micro_batch(images, labels, forward, net, tally, steps_now, first=i == 0)
            if not steps_now:
                continue
            grad_norm = self._step(tally)
            at_sync_point = self.step % t.log_every == 0
            self._log_step(tally, grad_norm, bar, at_sync_point, batches)
            # ranks must stop (and save) at the same step; they compare notes where the loop
            # syncs anyway
            stopping = self._agree_to_stop(stop, at_sync_point)
            self._save_if_signalled(stop, stopping, at_sync_point, tally)
            if stopping or self._reached_max_steps():
                break
        bar.close()
        self._agree_to_stop(stop, at_sync_point=True)
        self._check_finite(tally.sums[0], f"in epoch {self.epoch + 1}")
        finished = tally.batches == batches
        if finished:
            self.epoch, self.samples_in_epoch = self.epoch + 1, 0
        return tally.reduced(), tally.seen, finished

    def _micro_batch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        forward: nn.Module,
        net: nn.Module,
        tally: TrainTally,
        steps_now: bool,
        first: bool,
    ) -> None:
        """Forward and backward of one loader batch, tallied: on the device, mixed when
        MixUp/CutMix is on, in the model's layout. The run's first batch goes to TensorBoard."""
        device, t = self.dist.device, self.cfg.trainer
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if first and self.step == 0:
            self.tb.image_grid("inputs", images, self.data.mean, self.data.std, 0)
        targets = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        # after mixing: the mixed batch is a new tensor, whatever layout the mix gave it
        images = images.contiguous(memory_format=self.memory_format)
        # `net` is the DDP module itself: a compiled wrapper around it has no no_sync
        logits, loss = forward_backward(
            forward,
            images,
            targets,
            self.criterion,
            precision=t.precision,
            scaler=self.scaler,
            accumulate=t.accumulate_grad_batches,
            sync=D.no_sync_if(net, not steps_now),
        )
        tally.add(loss, logits, labels, skip_non_finite=self.scaler is not None)

    def _step(self, tally: TrainTally) -> torch.Tensor | None:
        """The optimizer step that ends the accumulated micro-batches; returns the gradient
        norm when it was measured."""
        grad_norm = self._optimizer_step(log_now=(self.step + 1) % self.cfg.trainer.log_every == 0)
        self.step += 1
        # every rank's micro-batches of a step are the same size
        self.samples_in_epoch += tally.end_step() * self.dist.world_size
        return grad_norm

    def _log_step(
        self,
        tally: TrainTally,
        grad_norm: torch.Tensor | None,
        bar,
        at_sync_point: bool,
        batches: int,
    ) -> None:
        """TensorBoard scalars and the progress bar every trainer.log_every steps; without a bar,
        a log line every trainer.progress_every steps."""
        t, world = self.cfg.trainer, self.dist.world_size
        if at_sync_point:
            self._check_finite(tally.sums[0], f"by step {self.step}")
            loss, top1 = tally.means()
            images, seconds = tally.window()
            stats = {
                "train/loss": loss,
                "train/acc": top1,
                **learning_rates(self.optimizer),
                "perf/images_per_s": images * world / max(seconds, 1e-9),
            }
            if grad_norm is not None:
                stats["train/grad_norm"] = float(grad_norm)
            self.tb.scalars(stats, self.step)
            bar.set_postfix(
                loss=f"{stats['train/loss']:.3f}",
                acc=f"{stats['train/acc']:.1f}",
                lr=f"{stats['lr']:.3g}",
                ips=f"{stats['perf/images_per_s']:.0f}",
            )
            tally.new_window()
        if (
            bar.disable
            and self.dist.is_main
            and t.progress_every
            and self.step % t.progress_every == 0
        ):
            loss, top1 = tally.means()
            log.info(
                "epoch %d/%d step %d (batch %d/%d): train loss %.4f top-1 %.2f%%, lr %.3g, "
                "%.0f images/s",
                self.epoch + 1,
                t.epochs,
                self.step,
                tally.batches,
                batches,
                loss,
                top1,
                self.optimizer.param_groups[0]["lr"],
                tally.seen * world / max(time.perf_counter() - tally.start, 1e-9),
            )

    def _save_if_signalled(
        self, stop: StopRequest, stopping: bool, at_sync_point: bool, tally: TrainTally
    ) -> None:
        """Under submitit, SIGTERM announces a preemption: save last.pt, and go on."""
        if stop.save_signum is None or stopping or not self._agreed(at_sync_point):
            return
        self._check_finite(tally.sums[0], f"by step {self.step}")  # never save a diverged run
        self._save("last.pt")
        log.warning(
            "signal %d: last.pt written at step %d; training goes on until the preemption signal",
            stop.save_signum,
            self.step,
        )
        stop.save_signum = None

    def _agreed(self, at_sync_point: bool) -> bool:
        """Whether the ranks have just compared notes (always, for one process)."""
        return at_sync_point or not self.dist.distributed

    def _agree_to_stop(self, stop: StopRequest, at_sync_point: bool) -> bool:
        """One process stops when signalled; ranks all-reduce the signal numbers at sync points,
        so a stop or save signal that reached any rank acts on every rank at the same step."""
        if not self.dist.distributed:
            return stop.requested
        if not at_sync_point:
            return False
        # one collective for both: a stop (which saves anyway) outranks a save-only signal
        both = D.all_reduce_max(
            int(stop.signum or 0) * 256 + int(stop.save_signum or 0), self.dist.device
        )
        signum, save_signum = divmod(both, 256)
        if signum:
            stop.signum = stop.signum or signum
        elif save_signum:
            stop.save_signum = stop.save_signum or save_signum
        return bool(signum)

    def _optimizer_step(self, log_now: bool) -> torch.Tensor | None:
        grad_norm = optimizer_step(
            self.model,
            self.optimizer,
            self.scheduler,
            self.scaler,
            grad_clip=self.cfg.trainer.grad_clip,
            measure_norm=log_now,
        )
        if self.ema is not None and (self.step + 1) % self.ema.every == 0:
            self.ema.update_parameters(self.model)
        return grad_norm

    def _check_finite(self, loss_sum: torch.Tensor, where: str) -> None:
        """Every rank calls this at the same step; the sum over ranks is non-finite when any
        rank's is, so all ranks stop together with the same message."""
        if self.scaler is not None:  # a non-finite loss is a skipped step
            return
        loss_sum = D.all_reduce_sum(loss_sum.detach().clone())
        if not torch.isfinite(loss_sum).item():
            raise NonFiniteLossError(
                self._non_finite_message("training loss became", loss_sum.item(), where)
            )

    def _non_finite_message(self, what: str, value: float, where: str) -> str:
        return (
            f"{what} {value} {where} (model {self.cfg.model.name}, "
            f"lr {self.optimizer.param_groups[0]['lr']:.3g}); stopping without saving. "
            "Lower optim.lr, set trainer.grad_clip, or use trainer.precision=32."
        )

    def _evaluate(self) -> dict[str, Any]:
        """Validation figures of the weights, and under "ema" those of the EMA (or None)."""
        t, device = self.cfg.trainer, self.dist.device
        val: dict[str, Any] = evaluate_model(
            self.model, self.data.val, device, t.precision, t.channels_last
        )
        val["ema"] = None
        if self.ema is not None:
            val["ema"] = evaluate_model(
                self.ema.module, self.data.val, device, t.precision, t.channels_last
            )
        return val

    def _validate_and_save(
        self,
        epoch_time: float,
        seen: int,
        finished_epoch: bool,
        train: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        t = self.cfg.trainer
        # the run ends here (or pauses inside an epoch): always evaluate and save
        last = not finished_epoch or self.epoch >= t.epochs or self._reached_max_steps()
        val: dict[str, Any] = {}
        if last or self.epoch % t.eval_every == 0:
            self._share_buffers()
            val = self._evaluate()
            if not math.isfinite(val["loss"]):
                raise NonFiniteLossError(
                    self._non_finite_message(
                        "validation loss became", val["loss"], f"at step {self.step}"
                    )
                )
            # a partial epoch (stopped by max_steps) is named by the epoch it ran in
            epoch = self.epoch if finished_epoch else self.epoch + 1
            self._log_validation(val, train, epoch, finished_epoch, epoch_time, seen)
            score = val["ema"]["top1"] if self.best_by == "ema" else val["top1"]
            if score > self.best:
                self.best, self.best_epoch = score, epoch
                self._save("best.pt")
        if last or self.epoch % t.save_every == 0:
            self._save("last.pt")
        return val

    def _log_validation(
        self,
        val: dict[str, Any],
        train: dict[str, float] | None,
        epoch: int,
        finished_epoch: bool,
        epoch_time: float,
        seen: int,
    ) -> None:
        """The validation figures to TensorBoard and the epoch's line to the log."""
        ema = val["ema"]
        scalars = {"val/loss": val["loss"], "val/acc": val["top1"], "val/top5": val["top5"]}
        if ema is not None:
            scalars.update(
                {
                    "val_ema/loss": ema["loss"],
                    "val_ema/acc": ema["top1"],
                    "val_ema/top5": ema["top5"],
                }
            )
        scalars.update(
            {
                "perf/epoch_time_s": epoch_time,
                "perf/epoch_images_per_s": seen * self.dist.world_size / max(epoch_time, 1e-9),
            }
        )
        self.tb.scalars(scalars, self.step)
        where = f"epoch {epoch}/{self.cfg.trainer.epochs}" + (
            "" if finished_epoch else f" (partial, {self.samples_in_epoch} images)"
        )
        log.info(
            "%s step %d: %s | %s%s | %.1fs",
            where,
            self.step,
            _figures("train", train, top5=False),
            _figures("val", val),
            f" | {_figures('EMA val', ema)}" if ema is not None else "",
            epoch_time,
        )

    def _share_buffers(self) -> None:
        """Rank 0's batch-norm statistics (and EMA's) to every rank before evaluation. The EMA
        module's own buffers only: AveragedModel's counter `n_averaged` is a host tensor that
        NCCL cannot send, and it is the same on every rank anyway."""
        D.broadcast_buffers(self.model)
        if self.ema is not None:
            D.broadcast_buffers(self.ema.module)

    def _final_metrics(self, train_stats, val, wall) -> dict[str, Any]:
        cfg = self.cfg
        ema = val.get("ema") or {}
        return {
            "status": "finished",  # a failed sweep job writes status "failed" and the reason
            "best_val_top1": self.best,
            "best_epoch": self.best_epoch,
            "best_by": self.best_by,
            "val_top1": val.get("top1"),
            "val_top5": val.get("top5"),
            "val_loss": val.get("loss"),
            "val_ema_top1": ema.get("top1"),
            "val_ema_top5": ema.get("top5"),
            "val_ema_loss": ema.get("loss"),
            "val_samples": val.get("n"),
            "train_loss": train_stats.get("loss"),
            "train_top1": train_stats.get("top1"),
            "epochs": self.epoch,
            "steps": self.step,
            "steps_per_epoch": self.layout["steps_per_epoch"],  # TensorBoard steps -> epochs
            "train_time_s": round(self.train_time, 3),
            "wall_time_s": round(wall, 3),
            "images_per_s": self.images_seen * self.dist.world_size / max(self.train_time, 1e-9),
            "num_params": self.num_params,
            # both conventions: torchvision's docs' "GFLOPS" are gmacs; gflops = 2 x gmacs
            "gmacs": count_macs(self.model, self.data.image_size, self.data.in_chans) / 1e9,
            "gflops": count_flops(self.model, self.data.image_size, self.data.in_chans) / 1e9,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "overrides": self.overrides,
            # image files skipped as unreadable (this process's shard)
            "bad_images": unreadable_images(self.data.train, self.data.val),
        }


def _figures(name: str, stats: dict[str, float] | None, top5: bool = True) -> str:
    if not stats:
        return f"{name}: -"
    text = f"{name} loss {stats['loss']:.4f} top-1 {stats['top1']:.2f}%"
    return text + (f" top-5 {stats['top5']:.2f}%" if top5 else "")


def record_resolved(cfg: DictConfig, data, model: nn.Module) -> None:
    """With pretrained weights, write the stem and statistics they chose into the config that
    checkpoints store, so evaluation and export rebuild the same network without the weights."""
    if not cfg.model.get("pretrained"):
        return
    if cfg.model.get("stem") in (None, "auto") and hasattr(model, "stem_type"):
        cfg.model.stem = model.stem_type
    if not cfg.data.get("mean"):
        cfg.data.mean, cfg.data.std = list(data.mean), list(data.std)


def stop_message(signum: int, step: int, out: Path) -> str:
    """What stopped the run and the command that continues it."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    what = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else f"{name} (signal {signum})"
    return (
        f"stopped by {what} at step {step}; last.pt written. To continue, {continue_command(out)}"
    )
