"""JPEG decoding on the training device (`data.gpu_decode=true`).

Loader workers only read the compressed bytes; `torchvision.io.decode_jpeg(device=...)` decodes
a whole batch on the GPU (nvJPEG), and the crop/flip/resize transforms run there too. This
takes the decoding, usually the CPU bottleneck of ImageNet training, off the CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from .errors import DataError

JPEG_MAGIC = b"\xff\xd8"


class EncodedImages(Dataset):
    """(compressed bytes as a uint8 tensor, label) for each (path, label) of an ImageFolder."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        data = read_file(path)
        if bytes(data[:2].tolist()) != JPEG_MAGIC:
            raise DataError(
                f"data.gpu_decode=true decodes JPEG files only; {path} is not a JPEG "
                "(set data.gpu_decode=false)"
            )
        return data, label


def collate_encoded(
    batch: list[tuple[torch.Tensor, int]],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Compressed images differ in length: keep them as a list."""
    return [item[0] for item in batch], torch.tensor([item[1] for item in batch])


class DeviceDecodeLoader:
    """Wraps a loader of compressed batches; yields decoded, transformed, normalised batches.

    `transform` is the same torchvision v2 pipeline the per-sample path uses: v2 transforms run
    on uint8 CHW tensors wherever those live.
    """

    def __init__(
        self,
        encoded_loader,
        transform: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
    ) -> None:
        self.encoded = encoded_loader
        self.transform = transform
        self.device = device

    def set_epoch(self, epoch: int, skip_batches: int = 0, start_sample: int | None = None) -> None:
        self.encoded.set_epoch(epoch, skip_batches, start_sample)

    def __len__(self) -> int:
        return len(self.encoded)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for data, labels in self.encoded:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            batch = torch.stack([self.transform(image) for image in images])
            yield batch.as_subclass(torch.Tensor), labels.to(self.device, non_blocking=True)
