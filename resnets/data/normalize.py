"""uint8 batches from loader workers -> normalised float batches on the training device.

Image-folder workers end their pipelines in uint8 CHW tensors: a quarter of float32's bytes to
collate, send between processes, pin and copy to the device. The device then normalises the whole
batch at once after the copy (x / 255, minus mean, over std), with its mean/std tensors made once.
The numbers equal the former per-image ToDtype(float32, scale=True) + Normalize up to float
rounding (tests/test_data_uint8.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch


class Normalize:
    """uint8 images (CHW or NCHW) -> float32 (x / 255 - mean) / std, on the images' device."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
    ) -> None:
        mean_t = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
        # one multiply and one subtract a pixel; folded in float64 so the constants round once
        self.scale = (1.0 / (255.0 * std_t)).float().to(device)
        self.shift = (mean_t / std_t).float().to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images from the loader, got {images.dtype}")
        scale, shift = self.scale, self.shift
        if scale.device != images.device:  # a CPU batch on a CUDA normaliser, or the reverse
            scale, shift = scale.to(images.device), shift.to(images.device)
        images = images.as_subclass(torch.Tensor)  # a tv_tensors.Image of one picture
        return images.to(torch.float32).mul_(scale).sub_(shift)


class DeviceNormalized:
    """A loader of uint8 batches seen as a loader of normalised float batches on `device`:
    the copy from pinned memory does not wait, and the normalisation queues behind it."""

    def __init__(self, loader: Any, normalize: Normalize, device: torch.device | str) -> None:
        self.loader, self.normalize, self.device = loader, normalize, torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, skip_batches: int = 0, start_sample: int | None = None) -> None:
        self.loader.set_epoch(epoch, skip_batches, start_sample)

    def __getattr__(self, name: str) -> Any:  # bad, sampler, dataset, ...
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield self.normalize(images), labels.to(self.device, non_blocking=True)
