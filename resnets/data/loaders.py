"""Two loaders with one interface: `__len__`, `__iter__` and `set_epoch(epoch, skip_batches)`.

TensorLoader keeps a whole uint8 dataset on the training device and augments each batch with a
few batched tensor ops (airbench's idea): no workers, no per-sample Python. SamplerLoader wraps a
torchvision DataLoader for datasets that do not fit in memory. Both draw each epoch's order from
(seed, epoch) alone, so a resumed run sees the same batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_generator(
    seed: int, epoch: int, salt: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator on `device` seeded by (seed, epoch, salt): a CUDA generator draws on the GPU,
    so augmentation needs no host round trip; on the CPU the numbers are those of before."""
    return torch.Generator(device=device).manual_seed(
        (seed * 1_000_003 + epoch * 9_176 + salt) % 2**63
    )


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


def global_batch_index(batch: int, rank: int, world_size: int) -> int:
    """Which micro-batch of a one-process run this rank's batch is (seeds its augmentation)."""
    return batch * world_size + rank


def random_crop(
    images: torch.Tensor, padding: int, gen: torch.Generator, hflip: bool = False
) -> torch.Tensor:
    """Zero-pad by `padding`, take one random crop per image and mirror about half of them (with
    `hflip`), all in a single gather over the flattened pixels: one pass, contiguous output."""
    b, c, h, w = images.shape
    device = images.device  # `gen` lives there too: every draw and index stays on the device
    padded = F.pad(images, (padding,) * 4) if padding else images
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=device)
    cols = torch.arange(w, device=device).expand(b, w)
    if hflip:
        flip = torch.rand(b, generator=gen, device=device) < 0.5
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    rows = dy[:, None] + torch.arange(h, device=device)  # (B, H)
    cols = dx[:, None] + cols  # (B, W)
    pixel = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(b, 1, h * w)
    pixel = pixel.expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, pixel).view(b, c, h, w)


def cutout(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image (DeVries & Taylor 2017), centres anywhere in the image."""
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b,), generator=gen, device=images.device)
    cx = torch.randint(0, w, (b,), generator=gen, device=images.device)
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
        resize: int | None = None,
    ) -> None:
        device = torch.device(device)
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
        self.rank, self.world_size = rank, world_size
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape) * 255
        self.std = torch.tensor(std, device=device).view(shape) * 255
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

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
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_generator(self, batch: int) -> torch.Generator:
        """The generator of one batch's augmentation: on the data's device, seeded by
        (seed, epoch, global batch index), so a resumed epoch draws what it would have."""
        salt = global_batch_index(batch, self.rank, self.world_size) + 1
        return epoch_generator(self.seed, self.epoch, salt=salt, device=self.device)

    def __iter__(self) -> Iterator[Batch]:
        indices = self._indices()
        if self.device.type == "cuda":  # once an epoch, and without waiting for the copy
            indices = indices.pin_memory().to(self.device, non_blocking=True)
        for b in range(self.skip_batches, len(self)):
            idx = indices[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images[idx]
            if self.train:
                images = self.augment(images, self.batch_generator(b))
            images = (images.float() - self.mean) / self.std
            if self.resize:
                images = F.interpolate(
                    images, size=(self.resize, self.resize), mode="bilinear", antialias=False
                )
            yield images, self.labels[idx]
        self.skip_batches = 0  # a skip applies to one pass only

    def augment(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.crop_padding or self.hflip:
            images = random_crop(images, self.crop_padding, gen, hflip=self.hflip)
        if self.cutout:
            images = cutout(images, self.cutout, gen)
        return images


class EpochSampler(Sampler[int]):
    """DistributedSampler's contract (seeded per-epoch order, shards) plus resuming mid-epoch.

    DistributedSampler pads evaluation shards with repeated samples and cannot start mid-epoch;
    this sampler does neither."""

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int,
        world_size: int,
        even: bool,
        chunk: int = 1,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.even, self.chunk = rank, world_size, even, chunk
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_samples

    def _indices(self) -> torch.Tensor:
        return shard_indices(
            self.n,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            even=self.even,
            chunk=self.chunk,
        )

    def __len__(self) -> int:
        return len(self._indices()) - self.skip

    def __iter__(self) -> Iterator[int]:
        indices = self._indices()[self.skip :].tolist()
        self.skip = 0
        return iter(indices)


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
        collate_fn=None,
    ) -> None:
        self.batch_size = batch_size
        self.drop_last = drop_last and train
        self.sampler = EpochSampler(
            len(dataset),
            shuffle=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            even=train,
            chunk=batch_size,
        )
        self.generator = torch.Generator()
        self.seed = seed
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=self.drop_last,
            pin_memory=pin_memory and torch.cuda.is_available(),
            persistent_workers=persistent_workers and workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            generator=self.generator,
            collate_fn=collate_fn,
        )
        self.dataset = dataset

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.sampler.set_epoch(epoch, skip_batches * self.batch_size)
        # worker augmentation seeds follow (seed, epoch)
        self.generator.manual_seed(int(epoch_generator(self.seed, epoch, salt=7).initial_seed()))

    def __len__(self) -> int:
        """Batches in a whole epoch on this rank (a resumed epoch yields the remainder)."""
        n = len(self.sampler._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)
