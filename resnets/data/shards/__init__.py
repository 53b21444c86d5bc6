"""Tar shards of an image-folder tree, read by random access through an index.

`python -m resnets.data.shards SRC DST` writes, for each of SRC's splits (train/, val/, test/),
DST/<split>/shard-00000.tar, ... of about `--shard-size` bytes (1 GB by default) holding each
image's original encoded bytes under `<class>/<file name>`, plus DST/<split>/index.npz: for
sample i, its shard, the byte offset and size of its data in that tar, its label and its name,
and the classes and every shard's size. Samples keep torchvision ImageFolder's order (classes
sorted, files sorted within a class; val/ and test/ take train/'s class indices), so sample i of
the shards is sample i of the folder: the same epoch order and the same augmentation seeds give
the same batches, and a resumed run reads any sample directly (`os.pread` at its offset) without
scanning a tar. A few thousand files replace a million, which cluster file systems list and open
far faster. The index is read with `allow_pickle=False` (plain arrays only).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..bad_images import DECODE_ERRORS, UnreadableImage
from ..errors import DataError

INDEX = "index.npz"
SPLITS = ("train", "val", "test")
DEFAULT_SHARD_BYTES = 1_000_000_000
INDEX_KEYS = ("shard", "offset", "size", "label", "name", "classes", "files", "file_sizes")
REBUILD = "rebuild it with python -m resnets.data.shards SRC DST"


class ShardError(DataError):
    """A damaged shard tree: the message starts with the file and says what is wrong."""


def is_shard_split(directory: str | os.PathLike) -> bool:
    """True when `directory` is one split of a shard tree (it holds index.npz)."""
    return (Path(directory) / INDEX).is_file()


# ------------------------------------------------------------------------------------ writing
def _folder_samples(split_dir: Path, class_to_idx: dict[str, int] | None):
    """(path, label) pairs in ImageFolder's order, and the classes; held-out splits take
    train's mapping (and refuse a class train lacks, as the folder pipeline does)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    classes, mapping = find_classes(str(split_dir))
    if class_to_idx is not None:
        unknown = [c for c in classes if c not in class_to_idx]
        if unknown:
            raise DataError(f"{split_dir} has class folder(s) {unknown} that train/ does not have")
        mapping = dict(class_to_idx)
        classes = sorted(mapping, key=mapping.get)
    samples = make_dataset(str(split_dir), mapping, IMG_EXTENSIONS, allow_empty=True)
    return samples, list(classes), mapping


class _ShardWriter:
    """Appends files to shard-00000.tar, shard-00001.tar, ... starting a new one at `limit`."""

    def __init__(self, out_dir: Path, limit: int) -> None:
        self.out_dir, self.limit = out_dir, limit
        self.files: list[str] = []
        self.tar: tarfile.TarFile | None = None

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Writes one member; returns (shard number, offset of its data in that shard)."""
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if self.tar is None or (self.tar.offset and self._closed_size(padded) > self.limit):
            self.close()
            self.files.append(f"shard-{len(self.files):05d}.tar")
            self.tar = tarfile.open(self.out_dir / self.files[-1], "w")  # noqa: SIM115
        info = tarfile.TarInfo(name)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        # the data sits just before the tar's position, padded to whole 512-byte blocks
        return len(self.files) - 1, self.tar.offset - padded

    def _closed_size(self, padded: int) -> int:
        """The shard's size once closed with one more member: header, data, the two end
        blocks, all rounded up to tar's 10 KiB records."""
        end = self.tar.offset + 3 * tarfile.BLOCKSIZE + padded
        return -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def write_split(
    split_dir: Path,
    out_dir: Path,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    class_to_idx: dict[str, int] | None = None,
) -> dict[str, int]:
    """Shards and index of one split; returns its class-to-index mapping."""
    samples, classes, mapping = _folder_samples(split_dir, class_to_idx)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {k: [] for k in ("shard", "offset", "size", "label", "name")}
    writer = _ShardWriter(out_dir, shard_bytes)
    try:
        for path, label in samples:
            data = Path(path).read_bytes()
            name = os.path.relpath(path, split_dir).replace(os.sep, "/")
            shard, offset = writer.add(name, data)
            for key, value in zip(rows, (shard, offset, len(data), label, name), strict=True):
                rows[key].append(value)
    finally:
        writer.close()
    files = writer.files
    sizes = [(out_dir / f).stat().st_size for f in files]
    np.savez(
        out_dir / INDEX,
        shard=np.asarray(rows["shard"], np.int32),
        offset=np.asarray(rows["offset"], np.int64),
        size=np.asarray(rows["size"], np.int64),
        label=np.asarray(rows["label"], np.int64),
        name=np.asarray(rows["name"], dtype=np.str_),
        classes=np.asarray(classes, dtype=np.str_),
        files=np.asarray(files, dtype=np.str_),
        file_sizes=np.asarray(sizes, np.int64),
    )
    return mapping


def write_shards(src: str | os.PathLike, dst: str | os.PathLike, shard_bytes: int) -> list[str]:
    """Every split SRC has (train/ first: the others take its classes); returns their names."""
    src, dst = Path(src), Path(dst)
    if not (src / "train").is_dir():
        raise DataError(f"{src}: no train/ directory; expected SRC/{{train,val}}/<class>/<images>")
    mapping = write_split(src / "train", dst / "train", shard_bytes)
    done = ["train"]
    for split in SPLITS[1:]:
        if (src / split).is_dir():
            write_split(src / split, dst / split, shard_bytes, mapping)
            done.append(split)
    return done


# ------------------------------------------------------------------------------------ reading
def check_shard_config(cfg: Any) -> None:
    """data=shards: data.root must be a tree this module wrote (before any work)."""
    if cfg["name"] != "shards":
        return
    root = str(cfg["root"])
    if not is_shard_split(Path(root) / "train"):
        raise ShardError(
            f"data.root={root!r} is not a shard tree (no train/{INDEX}); write one with "
            f"python -m resnets.data.shards SRC {root}"
        )
    if cfg["gpu_decode"]:
        raise DataError(
            "data.gpu_decode=true reads image files; for shards decoded on the GPU use "
            "data.loader=dali (accepted with data=shards: gpu_decode=false)"
        )


def _load_index(split_dir: Path) -> dict[str, np.ndarray]:
    path = split_dir / INDEX
    try:
        with np.load(path, allow_pickle=False) as z:
            index = {k: z[k] for k in INDEX_KEYS}
    except FileNotFoundError as err:
        raise ShardError(f"{path}: no shard index here; {REBUILD}") from err
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickle" in reason:  # numpy's advice to load it unsafely is not ours
            reason = "not an .npz of plain arrays"
        raise ShardError(f"{path}: damaged shard index ({reason}); {REBUILD}") from err
    n = len(index["label"])
    if any(len(index[k]) != n for k in ("shard", "offset", "size", "name")):
        raise ShardError(f"{path}: damaged shard index (columns of unequal length); {REBUILD}")
    return index


def _check_files(split_dir: Path, index: dict[str, np.ndarray]) -> None:
    """Every shard there, at the size the index recorded, and every sample inside its shard."""
    files, sizes = index["files"], index["file_sizes"]
    if len(index["shard"]) and (index["shard"].min() < 0 or index["shard"].max() >= len(files)):
        raise ShardError(f"{split_dir / INDEX}: damaged shard index (shard number out of range)")
    for name, expected in zip(files, sizes, strict=True):
        path = split_dir / str(name)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise ShardError(f"{path}: shard missing (the index lists it); {REBUILD}") from None
        if actual != expected:
            raise ShardError(
                f"{path}: damaged shard ({actual} bytes, the index says {expected}: truncated "
                f"or rewritten); {REBUILD}"
            )
    ends = index["offset"] + index["size"]
    if len(ends) and (ends > sizes[index["shard"]]).any():
        bad = int(np.argmax(ends > sizes[index["shard"]]))
        raise ShardError(
            f"{split_dir / str(files[index['shard'][bad]])}: damaged shard index (sample "
            f"{index['name'][bad]} ends past the shard's end); {REBUILD}"
        )


class ShardFolder:
    """One split of a shard tree with torchvision ImageFolder's interface (root, classes,
    class_to_idx, samples, targets, transform, `dataset[i] -> (image, label)`), plus
    `read_bytes(i)`: sample i's encoded bytes, for the loaders that decode elsewhere (DALI)."""

    def __init__(
        self, root: str | os.PathLike, transform=None, classes: Sequence[str] | None = None
    ):
        self.root = str(root)
        split_dir = Path(root)
        index = _load_index(split_dir)
        _check_files(split_dir, index)
        self.classes = [str(c) for c in index["classes"]]
        if classes is not None and list(classes) != self.classes:
            raise ShardError(
                f"{split_dir / INDEX}: classes {self.classes} differ from train/'s "
                f"{list(classes)}; {REBUILD}"
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self._paths = [str(split_dir / str(f)) for f in index["files"]]
        self._shard, self._offset, self._size = index["shard"], index["offset"], index["size"]
        self.targets = [int(t) for t in index["label"]]
        self.samples = [
            (f"{self._paths[s]}:{name}", t)
            for s, name, t in zip(
                self._shard.tolist(), index["name"].tolist(), self.targets, strict=True
            )
        ]
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.targets)

    def __getstate__(self) -> dict[str, Any]:  # loader workers open their own descriptors
        return {**self.__dict__, "_fds": {}}

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors share offsets
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY)
        return fd

    def read_bytes(self, i: int) -> bytes:
        """Sample i's encoded image, read at its offset (no seek state: safe across threads)."""
        size = int(self._size[i])
        data = os.pread(self._fd(int(self._shard[i])), size, int(self._offset[i]))
        if len(data) != size:
            raise ShardError(f"{self.samples[i][0]}: shard ends inside this sample; {REBUILD}")
        return data

    def __getitem__(self, i: int):
        name, label = self.samples[i]
        try:
            image = Image.open(io.BytesIO(self.read_bytes(i))).convert("RGB")
        except DECODE_ERRORS as err:
            raise UnreadableImage(name, err) from err
        return (self.transform(image) if self.transform else image), label

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_fds", {}).values():
                os.close(fd)


def parse_bytes(text: str) -> int:
    """'1GB', '500MB', '64KiB' or a plain number of bytes."""
    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
    value = text.strip().upper().removesuffix("B")
    number = value.rstrip("KMGI")
    try:
        size = int(float(number) * units[value[len(number) :]])
    except (KeyError, ValueError):
        size = 0
    if size <= 0:
        raise argparse.ArgumentTypeError(
            f"--shard-size={text!r} is not valid; accepted: a positive size such as 1GB, 500MB"
        )
    return size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnets.data.shards",
        description="Write an image-folder tree (SRC/train, SRC/val) as tar shards with an index.",
    )
    parser.add_argument("src", help="image-folder tree: SRC/train/<class>/<images>, SRC/val/...")
    parser.add_argument("dst", help="output directory (train with data=shards data.root=DST)")
    parser.add_argument(
        "--shard-size", type=parse_bytes, default=DEFAULT_SHARD_BYTES, help="bytes per shard (1GB)"
    )
    args = parser.parse_args(argv)
    try:
        splits = write_shards(args.src, args.dst, args.shard_size)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split in splits:
        folder = ShardFolder(Path(args.dst) / split)
        print(f"{split}: {len(folder)} images, {len(folder._paths)} shard(s) in {folder.root}")
    return 0
