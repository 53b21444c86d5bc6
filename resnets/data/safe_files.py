"""Walk image trees reading only regular files, each real file once, never hanging on a FIFO.

torchvision's `make_dataset` admits any path with an image extension and follows every link: a FIFO
named `pipe.png` blocks the run forever on open(), and a loop `train/a/loop -> ..` turns 16 images
into 656, labels class b's images as a, and leaks copies across the train/val split. Here:

- only regular files are kept (checked with stat, which never opens): FIFOs, sockets and devices
  are skipped and counted;
- a link whose target lies inside the tree is not followed (the target is read by its own path,
  under its own class); a link out of the tree is followed once per real path and reported;
- every real file appears once, so a split of the samples never shares a file.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import has_file_allowed_extension

log = logging.getLogger(__name__)


@dataclass
class FileScan:
    """What a walk kept and what it left out, for the log line."""

    files: list[Path] = field(default_factory=list)
    not_regular: list[Path] = field(default_factory=list)  # FIFOs, sockets, devices
    inside_links: list[Path] = field(default_factory=list)  # links into the tree: not followed
    outside: list[Path] = field(default_factory=list)  # reached through links out of the tree
    duplicates: list[Path] = field(default_factory=list)  # a real file already kept
    seen: set[tuple[int, int]] = field(default_factory=set)  # (device, inode) of kept files
    visited: set[str] = field(default_factory=set)  # real paths of walked folders

    def report(self, where: str) -> None:
        """One warning naming what was left out of `where`, with an example of each kind."""
        parts = [
            (self.not_regular, "not a regular file (FIFO, socket or device), skipped"),
            (self.inside_links, "a link into the tree, not followed (its target is read once)"),
            (self.duplicates, "another path to a file already read, skipped"),
            (self.outside, "reached through a link out of the tree"),
        ]
        said = [f"{len(paths)} {what} (e.g. {paths[0]})" for paths, what in parts if paths]
        if said:
            log.warning("%s: %s", where, "; ".join(said))


def is_regular(path: str | os.PathLike) -> bool:
    """A regular file after following links; stat never opens, so a FIFO cannot block here."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of a regular file, the same through any link (soft or hard); else None."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def walk_files(folder: str | os.PathLike, tree: str | os.PathLike, scan: FileScan) -> FileScan:
    """Add the regular files under `folder` (sorted) to `scan`; `tree` is the whole tree's root."""
    tree_real = os.path.realpath(tree)
    _walk(Path(folder), tree_real, scan, outside=not _inside(os.path.realpath(folder), tree_real))
    return scan


def _walk(folder: Path, tree_real: str, scan: FileScan, outside: bool) -> None:
    real_dir = os.path.realpath(folder)
    if real_dir in scan.visited:
        return
    scan.visited.add(real_dir)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        link_outside = False
        if entry.is_symlink():
            real = os.path.realpath(path)
            if _inside(real, tree_real):
                scan.inside_links.append(path)
                continue
            link_outside = True
        if entry.is_dir():  # follows a link: only links out of the tree reach here
            _walk(path, tree_real, scan, outside or link_outside)
            continue
        if not _keep(path, scan):
            continue
        if outside or link_outside:
            scan.outside.append(path)


def unique_regular(paths: list[Path], scan: FileScan) -> FileScan:
    """Keep regular files of `paths` (a glob's matches), each real file once."""
    for path in sorted(paths):
        if path.is_dir():
            continue
        _keep(path, scan)
    return scan


def _keep(path: Path, scan: FileScan) -> bool:
    """Add `path` to the scan if it is a regular file not kept before under another name."""
    found = file_id(path)
    if found is None:
        scan.not_regular.append(path)
        return False
    if found in scan.seen:
        scan.duplicates.append(path)
        return False
    scan.seen.add(found)
    scan.files.append(path)
    return True


def image_samples(
    directory: str | os.PathLike,
    class_to_idx: dict[str, int],
    extensions: tuple[str, ...] | None = None,
    is_valid_file=None,
    allow_empty: bool = False,
) -> list[tuple[str, int]]:
    """torchvision's `make_dataset` contract, walking with `walk_files`' rules."""
    scan = FileScan()
    samples: list[tuple[str, int]] = []
    present: set[str] = set()
    for name in sorted(class_to_idx):
        class_dir = Path(directory) / name
        if not class_dir.is_dir():
            continue
        before = len(scan.files)
        walk_files(class_dir, directory, scan)
        for path in scan.files[before:]:
            ok = (
                is_valid_file(str(path))
                if is_valid_file
                else (extensions is not None and has_file_allowed_extension(str(path), extensions))
            )
            if ok:
                samples.append((str(path), class_to_idx[name]))
                present.add(name)
    scan.report(str(directory))
    empty = set(class_to_idx) - present
    if empty and not allow_empty:
        raise FileNotFoundError(
            f"Found no valid file for the classes {', '.join(sorted(empty))}. "
            f"Supported extensions are: {', '.join(extensions or ())}"
        )
    return samples


def drop_shared(held_out, train) -> None:
    """Remove from an ImageFolder `held_out` the real files `train` also holds (through a
    soft or hard link: the same device and inode), so evaluation never scores an image trained on."""
    trained = {file_id(p) for p, _ in train.samples}
    kept = [(p, t) for p, t in held_out.samples if file_id(p) not in trained]
    if len(kept) < len(held_out.samples):
        log.warning(
            "%s: %d file(s) are also in %s (same real file); left out of evaluation",
            held_out.root,
            len(held_out.samples) - len(kept),
            train.root,
        )
    held_out.samples = held_out.imgs = kept
    held_out.targets = [t for _, t in kept]


class SafeImageFolder(ImageFolder):
    """ImageFolder reading only regular files, each real file once (`image_samples`)."""

    @staticmethod
    def make_dataset(
        directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False
    ) -> list[tuple[str, int]]:
        return image_samples(directory, class_to_idx, extensions, is_valid_file, allow_empty)


def glob_files(pattern: str, scan: FileScan) -> FileScan:
    """The regular files a glob matches, walking its fixed leading folder with `walk_files`' rules:
    `glob.glob(recursive=True)` follows every link, and two loops make its walk exponential."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    if not base.is_dir():
        return scan
    matcher = re.compile(_translate(str(Path(*parts))))
    found = FileScan(visited=scan.visited)
    walk_files(base, base, found)
    scan.inside_links += found.inside_links
    unique_regular([p for p in found.files if matcher.fullmatch(str(p))], scan)
    return scan


def _translate(pattern: str) -> str:
    """A glob pattern as a regex: `**/` any folders (or none), `*` and `?` within one name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append(r"(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(r".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 2 if pattern[i + 1 : i + 2] in "!]" else i + 1)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
