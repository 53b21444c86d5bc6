"""`trainer.global_batch_size`: a recipe states its global batch (what its source trained with),
and each process's batch is derived from the world size, so the recipe is the same on 1, 4 or 8
GPUs (and optim.lr, stated for optim.base_batch_size images, stays the rate the source used)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from ..config import ConfigError

log = logging.getLogger(__name__)


def derive_batch_size(t: DictConfig, world_size: int) -> int:
    """With `trainer.global_batch_size` set, write `trainer.batch_size` = global / (ranks x
    accumulated micro-batches) into `t` (the config checkpoints store) and log both; refuse a
    global batch that does not divide. Without it, `trainer.batch_size` is per process as given.
    Returns the per-process batch."""
    total = t.get("global_batch_size")
    if total is None:
        return int(t.batch_size)
    accumulate = int(t.accumulate_grad_batches)
    parts = world_size * accumulate
    if total % parts:
        raise ConfigError(
            f"trainer.global_batch_size={total} is not valid with {world_size} process(es) x "
            f"trainer.accumulate_grad_batches={accumulate}; accepted: a multiple of {parts} "
            f"(e.g. {max(parts, total // parts * parts)}), or another world size or accumulation"
        )
    t.batch_size = total // parts
    log.info(
        "trainer.global_batch_size %d: %d images a process x %d process(es) x %d accumulated",
        total,
        t.batch_size,
        world_size,
        accumulate,
    )
    return int(t.batch_size)
