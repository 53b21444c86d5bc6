"""Repeated augmentation (`data.repeated_aug`): each image `repeats` times in a row, spread over ranks.

Hoffer et al. 2020 ("Augment your batch") and DeiT; torchvision's V2 ResNet-50 recipe trains with
`--ra-sampler --ra-reps 4` (references/classification/sampler.py, RASampler). Its rule, kept here:
the epoch's permutation with every index repeated `repeats` times in a row is dealt element by
element round-robin, element k to rank k mod W, so the copies of one image go to different ranks
(different augmentations of it in one step). The epoch keeps its length: torchvision keeps about
n / W samples a rank (floor(n // 256 * 256 / W)); here each rank takes the share of an epoch of n
positions that `resnets.data.plan` gives it without repeated augmentation, so an epoch has the
same steps and schedule either way and holds about n / repeats distinct images.

How the dealt streams meet the plan: the plan cuts the epoch's n positions into micro-batches and
gives global micro-batch m to rank m mod W; each rank fills its micro-batches, in order, from its
own stream. Position `start` (a step boundary, where each rank has taken start / W of its stream)
continues every stream at start / W, so a resumed epoch, with the same world size and any batch
size or accumulation, continues the streams exactly. The order depends on (seed, epoch, repeats,
world size) only.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import DataError
from .plan import EpochPlan


def check_repeats(value: Any) -> int:
    """data.repeated_aug as an int: 0 or 1 mean off."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(
            f"data.repeated_aug={value!r} is not valid; accepted: 0 or 1 (off), or the copies of "
            "each image an epoch holds, an integer >= 2 (torchvision's V2 recipe: 4)"
        )
    return value


def rank_streams(order: torch.Tensor, repeats: int, world_size: int, length: int) -> torch.Tensor:
    """(world_size, length): each rank's samples in order. `order` with each index `repeats`
    times in a row (from its start again past its end, as torchvision pads), element k dealt to
    rank k mod world_size."""
    repeated = order.repeat_interleave(repeats)
    need = world_size * length
    if need > len(repeated):
        repeated = repeated.repeat(-(-need // len(repeated)))
    return repeated[:need].view(length, world_size).T


def repeated_order(
    order: torch.Tensor, plan: EpochPlan, start: int = 0, *, repeats: int
) -> torch.Tensor:
    """The epoch's n positions from `start` on, filled for repeated augmentation: `plan`'s
    micro-batches from `start`, each from its rank's stream in turn, every stream continuing at
    start // world_size. Positions the plan does not use keep `order` (never read)."""
    world = plan.world_size
    batches = plan.micro_batches(start)
    first = start // world
    per_rank = sum(size for _, size in batches[::world])  # the same on every rank
    streams = rank_streams(order, repeats, world, first + per_rank)
    out, cursor = order.clone(), first
    # at most two runs of equal micro-batches (whole steps, then a short last step), each a
    # multiple of world_size long and contiguous in the epoch: deal each in one reshape
    for size in dict.fromkeys(size for _, size in batches):
        run = [offset for offset, s in batches if s == size]
        rounds = len(run) // world  # micro-batches per rank in this run
        take = streams[:, cursor : cursor + rounds * size].reshape(world, rounds, size)
        out[run[0] : run[0] + len(run) * size] = take.transpose(0, 1).reshape(-1)
        cursor += rounds * size
    return out
