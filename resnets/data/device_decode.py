"""JPEG decoding on the training device (`data.gpu_decode=true`).

Loader workers only read the compressed bytes and send each batch as one flat uint8 buffer with
offsets (a few shared-memory descriptors a batch, however large the batch);
`torchvision.io.decode_jpeg(device=...)` decodes the whole batch on the GPU (nvJPEG). What nvJPEG
cannot decode (ILSVRC2012 holds a PNG named .JPEG and CMYK JPEGs) the workers flag and the
CPU decodes with PIL, counted in `DeviceDecodeLoader.cpu_decoded`. Crops and resizes run per image
only where sizes differ (evaluation groups images of one size), then one flip, one normalisation
of the whole batch on the device.

torchvision 0.29 deprecates all of `torchvision.io`'s image decoders (decode_jpeg and decode_image
alike) in favour of TorchCodec; its batched nvJPEG decode is still the one in this stack, so its
DeprecationWarning is silenced where it is called.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import random
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .errors import DataError
from .normalize import Normalize
from .plan import mix_seeds

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG"
# start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def needs_cpu_decode(data: bytes) -> bool:
    """True for what nvJPEG refuses: not a JPEG (a PNG named .JPEG), or a JPEG whose frame has
    four components (CMYK/YCCK). Reads the markers only, up to the frame header."""
    if data[:2] != JPEG_MAGIC:
        return True
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False  # not a marker where one should be: let the decoder judge
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF:
            return i + 9 < len(data) and data[i + 9] == 4  # components after P, Y, X
        if marker == 0xDA:  # start of scan without a frame: leave it to the decoder
            return False
        i += 2 + length
    return False


class EncodedImages(Dataset):
    """(compressed bytes as a uint8 tensor, label, whether the CPU must decode it) per sample of
    an ImageFolder's (path, label) list."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        path, label = self.samples[i]
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise DataError(f"data.gpu_decode=true: {path} is empty")
        tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return tensor, label, needs_cpu_decode(data)


def collate_encoded(
    batch: list[tuple[torch.Tensor, int, bool]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One flat byte buffer, its offsets (n + 1), labels and CPU flags: four tensors a batch, so
    four shared-memory descriptors cross from a worker whatever the batch size."""
    lengths = torch.tensor([len(item[0]) for item in batch], dtype=torch.int64)
    offsets = torch.zeros(len(batch) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    flat = torch.cat([item[0] for item in batch])
    labels = torch.tensor([item[1] for item in batch])
    on_cpu = torch.tensor([item[2] for item in batch], dtype=torch.bool)
    return flat, offsets, labels, on_cpu


def split_encoded(flat: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    return [flat[a:b] for a, b in itertools.pairwise(offsets.tolist())]


def decode_batch(
    data: list[torch.Tensor], on_cpu: list[bool], device: torch.device
) -> tuple[list[torch.Tensor], int]:
    """uint8 RGB CHW images on `device`, and how many the CPU decoded."""
    from torchvision.io import ImageReadMode, decode_jpeg

    images: list[torch.Tensor | None] = [None] * len(data)
    device_idx = [i for i, cpu in enumerate(on_cpu) if not cpu]
    cpu_idx = [i for i, cpu in enumerate(on_cpu) if cpu]
    if device_idx:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            try:
                decoded = decode_jpeg(
                    [data[i] for i in device_idx], mode=ImageReadMode.RGB, device=device
                )
            except RuntimeError:  # the batched call fails whole: find the ones it cannot do
                decoded = []
                for i in device_idx:
                    try:
                        decoded.append(decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device))
                    except RuntimeError:
                        decoded.append(None)
                        cpu_idx.append(i)
        for i, image in zip(device_idx, decoded, strict=True):
            images[i] = image
    for i in cpu_idx:
        images[i] = _pil_decode(data[i]).to(device, non_blocking=True)
    return images, len(cpu_idx)  # type: ignore[return-value]


def _pil_decode(data: torch.Tensor) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            rgb = np.asarray(image.convert("RGB"))
    except OSError as err:
        raise DataError(f"data.gpu_decode=true: an image could not be decoded ({err})") from err
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def random_resized_box(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float], rng: random.Random
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop draws it (10 tries, then the
    centre crop of the clamped ratio), from a seeded host RNG: no device work, exact on resume."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class BatchTransform:
    """The folder pipelines of resnets.data.transforms for a list of decoded images on a device.

    Training: random-resized crop per image (boxes differ), flip, optional auto-augment per image,
    then one normalisation of the batch, then random erasing. Evaluation: images of one size are
    resized together, then centre-cropped, then one normalisation."""

    def __init__(
        self,
        *,
        train: bool,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        resize: int | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: bool = False,
        auto_augment: v2.Transform | None = None,
        random_erasing: float = 0.0,
    ) -> None:
        self.train, self.size, self.resize = train, size, resize or size
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.auto_augment = auto_augment
        self.erasing = v2.RandomErasing(p=random_erasing) if random_erasing > 0 else None
        self.normalize = Normalize(mean, std, device)

    def __call__(self, images: list[torch.Tensor], rng: random.Random) -> torch.Tensor:
        batch = self._train_crops(images, rng) if self.train else self._eval_crops(images)
        batch = self.normalize(batch)
        if self.erasing is not None:
            batch = torch.stack([self.erasing(image) for image in batch])
        return batch

    def _train_crops(self, images: list[torch.Tensor], rng: random.Random) -> torch.Tensor:
        out = images[0].new_empty(len(images), 3, self.size, self.size)
        for i, image in enumerate(images):
            top, left, h, w = random_resized_box(*image.shape[-2:], self.scale, self.ratio, rng)
            crop = TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
            if self.hflip and rng.random() < 0.5:
                crop = crop.flip(-1)
            if self.auto_augment is not None:
                crop = self.auto_augment(crop)
            out[i] = crop
        return out

    def _eval_crops(self, images: list[torch.Tensor]) -> torch.Tensor:
        out = images[0].new_empty(len(images), 3, self.size, self.size)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        for indices in groups.values():
            same = torch.stack([images[i] for i in indices])
            resized = TF.resize(same, [self.resize], antialias=True)
            cropped = TF.center_crop(resized, [self.size, self.size])
            for j, i in enumerate(indices):  # python indices: no index tensor to copy over
                out[i] = cropped[j]
        return out


class DeviceDecodeLoader:
    """Wraps a SamplerLoader of encoded batches; yields decoded, transformed, normalised batches.

    Each batch's random crops and flips come from (seed, epoch, the place of its first image in
    the epoch's order), so a resumed epoch draws what an uninterrupted one would."""

    def __init__(self, encoded_loader, transform: BatchTransform, device: torch.device) -> None:
        self.encoded = encoded_loader
        self.transform = transform
        self.device = device
        self.epoch = 0
        self.cpu_decoded = 0  # images nvJPEG could not take, decoded on the CPU instead

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.epoch = epoch
        self.encoded.set_epoch(epoch, start_sample)

    def __len__(self) -> int:
        return len(self.encoded)

    def _rng(self, position: int) -> random.Random:
        """A batch's crops and flips: from (seed, epoch, its first image's place in the order)."""
        return random.Random(mix_seeds(self.encoded.seed, self.epoch, position))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.encoded.sampler
        starts = [o for o, _ in sampler._plan()] if self.encoded.train else None
        for b, (flat, offsets, labels, on_cpu) in enumerate(self.encoded):
            images, on_host = decode_batch(
                split_encoded(flat, offsets), on_cpu.tolist(), self.device
            )
            if on_host:
                if not self.cpu_decoded:
                    log.info(
                        "gpu_decode: %d image(s) in this batch are not baseline RGB/grey JPEGs "
                        "(PNG named .JPEG, CMYK); decoded on the CPU and counted",
                        on_host,
                    )
                self.cpu_decoded += on_host
            batch = self.transform(images, self._rng(starts[b] if starts else b))
            yield batch, labels.to(self.device, non_blocking=True)
