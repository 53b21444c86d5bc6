"""`data.loader=dali`: NVIDIA DALI decodes and augments image folders and shards.

On a CUDA device the `mixed` decoder decodes each training image's crop window only (the
random-resized crop fused into nvJPEG's region-of-interest decode), then resize, flip and
normalisation run on the GPU, and batches come out NHWC (channels_last) in `dtype`. Without a GPU
the same graph runs on DALI's CPU operators (`device_id=None`), which is how the tests run.

What DALI does not decide: the order and the randomness. The host reads each sample's bytes in
the order `resnets.data.plan` gives (the same `PlannedBatches` as the torchvision loader: seed,
epoch, rank, accumulation, repeated augmentation, a resumed start) and draws its crop window and
flip from its own seed, `plan.sample_seed(seed, epoch, position)`, with torchvision's
`RandomResizedCrop.get_params` and `RandomHorizontalFlip`'s draw. So the windows and flips equal
the torchvision loader's, and a resumed run decodes exactly what an uninterrupted one would;
DALI only gets them as external-source inputs. Validation geometry is computed the same way
(torchvision's `Resize(resize)` output size and `CenterCrop(crop)` offsets), so only the decoder
and the resampling filter differ from the torchvision loader.

Unreadable files: the host parses each header (PIL, no decode) and fully decodes a JPEG that lacks
its end marker, so a non-image or a truncated file is skipped and counted as in the torchvision
loader (`bad_images.BadImageLoader`). A file whose damage only DALI's decoder finds makes the
batch fail; its files are then decoded with PIL, the bad ones are marked, and the pass restarts
at that batch.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .bad_images import DECODE_ERRORS, MAX_SUBSTITUTES, BadImageLoader, UnreadableImage
from .errors import DataError
from .loaders import EvalShards, PlannedBatches

INSTALL = "pip install 'resnets[dali]'"
DALI_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "PPM", "WEBP", "JPEG2000", "MPO"}
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default, as in the torchvision loader
OUTPUT_DTYPES = (torch.float32, torch.float16)  # DALI has no bfloat16 output


def require_dali() -> None:
    """One line, before any work, when DALI is not installed."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as err:
        raise DataError(
            f"data.loader=dali needs NVIDIA DALI, which is not installed: {INSTALL} "
            "(CUDA 12 wheel; nvidia-dali-cuda130 for CUDA 13); accepted without it: "
            "data.loader=torchvision"
        ) from err


# ----------------------------------------------------------------------------- host side
class EncodedSamples:
    """Encoded bytes and labels of an ImageFolder, a ShardFolder, or a subset of either."""

    def __init__(self, dataset: Any) -> None:
        base, indices = dataset, range(len(dataset))
        if hasattr(dataset, "folder") and hasattr(dataset, "indices"):  # TransformedSubset
            base, indices = dataset.folder, dataset.indices
        self.base, self.indices = base, list(indices)
        self.names = [base.samples[i][0] for i in self.indices]
        self.labels = [int(base.samples[i][1]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> bytes:
        j = self.indices[i]
        if hasattr(self.base, "read_bytes"):  # a shard: random access through its index
            return self.base.read_bytes(j)
        with open(self.names[i], "rb") as f:
            return f.read()


def probe(data: bytes, name: str) -> Image.Image:
    """The image's header (a lazily opened PIL image: size, format), or UnreadableImage for a
    file DALI would fail on: not an image, a format DALI lacks, a JPEG cut short."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in DALI_FORMATS:
            raise OSError(f"{image.format} is not a format DALI decodes")
        if image.format == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
            Image.open(io.BytesIO(data)).load()  # no end marker: is it whole? (PIL says why not)
    except DECODE_ERRORS as err:
        raise UnreadableImage(name, err) from err
    return image


def train_window(image: Image.Image, seed: int, scale: Sequence[float], hflip: bool):
    """(left, top, width, height, flip) as the torchvision loader draws them for this sample:
    RandomResizedCrop's parameters, then RandomHorizontalFlip's draw, from `seed`."""
    from torchvision.transforms import RandomResizedCrop

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(image, list(scale), list(RATIO))
        flip = bool(torch.rand(1) < 0.5) if hflip else False
    return left, top, w, h, flip


def eval_window(width: int, height: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, left, top): torchvision's Resize(resize) (shorter side
    to `resize`, the longer truncated) and CenterCrop(crop) offsets (negative: padding)."""
    short, long = sorted((width, height))
    new_long = int(resize * long / short)
    w, h = (resize, new_long) if width <= height else (new_long, resize)

    def offset(side: int) -> int:
        return round((side - crop) / 2.0) if side >= crop else -((crop - side) // 2)

    return w, h, offset(w), offset(h)


@dataclass
class HostBatch:
    number: int  # place in this pass
    indices: list[int]
    seeds: list[int]
    labels: list[int]
    data: list[np.ndarray]
    params: list[tuple]
    bad: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- the loader
class DaliLoader:
    """Batches (images NHWC-strided NCHW, labels, unreadable files) decoded by DALI; the order and
    every random draw from `resnets.data.plan`, the interface of `loaders.SamplerLoader`."""

    def __init__(
        self,
        samples: EncodedSamples,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        size: int,
        resize: int = 0,
        scale: Sequence[float] = (0.08, 1.0),
        hflip: bool = True,
        device: torch.device | str = "cpu",
        workers: int = 1,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
        repeats: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in OUTPUT_DTYPES:
            raise DataError(f"DALI output dtype {dtype} is not valid; accepted: {OUTPUT_DTYPES}")
        self.samples, self.train, self.seed = samples, train, seed
        self.batch_size, self.world_size = batch_size, world_size
        self.size, self.resize, self.scale, self.hflip = size, resize, tuple(scale), hflip
        self.mean, self.std, self.dtype = tuple(mean), tuple(std), dtype
        self.device, self.threads = torch.device(device), max(1, int(workers))
        if train:
            self.sampler: Any = PlannedBatches(
                len(samples),
                seed=seed,
                batch_size=batch_size,
                accumulate=accumulate,
                rank=rank,
                world_size=world_size,
                drop_last=drop_last,
                repeats=repeats,
            )
        else:
            self.sampler = EvalShards(len(samples), rank=rank, world_size=world_size)
        self.epoch, self.start = 0, 0
        self.known_bad: dict[int, str] = {}  # sample -> "name (reason)", found by a failed batch
        self._pipe, self._clean = None, False
        self._feed: Iterator[HostBatch] = iter(())
        self._pending: deque[HostBatch] = deque()

    # -- the epoch interface
    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.epoch, self.start = epoch, start_sample

    def __len__(self) -> int:
        if self.train:
            self.sampler.set_epoch(self.epoch, self.start)
            return len(self.sampler)
        return -(-len(self.sampler) // self.batch_size)

    def _planned(self, start: int) -> Iterator[list[tuple[int, int]]]:
        """This pass's batches as (sample, augmentation seed) lists."""
        if self.train:
            self.sampler.set_epoch(self.epoch, start)
            yield from self.sampler
            return
        indices = list(self.sampler)
        for b in range(0, len(indices), self.batch_size):
            yield [(i, 0) for i in indices[b : b + self.batch_size]]

    # -- host preparation
    def _read(self, i: int) -> tuple[bytes, Image.Image]:
        if i in self.known_bad:
            raise UnreadableImage(self.samples.names[i], OSError(self.known_bad[i]))
        data = self.samples.read(i)
        return data, probe(data, self.samples.names[i])

    def _host_batches(self, start: int, first: int = 0) -> Iterator[HostBatch]:
        """The pass from sample `start` of the epoch's order, from its batch `first` on."""
        n = len(self.samples)
        for number, planned in enumerate(self._planned(start)):
            if number < first:
                continue
            batch = HostBatch(number, [], [], [], [], [])
            for index, seed in planned:
                tries = MAX_SUBSTITUTES if self.train else 1  # as bad_images.SkipUnreadable
                for k in range(tries):
                    i = (index + k) % n
                    try:
                        data, image = self._read(i)
                    except UnreadableImage as err:
                        batch.bad.append(str(err))
                        continue
                    batch.indices.append(i)
                    batch.seeds.append(seed)
                    batch.labels.append(self.samples.labels[i])
                    batch.data.append(np.frombuffer(data, np.uint8))
                    batch.params.append(self._params(image, seed))
                    break
            yield batch

    def _params(self, image: Image.Image, seed: int) -> tuple:
        if self.train:
            return train_window(image, seed, self.scale, self.hflip)
        return eval_window(*image.size, self.resize, self.size)

    def _next_inputs(self):
        """DALI's external source: the next non-empty batch's bytes and geometry."""
        carried: list[str] = []
        for batch in self._feed:
            if not batch.data:  # every image unreadable (evaluation drops them): report later
                carried += batch.bad
                continue
            batch.bad = carried + batch.bad
            self._pending.append(batch)
            p = np.asarray(batch.params, np.float32)
            if self.train:  # anchor (x, y), shape (w, h), flip
                flips = [np.array(f, np.int32) for f in p[:, 4]]
                return batch.data, list(p[:, 0:2]), list(p[:, 2:4]), flips
            sizes = [(np.array(w), np.array(h)) for w, h in p[:, 0:2]]  # resized (w, h)
            return batch.data, *map(list, zip(*sizes, strict=True)), list(p[:, 2:4])
        if carried:
            self._pending.append(HostBatch(-1, [], [], [], [], [], carried))
        raise StopIteration

    # -- the DALI side
    def _build(self):
        from .dali_pipeline import build_pipeline

        return build_pipeline(self)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        start, self.start, first = self.start, 0, 0  # a resumed start: one pass only
        while True:
            try:
                yield from self._pass(start, first)
                return
            except RuntimeError as err:  # DALI's decoder met a file PIL's header check let by
                first = self._mark_failed_batch(err)

    def _pass(self, start: int, first: int):
        self._feed, self._pending = self._host_batches(start, first), deque()
        if self._pipe is None or not self._clean:
            self._pipe = None  # a pass left half-way: its prefetched batches are stale
            self._pipe = self._build()
        else:
            self._pipe.reset()
        self._clean = False
        from .dali_pipeline import to_torch

        while True:
            try:
                outputs = self._pipe.run()
            except StopIteration:
                break
            batch = self._pending.popleft()
            images = to_torch(outputs[0], self.device, self.dtype)
            yield images, torch.tensor(batch.labels, dtype=torch.long), batch.bad
        for batch in self._pending:  # the unreadable files of batches that held no image
            yield torch.empty(0), torch.empty(0, dtype=torch.long), batch.bad
        self._clean = True

    def _mark_failed_batch(self, err: RuntimeError) -> int:
        """Decode the in-flight batches' files with PIL; mark the bad ones and return the batch
        to restart at, or raise DataError naming the files when PIL reads them all."""
        found = False
        for batch in self._pending:
            for i in batch.indices:
                try:
                    Image.open(io.BytesIO(self.samples.read(i))).convert("RGB")
                except DECODE_ERRORS as bad:
                    self.known_bad[i] = str(bad).splitlines()[0] or type(bad).__name__
                    found = True
        if not found:
            names = [self.samples.names[i] for b in self._pending for i in b.indices][:3]
            lines = [line for line in str(err).splitlines() if line.strip()]
            said = next((line for line in lines if "Critical error" not in line), "")
            raise DataError(
                f"DALI could not decode a batch holding {', '.join(names)}, ... ({said.strip()}); "
                "accepted: data.loader=torchvision"
            ) from err
        self._pipe, self._clean = None, False
        return self._pending[0].number  # the first batch not yet yielded


def dali_loaders(
    cfg: Any,
    train_set: Any,
    eval_set: Any,
    batching: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    size: int,
    val_resize: int,
    val_crop: int,
    device: torch.device,
    workers: int,
    where: tuple[str, str],
    dtype: torch.dtype = torch.float32,
) -> tuple[BadImageLoader, BadImageLoader]:
    """The (train, val) DALI loaders of an image folder or shard split, with unreadable files
    counted as the torchvision loader counts them; `where` names the two splits in messages."""
    require_dali()
    aug = cfg["augment"]
    if aug["auto_augment"] or aug["random_erasing"] or cfg["gpu_decode"]:
        raise DataError(
            "data.loader=dali does random-resized crop and flip (on the GPU when there is one); "
            "data.augment.auto_augment, data.augment.random_erasing and data.gpu_decode need "
            "data.loader=torchvision"
        )
    b = batching
    common = dict(
        seed=b.seed,
        rank=b.rank,
        world_size=b.world_size,
        mean=mean,
        std=std,
        device=device,
        workers=workers,
        dtype=dtype,
    )
    train = DaliLoader(
        EncodedSamples(train_set),
        batch_size=b.batch_size,
        train=True,
        size=size,
        scale=tuple(aug["random_resized_crop_scale"]),
        hflip=bool(aug["hflip"]),
        drop_last=b.drop_last,
        accumulate=b.accumulate,
        repeats=b.repeats,
        **common,
    )
    val = DaliLoader(
        EncodedSamples(eval_set),
        batch_size=b.eval_batch_size,
        train=False,
        size=val_crop,
        resize=val_resize,
        drop_last=False,
        **common,
    )
    limit = float(cfg["max_bad_images"])
    return (
        BadImageLoader(train, size=len(train_set), max_fraction=limit, where=where[0]),
        BadImageLoader(val, size=len(eval_set), max_fraction=limit, where=where[1]),
    )


def refuse_in_memory(*_args: Any, **_keywords: Any):
    """LOADERS' entry for in-memory datasets: DALI reads image files (build_data checks first)."""
    raise DataError(
        "data.loader=dali decodes image files (data=imagefolder, imagenet, shards); "
        "accepted for in-memory datasets: tensor, torchvision, auto"
    )
