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

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class EpochPlan:
    """How every epoch of `n` samples is cut: steps of `batch_size x accumulate x world_size`."""

    n: int
    batch_size: int
    accumulate: int = 1
    world_size: int = 1
    drop_last: bool = True

    @property
    def parts(self) -> int:
        """Micro-batches a step: `accumulate` on each of `world_size` ranks."""
        return self.accumulate * self.world_size

    def steps(self, start: int = 0) -> int:
        """Optimizer steps from sample `start` to the end of the epoch."""
        whole, rest = divmod(max(self.n - start, 0), self.batch_size * self.parts)
        return whole + (1 if not self.drop_last and rest >= self.parts else 0)

    def micro_batches(self, start: int = 0) -> list[tuple[int, int]]:
        """(offset, size) in the epoch's permutation of every global micro-batch from `start`."""
        parts, per_step = self.parts, self.batch_size * self.parts
        whole = max(self.n - start, 0) // per_step
        out = [(start + m * self.batch_size, self.batch_size) for m in range(whole * parts)]
        left = self.n - start - whole * per_step
        if not self.drop_last and left >= parts:
            size, base = left // parts, start + whole * per_step
            out += [(base + i * size, size) for i in range(parts)]
        return out

    def rank_micro_batches(self, rank: int, start: int = 0) -> list[tuple[int, int]]:
        """Rank `rank`'s share of `micro_batches`: `accumulate` of them per step, in order."""
        return self.micro_batches(start)[rank :: self.world_size]

    def rank_batches(self, start: int = 0) -> int:
        """len(rank_micro_batches(rank, start)) for any rank, counted without listing them."""
        return self.steps(start) * self.accumulate


def epoch_generator(
    seed: int, epoch: int, salt: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator of epoch `epoch`'s training permutation (salt 0) and of the DataLoader's
    worker seeds (salt 7), on `device`.

    Its seed is an affine mix, not `mix_seeds`, only to keep every existing run's sample order:
    moving it to `mix_seeds` would reorder every epoch and change every result (the default
    digits run's included). Every other seed of the package comes from `mix_seeds`."""
    return torch.Generator(device=device).manual_seed(
        (seed * 1_000_003 + epoch * 9_176 + salt) % 2**63
    )


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
