"""The one normalisation of uint8 images, and the one upsampling of normalised ones.

Every loader ends in uint8 images (a quarter of float32's bytes to collate, send between
processes, pin and copy) and normalises them where they are used, with this class: in-memory
batches on the device, image-folder batches after the copy, device-decoded batches, per-sample
torchvision pipelines, and predict.py's single images. One arithmetic everywhere, so a picture
gives the same float32 numbers on every path: (x - 255 mean) / (255 std), the constants rounded
to float32 once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F


class Normalize:
    """uint8 images (CHW or NCHW) -> float32 (x - 255 mean) / (255 std), on the images' device."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
    ) -> None:
        self.mean = (torch.tensor(mean, dtype=torch.float32) * 255).view(-1, 1, 1).to(device)
        self.std = (torch.tensor(std, dtype=torch.float32) * 255).view(-1, 1, 1).to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images from the loader, got {images.dtype}")
        mean, std = self.mean, self.std
        if mean.device != images.device:  # a CPU batch on a CUDA normaliser, or the reverse
            mean, std = mean.to(images.device), std.to(images.device)
        images = images.as_subclass(torch.Tensor)  # a tv_tensors.Image of one picture
        return (images.float() - mean) / std


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised images (CHW or NCHW) to `size` px square: bilinear, not antialiased (an
    in-memory dataset stored smaller than data.image_size, e.g. CIFAR for ImageNet weights)."""
    batch = images if images.dim() == 4 else images.unsqueeze(0)
    out = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=False)
    return out if images.dim() == 4 else out.squeeze(0)


class DeviceNormalized:
    """A loader of uint8 batches seen as a loader of normalised float batches on `device`:
    the copy from pinned memory does not wait, and the normalisation queues behind it."""

    def __init__(self, loader: Any, normalize: Normalize, device: torch.device | str) -> None:
        self.loader, self.normalize, self.device = loader, normalize, torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.loader.set_epoch(epoch, start_sample)

    def __getattr__(self, name: str) -> Any:  # bad, sampler, dataset, ...
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield self.normalize(images), labels.to(self.device, non_blocking=True)
