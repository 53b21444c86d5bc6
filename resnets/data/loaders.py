"""Two loaders with one interface: `__len__`, `__iter__` and `set_epoch(epoch, start_sample=0)`.

TensorLoader keeps a whole uint8 dataset on the training device and augments each batch with a
few batched tensor ops (airbench's idea): no workers, no per-sample Python. SamplerLoader wraps a
torchvision DataLoader for datasets that do not fit in memory. For training, both cut each epoch
as `resnets.data.plan` says (order from (seed, epoch), steps of batch x accumulation x ranks) and
draw each sample's augmentation from (seed, epoch, its position), so a resumed run, with or
without loader workers and with any batch size or world size, sees what an uninterrupted one would.
With `repeats` >= 2 (data.repeated_aug) the plan's positions take the repeated-augmentation order
of resnets.data.repeated instead of the bare permutation (`epoch_order`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .normalize import Normalize, upsample
from .plan import EpochPlan, augment_generator, epoch_generator, sample_seed
from .repeated import repeated_order

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class Loader(Protocol):
    """What the trainer and evaluation use of a train or val loader (`DataBundle.train/val`):
    (images, labels) batches, how many the next pass yields on this rank, and where it starts."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None: ...


def epoch_order(
    plan: EpochPlan, start: int = 0, *, seed: int, epoch: int, repeats: int = 0
) -> torch.Tensor:
    """The training order of epoch `epoch`: position p of `plan` takes sample order[p]. A seeded
    permutation, or with `repeats` >= 2 that permutation's repeated-augmentation order
    (resnets.data.repeated), valid from position `start` on."""
    order = torch.randperm(plan.n, generator=epoch_generator(seed, epoch))
    return repeated_order(order, plan, start, repeats=repeats) if repeats >= 2 else order


def shard_indices(
    n: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    even: bool,
    chunk: int = 1,
) -> torch.Tensor:
    """This rank's sample indices for one epoch of a seeded permutation.

    Training (`even`): the permutation is cut into chunks of `chunk` (the per-rank batch) and dealt
    round-robin, so step k of W ranks uses the same W batches that one process accumulating W
    micro-batches uses; every rank gets the same count. Evaluation: rank r gets samples r, r+W, ...
    with no padding, so the shards together hold every sample exactly once.
    """
    order = (
        torch.randperm(n, generator=epoch_generator(seed, epoch)) if shuffle else torch.arange(n)
    )
    if not even:
        return order[rank::world_size]
    rounds = n // (chunk * world_size)
    dealt = rounds * chunk * world_size
    whole = order[:dealt].view(rounds, world_size, chunk)[:, rank].reshape(-1)
    tail = order[dealt:]  # fewer than one chunk per rank: split evenly, the rest dropped
    tail = tail[: len(tail) - len(tail) % world_size][rank::world_size]
    return torch.cat([whole, tail])


def shard_size(n: int, *, rank: int, world_size: int, even: bool, chunk: int = 1) -> int:
    """len(shard_indices(n, ...)) with the same arguments, counted without drawing the order."""
    if not even:
        return len(range(rank, n, world_size))
    rounds = n // (chunk * world_size)
    tail = n - rounds * chunk * world_size
    return rounds * chunk + tail // world_size


def crop(
    images: torch.Tensor,
    padding: int,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """The crop at offsets (dy, dx) of the zero-padded images, mirrored where `flip` (all on the
    images' device)."""
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4) if padding else images
    cols = torch.arange(w, device=device).expand(b, w)
    if flip is not None:
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    rows = dy[:, None] + torch.arange(h, device=device)  # (B, H)
    cols = dx[:, None] + cols  # (B, W)
    pixel = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(b, 1, h * w)
    pixel = pixel.expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, pixel).view(b, c, h, w)


def cutout(
    images: torch.Tensor,
    size: int,
    gen: torch.Generator | None = None,
    centres: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Zero one size x size square per image (DeVries & Taylor 2017), centres anywhere in the image
    (drawn from `gen`, or given as `centres`)."""
    b, _, h, w = images.shape
    if centres is None:
        centres = (
            torch.randint(0, h, (b,), generator=gen, device=images.device),
            torch.randint(0, w, (b,), generator=gen, device=images.device),
        )
    cy, cx = centres
    ys = torch.arange(h, device=images.device)[None, :]
    xs = torch.arange(w, device=images.device)[None, :]
    in_y = (ys >= (cy[:, None] - size // 2)) & (ys < (cy[:, None] - size // 2 + size))
    in_x = (xs >= (cx[:, None] - size // 2)) & (xs < (cx[:, None] - size // 2 + size))
    mask = in_y[:, :, None] & in_x[:, None, :]
    return images.masked_fill(mask[:, None], 0)


class TensorLoader:
    """Batches from a uint8 tensor dataset resident on `device`, augmented as whole batches."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        train: bool,
        seed: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        cutout: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
        resize: int | None = None,
        repeats: int = 0,
    ) -> None:
        device = torch.device(device)
        self.repeats = repeats  # repeated augmentation in training (resnets.data.repeated)
        self.images = images.to(device)
        self.resize = resize  # upsample each batch on the device (CIFAR for ImageNet weights)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.cutout = cutout
        self.drop_last = drop_last and train
        self.rank, self.world_size, self.accumulate = rank, world_size, accumulate
        self.plan = EpochPlan(len(labels), batch_size, accumulate, world_size, self.drop_last)
        self.normalize = Normalize(mean, std, device)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        """The next pass yields epoch `epoch` from sample `start_sample` of its permutation
        (all ranks' samples counted)."""
        self.epoch, self.start = epoch, start_sample

    def _plan(self) -> list[tuple[int, int]]:
        return self.plan.rank_micro_batches(self.rank, self.start)

    def _indices(self) -> torch.Tensor:
        return shard_indices(
            len(self.labels),
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            even=self.train,
            chunk=self.batch_size,
        )

    def __len__(self) -> int:
        """Batches the next pass yields on this rank."""
        if self.train:
            return self.plan.rank_batches(self.start)
        shard = shard_size(len(self.labels), rank=self.rank, world_size=self.world_size, even=False)
        return -(-shard // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if not self.train:
            indices = self._indices()
            if self.device.type == "cuda":  # once an epoch, and without waiting for the copy
                indices = indices.pin_memory().to(self.device, non_blocking=True)
            for b in range(0, len(indices), self.batch_size):
                idx = indices[b : b + self.batch_size]
                yield self._finish(self.images[idx]), self.labels[idx]
            return
        start, plan, self.start = self.start, self._plan(), 0  # a resumed start: one pass only
        order = epoch_order(
            self.plan, start, seed=self.seed, epoch=self.epoch, repeats=self.repeats
        )
        if self.device.type == "cuda":  # once an epoch, and without waiting for the copy
            order = order.pin_memory().to(self.device, non_blocking=True)
        params = self._augment_params()  # drawn on the device: no per-step host copies
        for offset, size in plan:
            idx = order[offset : offset + size]
            images = self.augment(
                self.images[idx], {k: v[offset : offset + size] for k, v in params.items()}
            )
            yield self._finish(images), self.labels[idx]

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise (and resize to what pretrained weights expect, with `resize`)."""
        images = self.normalize(images)
        return upsample(images, self.resize) if self.resize else images

    def generator(self) -> torch.Generator:
        """This epoch's augmentation generator, on the data's device."""
        return augment_generator(self.seed, self.epoch, device=self.device)

    def _augment_params(self) -> dict[str, torch.Tensor]:
        """Every position's crop offsets, flip and cutout centre for this epoch, drawn at once on
        the data's device; a batch takes the slice of its positions."""
        n, (h, w) = len(self.labels), self.images.shape[-2:]
        gen, on = self.generator(), dict(device=self.device)
        return {
            "dy": torch.randint(0, 2 * self.crop_padding + 1, (n,), generator=gen, **on),
            "dx": torch.randint(0, 2 * self.crop_padding + 1, (n,), generator=gen, **on),
            "flip": torch.rand(n, generator=gen, **on) < 0.5,
            "cy": torch.randint(0, h, (n,), generator=gen, **on),
            "cx": torch.randint(0, w, (n,), generator=gen, **on),
        }

    def augment(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.crop_padding or self.hflip:
            flip = params["flip"] if self.hflip else None
            images = crop(images, self.crop_padding, params["dy"], params["dx"], flip)
        if self.cutout:
            images = cutout(images, self.cutout, centres=(params["cy"], params["cx"]))
        return images


class EvalShards(Sampler[int]):
    """One rank's evaluation samples: rank, rank + W, rank + 2W, ... of the split, the same
    every epoch. DistributedSampler pads shards with repeated samples; this does not, so summing
    counts over ranks counts every sample once."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        """Evaluation always reads the whole split in one order."""

    def __len__(self) -> int:
        return shard_size(self.n, rank=self.rank, world_size=self.world_size, even=False)

    def __iter__(self) -> Iterator[int]:
        indices = shard_indices(
            self.n,
            shuffle=False,
            seed=0,
            epoch=0,
            rank=self.rank,
            world_size=self.world_size,
            even=False,
        )
        return iter(indices.tolist())


class PlannedBatches(Sampler[list[tuple[int, int]]]):
    """Training batches of one rank as `resnets.data.plan` cuts the epoch: lists of
    (sample index, augmentation seed), so a batch's randomness travels with it to any worker."""

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        batch_size: int,
        accumulate: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        repeats: int = 0,
    ) -> None:
        self.n, self.seed, self.rank, self.repeats = n, seed, rank, repeats
        self.plan = EpochPlan(n, batch_size, accumulate, world_size, drop_last)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.epoch, self.start = epoch, start_sample

    def _plan(self) -> list[tuple[int, int]]:
        return self.plan.rank_micro_batches(self.rank, self.start)

    def __len__(self) -> int:
        return self.plan.rank_batches(self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        start, plan, self.start = self.start, self._plan(), 0  # a resumed start: one pass only
        order = epoch_order(
            self.plan, start, seed=self.seed, epoch=self.epoch, repeats=self.repeats
        )
        order = order.tolist()
        for offset, size in plan:
            yield [
                (order[p], sample_seed(self.seed, self.epoch, p))
                for p in range(offset, offset + size)
            ]


class SeededSamples(Dataset):
    """dataset[i] with torch's generator seeded by the sample's own seed, so the transform draws
    the same numbers in any worker, persistent or not, or in the main process (whose generator
    is left as it was)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class SamplerLoader:
    """A torchvision DataLoader over a map-style dataset, with the TensorLoader's epoch interface."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        workers: int,
        drop_last: bool,
        pin_memory: bool,
        persistent_workers: bool,
        prefetch_factor: int,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
        collate_fn=None,
        repeats: int = 0,
    ) -> None:
        self.batch_size, self.world_size = batch_size, world_size
        self.drop_last = drop_last and train
        self.train = train
        if train:
            self.sampler = PlannedBatches(
                len(dataset),
                seed=seed,
                batch_size=batch_size,
                accumulate=accumulate,
                rank=rank,
                world_size=world_size,
                drop_last=self.drop_last,
                repeats=repeats,
            )
            batching = dict(batch_sampler=self.sampler)
        else:
            self.sampler = EvalShards(len(dataset), rank=rank, world_size=world_size)
            batching = dict(batch_size=batch_size, sampler=self.sampler)
        self.generator = torch.Generator()
        self.seed = seed
        self.loader = DataLoader(
            SeededSamples(dataset) if train else dataset,
            **batching,
            num_workers=workers,
            pin_memory=pin_memory and torch.cuda.is_available(),
            persistent_workers=persistent_workers and workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            generator=self.generator,
            collate_fn=collate_fn,
        )
        self.dataset = dataset

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        """As TensorLoader.set_epoch (training loaders; evaluation keeps one order)."""
        self.sampler.set_epoch(epoch, start_sample)
        # workers' own seeds follow (seed, epoch); augmentation does not use them
        self.generator.manual_seed(int(epoch_generator(self.seed, epoch, salt=7).initial_seed()))

    def __len__(self) -> int:
        """Batches the next pass yields on this rank."""
        if self.train:
            return len(self.sampler)
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)
