"""Raw datasets: in-memory uint8 arrays (digits, CIFAR, fake) and image-folder trees (ImageNet and others).

Everything here returns data before augmentation; transforms.py and loaders.py do the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_SPLIT_SEED = 0  # fixed, so every run sees the same validation digits whatever its seed


@dataclass
class ArraySplit:
    """A split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class ArrayDataset:
    train: ArraySplit
    val: ArraySplit
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_digits(image_size: int, val_fraction: float) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits (no download), upsampled to `image_size`, stratified split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # values 0..16
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(digits.target).long()
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)),
        test_size=val_fraction,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train = ArraySplit(images[train_idx], labels[train_idx])
    pixels = train.images.float() / 255
    mean, std = (pixels.mean().item(),), (pixels.std().item(),)
    return ArrayDataset(
        train, ArraySplit(images[val_idx], labels[val_idx]), [str(i) for i in range(10)], mean, std
    )


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


def load_cifar(name: str, root: str, download: bool) -> ArrayDataset:
    """CIFAR-10/100 from the python pickle batches under `root`, read by torchvision."""
    from torchvision.datasets import CIFAR10, CIFAR100

    folder = Path(root) / CIFAR_FOLDERS[name]
    if not download and not folder.is_dir():
        raise DataError(
            f"data.root={root!r}: no {name} batches at {folder}. Set data.download=true "
            f"(needs internet), or extract {CIFAR_URLS[name]} into {root}"
        )
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise DataError(f"data.root={root!r}: {name} under {folder} is unreadable: {err}") from err
    except (OSError, EOFError, KeyError, ValueError) as err:
        raise DataError(f"data.root={root!r}: {name} under {folder} is corrupt: {err}") from err

    def split(ds) -> ArraySplit:
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return ArraySplit(images, torch.as_tensor(ds.targets, dtype=torch.long))

    return ArrayDataset(split(train), split(test), list(train.classes), CIFAR_MEAN, CIFAR_STD)


def make_fake(
    num_samples: int, num_classes: int, image_size: int, in_chans: int = 3
) -> ArrayDataset:
    """Synthetic images whose class sets their mean brightness, so a network can learn them."""
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> ArraySplit:
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        base = (labels.float() + 0.5) / num_classes * 200
        noise = torch.randn(n, in_chans, image_size, image_size, generator=gen) * 25
        images = (base[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8)
        return ArraySplit(images, labels)

    names = [f"class_{i}" for i in range(num_classes)]
    return ArrayDataset(split(num_samples), split(max(num_samples // 4, num_classes)), names, (0.5,) * in_chans, (0.25,) * in_chans)


def image_folder_dir(root: str, split: str) -> Path:
    """The directory of one split of an ImageFolder tree, with a clear error when it is missing."""
    path = Path(root) / split
    if not path.is_dir():
        raise DataError(
            f"data.root={root!r}: no '{split}/' directory at {path}. Expected an ImageFolder tree "
            f"{root}/{{train,val}}/<class name>/<image files>"
        )
    return path
