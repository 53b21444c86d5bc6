"""Damaged files in image folders: skipped with a warning, counted, and fatal only past a limit.

A corrupt or truncated JPEG, or a text file named .JPEG, in a million-image tree must not end an
ImageNet run hours in. Workers catch the decode error and pass the file name along with the batch;
the loader in the main process warns once per file and stops the run with one line when more than
`data.max_bad_images` (a fraction of the split) are unreadable. Training replaces a bad sample with
the next readable one, so every batch keeps its size (batch norm, DDP and the step count rely on
it); evaluation drops it, so no image is scored twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from ..messages import first_line
from .errors import DataError

log = logging.getLogger(__name__)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
MAX_SUBSTITUTES = 64  # a run of this many unreadable neighbours is past any sane limit anyway


class UnreadableImage(Exception):
    def __init__(self, path: str, err: BaseException) -> None:
        reason = first_line(err)
        if isinstance(err, UnidentifiedImageError):  # its message repeats the file object
            reason = "cannot identify image file: not an image format PIL can decode"
        super().__init__(f"{path} ({reason})")
        self.path = path


def read_rgb(path: str) -> Image.Image:
    """torchvision's PIL loader, with decode failures marked as this file's fault."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except DECODE_ERRORS as err:
        raise UnreadableImage(str(path), err) from err


class SkipUnreadable(Dataset):
    """Yields (image, label, bad paths): the image is None when evaluation drops a bad sample."""

    def __init__(self, dataset: Dataset, *, substitute: bool) -> None:
        self.dataset, self.substitute = dataset, substitute

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, Any, tuple[str, ...]]:
        bad: list[str] = []
        tries = MAX_SUBSTITUTES if self.substitute else 1
        for k in range(tries):
            try:
                image, label = self.dataset[(i + k) % len(self.dataset)]
                return image, label, tuple(bad)
            except UnreadableImage as err:
                bad.append(str(err))
        return None, None, tuple(bad)


def collate_skipping(batch: Sequence[tuple[Any, Any, tuple[str, ...]]]):
    bad = [path for _, _, paths in batch for path in paths]
    good = [(image, label) for image, label, _ in batch if image is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images, labels = default_collate(good)
    return images, labels, bad


class BadImageLoader:
    """The wrapped loader's interface; takes the bad-file lists off its batches and keeps count."""

    def __init__(self, loader, *, size: int, max_fraction: float, where: str) -> None:
        self.loader, self.size, self.max_fraction, self.where = loader, size, max_fraction, where
        self.bad: dict[str, str] = {}  # path -> "path (reason)"

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.loader.set_epoch(epoch, start_sample)

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, ...
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, bad in self.loader:
            for entry in bad:
                self._record(entry)
            if len(labels):
                yield images, labels

    def _record(self, entry: str) -> None:
        path = entry.rsplit(" (", 1)[0]
        if path in self.bad:
            return
        self.bad[path] = entry
        limit = self.max_fraction * self.size
        log.warning(
            "skipped unreadable image %s; %d so far in %s", entry, len(self.bad), self.where
        )
        if len(self.bad) > limit:
            raise DataError(
                f"{len(self.bad)} unreadable images in {self.where} ({self.size} images), more "
                f"than data.max_bad_images={self.max_fraction} allows; latest: {entry}"
            )


def unreadable_images(*loaders: Any) -> list[str]:
    """Every file the loaders skipped so far, sorted."""
    return sorted({p for loader in loaders for p in getattr(loader, "bad", {})})
