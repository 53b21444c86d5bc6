"""Tensor-resident loader vs torchvision's per-sample CIFAR pipeline: images/s, same workers.

Peer: a Dataset that turns each uint8 HWC image into a PIL image (as torchvision's CIFAR10 does)
and applies RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, batched by a
DataLoader. Ours: the whole uint8 set in one tensor, crop/flip/normalise as batch operations.
Target: ours >= 5x with the same number of workers.

    python -m benchmarks.loader [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnets.data.datasets import CIFAR_MEAN, CIFAR_STD
from resnets.data.loaders import TensorLoader

from .common import interleaved, write_result

BATCH = 128
TARGET = 5.0


class PerSampleCifar(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def epoch_rate(loader, epoch: int) -> float:
    """Images per second for one pass, the batches materialised as a training step would."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        seen += labels.numel()
        images.sum()  # touch the data
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images)

    ours = TensorLoader(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        batch_size=BATCH,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        device=torch.device("cpu"),
        train=True,
        crop_padding=4,
        hflip=True,
    )
    dataset = PerSampleCifar(images, labels)
    peer_w0 = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=0)
    peer_w2 = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    epoch_rate(peer_w2, 0)  # start the workers before timing
    counter = iter(range(10**6))
    rates = interleaved(
        {
            "ours_workers0": lambda: epoch_rate(ours, next(counter)),
            "torchvision_workers0": lambda: epoch_rate(peer_w0, 0),
            "torchvision_workers2": lambda: epoch_rate(peer_w2, 0),
        },
        args.repeats,
    )
    ratio = rates["ours_workers0"] / rates["torchvision_workers0"]
    return write_result(
        "loader",
        {
            "images": args.images,
            "batch_size": BATCH,
            "images_per_s": rates,
            "ratio_same_workers": ratio,
            "ratio_vs_torchvision_2_workers": rates["ours_workers0"]
            / rates["torchvision_workers2"],
            "target": f">= {TARGET}x",
            "passed": ratio >= TARGET,
        },
    ) and {"ratio": ratio}


if __name__ == "__main__":
    main()
