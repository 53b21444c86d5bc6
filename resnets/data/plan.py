"""How an epoch is cut into optimizer steps: the one rule that accumulation and DDP share.

Each epoch draws a permutation of the n training samples from (seed, epoch). A step takes
`per_step = batch_size x accumulate x world_size` consecutive samples of it, cut into
`accumulate x world_size` micro-batches of `batch_size`: global micro-batch m of the step goes to
rank m % world_size as that rank's micro-batch m // world_size. So one process accumulating N
micro-batches and N processes each taking one see the same micro-batches in every step.

The samples left after the last whole step (fewer than `per_step`):
- `drop_last=True`: left out of this epoch (the next epoch's permutation differs).
- `drop_last=False`: one last, smaller step, cut into `accumulate x world_size` equal micro-batches
  of `left // (accumulate x world_size)` samples; the fewer than `accumulate x world_size` samples
  that do not divide evenly are left out. Equal micro-batches make the mean of the micro-batch
  losses the mean over the step, so the short step is weighted like any other.

A resumed epoch continues from a sample position (`start`), not a batch count, so it can continue
with another batch size, accumulation or world size; a run that never changes them sees the same
micro-batches either way. Augmentation randomness is a function of (seed, epoch, position in the
permutation) alone, so it does not depend on batch size, workers or ranks either.
"""

from __future__ import annotations

import numpy as np
import torch


def micro_batches(
    n: int,
    start: int = 0,
    *,
    batch_size: int,
    accumulate: int = 1,
    world_size: int = 1,
    drop_last: bool = True,
) -> list[tuple[int, int]]:
    """(offset, size) in the epoch's permutation of every global micro-batch from `start` on."""
    parts = accumulate * world_size
    per_step = batch_size * parts
    whole = max(n - start, 0) // per_step
    out = [(start + m * batch_size, batch_size) for m in range(whole * parts)]
    left = n - start - whole * per_step
    if not drop_last and left >= parts:
        size, base = left // parts, start + whole * per_step
        out += [(base + i * size, size) for i in range(parts)]
    return out


def rank_micro_batches(
    n: int,
    start: int = 0,
    *,
    batch_size: int,
    accumulate: int = 1,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> list[tuple[int, int]]:
    """This rank's share of `micro_batches`: `accumulate` of them per step, in order."""
    every = micro_batches(
        n,
        start,
        batch_size=batch_size,
        accumulate=accumulate,
        world_size=world_size,
        drop_last=drop_last,
    )
    return every[rank::world_size]


def steps_in_epoch(
    n: int,
    start: int = 0,
    *,
    batch_size: int,
    accumulate: int = 1,
    world_size: int = 1,
    drop_last: bool = True,
) -> int:
    """Optimizer steps from sample `start` to the end of the epoch."""
    parts = accumulate * world_size
    left = max(n - start, 0)
    whole, rest = divmod(left, batch_size * parts)
    return whole + (1 if not drop_last and rest >= parts else 0)


def mix_seeds(*words: int) -> int:
    """A well-mixed 63-bit number from integers (numpy's SeedSequence), for generator seeds."""
    entropy = [int(w) % 2**64 for w in words]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at `position` of epoch `epoch`'s permutation."""
    return mix_seeds(seed, epoch, position, 0x5A)


def augment_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """One generator per epoch (on `device`) for batched augmentation parameters, indexed by
    position."""
    return torch.Generator(device=device).manual_seed(mix_seeds(seed, epoch, 0xA5))
