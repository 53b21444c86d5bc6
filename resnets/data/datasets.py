"""Raw datasets: in-memory uint8 arrays (digits, CIFAR, fake) and image-folder trees (ImageNet and others).

Everything here returns data before augmentation; transforms.py and loaders.py do the rest.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..messages import first_line
from .errors import DataError
from .safe_pickle import load_data_pickle

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("val", "test", "train")  # data.split: what the `val` loader scores
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
    images = F.interpolate(
        images, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
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


CIFAR_FILES = {
    "cifar10": (
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    "cifar100": (["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_PIXELS = 3 * 32 * 32


def _unpickle(path: Path) -> dict:
    """One CIFAR batch file, read with an unpickler that admits only plain data (safe_pickle.py).
    The official files are Python 2 pickles: keys come as bytes, as the dataset's own
    instructions read them; str keys (files re-saved by Python 3 tools) are accepted too."""
    entry = load_data_pickle(path)
    if not isinstance(entry, dict):
        raise DataError(f"{path}: not a CIFAR batch (a pickled dict was expected)")
    return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in entry.items()}


def _cifar_batch(path: Path, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one batch file, checked against the format:
    a file whose counts, dtype, shape or labels are off would shift or poison every later label."""
    entry = _unpickle(path)
    missing = [k.decode() for k in (b"data", label_key) if k not in entry]
    if missing:
        raise DataError(f"{path}: not a CIFAR batch (no {', '.join(missing)} entry)")
    data, labels = entry[b"data"], entry[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: images are {kind}; the format stores uint8 pixels")
    if data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise DataError(
            f"{path}: images have shape {tuple(data.shape)}; the format stores (N, {CIFAR_PIXELS})"
        )
    try:
        labels = np.asarray(labels)
    except ValueError as err:
        raise DataError(f"{path}: labels are not a list of integers ({err})") from err
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: labels are not a list of integers (found {labels.dtype})")
    if len(labels) != len(data):
        raise DataError(
            f"{path}: {len(data)} images but {len(labels)} labels; each image needs one label"
        )
    if len(data) == 0:
        raise DataError(f"{path}: holds no images")
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        raise DataError(
            f"{path}: label {int(labels[bad][0])} at index {int(np.flatnonzero(bad)[0])} is "
            f"outside 0..{classes - 1} ({int(bad.sum())} such labels)"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar(name: str, root: str, download: bool) -> ArrayDataset:
    """CIFAR-10/100 from the python pickle batches under `root` (torchvision downloads them)."""
    folder = Path(root) / CIFAR_FOLDERS[name]
    if download and not folder.is_dir():
        from torchvision.datasets import CIFAR10, CIFAR100

        try:
            (CIFAR10 if name == "cifar10" else CIFAR100)(root, train=True, download=True)
        except OSError as err:  # urllib's URLError and socket errors: no network, proxy, DNS
            reason = getattr(err, "reason", None) or err
            raise DataError(
                f"data.download=true could not fetch {CIFAR_URLS[name]} ({reason}). Without a "
                f"network, fetch that archive elsewhere and put it in {root}/: data.download=true "
                f"then unpacks it without a network (or unpack it there with tar xzf, giving "
                f"{folder}/)"
            ) from None
    if not folder.is_dir():
        raise DataError(
            f"data.root={root!r}: no {name} batches at {folder}. Set data.download=true "
            f"(needs internet), or extract {CIFAR_URLS[name]} into {root}"
        )
    train_files, test_files, meta_file, label_key, names_key = CIFAR_FILES[name]
    classes = CIFAR_CLASSES[name]

    def split(files: list[str]) -> ArraySplit:
        images, labels = [], []
        for file in files:
            path = folder / file
            if not path.is_file():
                raise DataError(f"data.root={root!r}: {name} file {path} is missing")
            try:
                data, targets = _cifar_batch(path, label_key, classes)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as err:
                if isinstance(err, DataError):
                    raise
                raise DataError(f"{name} file {path} {_reason(err)}") from err
            images.append(data)
            labels.append(targets)
        return ArraySplit(
            torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
        )

    train, test = split(train_files), split(test_files)
    meta_path = folder / meta_file
    try:
        names = [
            n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(meta_path)[names_key]
        ]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{name} metadata {meta_path} {_reason(err)}") from err
    if len(names) != classes:
        raise DataError(f"{meta_path}: {len(names)} class names; {name} has {classes}")
    mean, std = (CIFAR_MEAN, CIFAR_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ArrayDataset(train, test, names, mean, std)


def _reason(err: Exception) -> str:
    """One line: a refusal speaks for itself, anything else says it is corrupt."""
    text = first_line(err)
    return text if text.startswith("refused") else f"is corrupt ({type(err).__name__}: {text})"


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
    return ArrayDataset(
        split(num_samples),
        split(max(num_samples // 4, num_classes)),
        names,
        (0.5,) * in_chans,
        (0.25,) * in_chans,
    )


def check_arrays(arrays: ArrayDataset, source: str) -> None:
    """Every in-memory source obeys one format before training: uint8 (N, C, H, W) images, one
    int64 label each within the class count, at least one image per split."""
    classes = len(arrays.class_names)
    if classes < 1:
        raise DataError(f"{source}: no classes")
    for name, split in (("train", arrays.train), ("val", arrays.val)):
        images, labels = split.images, split.labels
        where = f"{source} {name} split"
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"{where}: images are {images.dtype} of shape {tuple(images.shape)}; "
                "expected uint8 (N, C, H, W)"
            )
        if labels.dim() != 1 or labels.dtype != torch.int64 or len(labels) != len(images):
            raise DataError(
                f"{where}: {len(images)} images but labels of shape {tuple(labels.shape)} "
                f"({labels.dtype}); expected {len(images)} int64 labels"
            )
        if len(images) == 0:
            raise DataError(f"{where}: holds no images")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            raise DataError(f"{where}: labels span {low}..{high}, outside 0..{classes - 1}")


def image_folder_dir(root: str, split: str) -> Path:
    """The directory of one split of an ImageFolder tree, with a clear error when it is missing."""
    path = Path(root) / split
    if not path.is_dir():
        raise DataError(
            f"data.root={root!r}: no '{split}/' directory at {path}. Expected an ImageFolder tree "
            f"{root}/{{train,val}}/<class name>/<image files>"
        )
    return path


# each reads a `data` node completed with the schema's defaults (factory.with_schema_defaults)
def _digits(cfg: Mapping[str, Any]) -> ArrayDataset:
    return load_digits(int(cfg["image_size"]), float(cfg["val_fraction"]))


def _cifar(cfg: Mapping[str, Any]) -> ArrayDataset:
    return load_cifar(cfg["name"], str(cfg["root"]), bool(cfg["download"]))


def _fake(cfg: Mapping[str, Any]) -> ArrayDataset:  # null num_classes: 10 classes
    size = int(cfg["image_size"])
    return make_fake(int(cfg["fake_size"]), int(cfg["num_classes"] or 10), size)


# data.name -> the reader of an in-memory dataset's arrays (given the `data` config node). With
# FOLDER_DATASETS (read by the image-folder pipeline) the one list of datasets: build_data, its
# messages and config validation read these two, so a new in-memory dataset is one entry here.
ARRAY_DATASETS: dict[str, Callable[[Mapping[str, Any]], ArrayDataset]] = {
    "digits": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "fake": _fake,
}
FOLDER_DATASETS: tuple[str, ...] = (
    "imagenet",
    "imagefolder",
    "shards",
)  # shards: resnets.data.shards


def dataset_names() -> tuple[str, ...]:
    """Every accepted data.name, in-memory first."""
    return (*ARRAY_DATASETS, *FOLDER_DATASETS)
