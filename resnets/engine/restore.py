"""Resume: find the checkpoint to continue from and move a set-up trainer to its place.

Settings that changed since the checkpoint are honoured from the current step and logged
(resnets/engine/resume.py lays the schedule out again); what cannot be honoured raises before
anything changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..data.plan import mix_seeds
from . import resume as R
from .best import resume_best
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    move_aside,
    remove_stale_temporaries,
    restore_rng,
    set_aside_previous,
)
from .ema import EMA
from .setup import build_schedule, seed_everything
from .state_fit import mismatch

log = logging.getLogger("resnets.engine.trainer")


def resume(trainer: Any) -> None:
    """Continue from ckpt_path, or from this run directory's last.pt under resume=true; a fresh
    start first moves checkpoints it did not write aside."""
    cfg, ckpt_dir = trainer.cfg, trainer.ckpt_dir
    explicit = cfg.ckpt_path
    path = Path(explicit) if explicit else ckpt_dir / "last.pt"
    own = ckpt_dir / "last.pt"
    if trainer.dist.is_main:
        for tmp in remove_stale_temporaries(ckpt_dir):
            log.warning("removed %s, a checkpoint left half-written by a killed run", tmp)
        continuing = (
            cfg.resume and own.exists() and (not explicit or path.resolve() == own.resolve())
        )
        if not continuing:  # this run's saves must not replace checkpoints it did not write
            moved = set_aside_previous(ckpt_dir)
            if moved:
                log.warning(
                    "fresh start: moved checkpoints this run did not write (%s) to %s",
                    ", ".join(moved[1]),
                    moved[0],
                )
    if explicit or (cfg.resume and path.exists()):
        load_state_dict(trainer, _read(trainer, path, bool(explicit)), path)
        log.info("resumed from %s %s, at step %d", path, _place(trainer), trainer.step)
        _reset_hyperparameters(trainer)  # changed lr, weight decay ... apply from here
        build_schedule(trainer)


def _place(trainer: Any) -> str:
    """The resumed position, epochs counted from 1 as in every other line."""
    epochs, samples = trainer.cfg.trainer.epochs, trainer.samples_in_epoch
    if samples:
        size = trainer.settings["train_size"]
        return f"inside epoch {trainer.epoch + 1}/{epochs} ({samples} of {size} images done)"
    return f"after epoch {trainer.epoch}/{epochs}"


def _read(trainer: Any, path: Path, explicit: bool) -> dict[str, Any]:
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        if explicit:
            raise
        # never let this run's first save overwrite the evidence
        aside = move_aside(path) if trainer.dist.is_main else path
        raise CheckpointError(
            path,
            f"{str(err).split(': ', 1)[1]}. Moved it to {aside}; run again to start "
            f"afresh (the other checkpoints in {trainer.ckpt_dir} are then moved to "
            f"previous-<time>/ first, never overwritten), or resume from another file "
            f"with ckpt_path=...",
        ) from err


def load_state_dict(trainer: Any, state: dict[str, Any], path: Path) -> None:
    """Move the trainer to `state`'s place."""
    if int(state["format_version"]) < 2:
        state = R.upgrade_format_1(state, trainer.dist.world_size)
    old_settings = state.get("settings") or {}
    samples = int(state.get("samples_in_epoch", 0))
    R.check_resumable(path, old_settings, trainer.settings, samples)
    try:
        trainer.model.load_state_dict(state["model"])
    except RuntimeError:
        why = mismatch(trainer.model, state["model"], state.get("config"), trainer.cfg.model)
        raise CheckpointError(
            path,
            f"does not fit model {trainer.cfg.model.name!r}: {why}. Resume with the "
            "checkpoint's settings, or start afresh in another directory (hydra.run.dir=...)",
        ) from None
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.samples_in_epoch = samples
    trainer.best_by, trainer.best, trainer.best_epoch = resume_best(
        state, trainer.cfg.trainer.best_by, trainer.ema is not None
    )
    trainer.val_pending = bool(state.get("val_pending", False))
    trainer.train_time = float(state.get("train_time_s", 0.0))
    trainer.wall_before = float(state.get("wall_time_s", trainer.train_time))
    trainer.images_seen = int(state.get("images_seen", 0))
    _load_ema(trainer, state)
    _load_optimizer(trainer, state)
    if trainer.scaler is not None and state.get("scaler") is not None:
        trainer.scaler.load_state_dict(state["scaler"])
    _restore_rng(trainer, state)
    trainer.events.load_state_dict(state.get("callbacks"))
    _relay_schedule(trainer, state, old_settings, samples)
    changed = R.config_changes(state["config"], trainer.cfg, ("optim", "sched"))
    if changed:
        log.warning("%s: in effect from step %d", ", ".join(changed), trainer.step)


def _load_ema(trainer: Any, state: dict[str, Any]) -> None:
    if trainer.ema is None:
        return
    if state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])
        return
    # EMA switched on now: average from the resumed weights on
    trainer.ema = EMA(trainer.model, trainer.cfg.trainer.ema_decay, every=trainer.ema.every)
    log.info("trainer.ema_decay set on resume: the EMA starts from step %d's weights", trainer.step)


def _relay_schedule(trainer: Any, state: dict[str, Any], old: dict, samples: int) -> None:
    """The schedule follows training progress in images: the same curve from here, whatever
    changed (resnets/progress.py); raised epochs stretch what is left of it."""
    trainer.layout, notes = R.resumed_layout(
        state, trainer.settings, epoch=trainer.epoch, samples=samples, step=trainer.step
    )
    for note in notes:
        log.warning(note)


def _load_optimizer(trainer: Any, state: dict[str, Any]) -> None:
    """Keep the optimizer's per-parameter state (momentum, moments); its hyper-parameters
    (lr, weight decay, ...) are this run's config, so a changed value takes effect now."""
    old = OmegaConf.select(OmegaConf.create(state["config"]), "optim.name")
    if old is not None and old != trainer.cfg.optim.name:
        log.warning(
            "optim.name changed from %s to %s: the optimizer state starts afresh",
            old,
            trainer.cfg.optim.name,
        )
        return
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
    except ValueError as err:  # other parameter groups: nothing was loaded
        log.warning("optimizer state does not fit this run (%s): it starts afresh", err)


def _restore_rng(trainer: Any, state: dict[str, Any]) -> None:
    """Each rank gets back its own generators; on another world size each rank is reseeded
    from (seed, step, rank), which is deterministic but not the stream it would have had."""
    world, rank = trainer.dist.world_size, trainer.dist.rank
    saved = state.get("rank_rng") or ([state["rng"]] if state.get("rng") is not None else [])
    if len(saved) == world and (state.get("rank_rng") or world == 1):
        restore_rng(saved[rank])
        return
    seed_everything(mix_seeds(trainer.cfg.seed, trainer.step, rank))
    log.warning(
        "checkpoint holds random generators of %d process(es), this run has %d: each rank "
        "reseeded from (seed, step, rank)",
        len(saved),
        world,
    )


def _reset_hyperparameters(trainer: Any) -> None:
    """Give every parameter group this run's values back (and drop what a schedule added)."""
    for group, values in zip(trainer.optimizer.param_groups, trainer.hyper, strict=True):
        for key in [k for k in group if k != "params" and k not in values]:
            del group[key]
        group.update(values)
