"""Image folders and predict inputs: only regular files are read (a FIFO never blocks), each real
file once (a link loop does not duplicate or relabel), links out of the tree reported, and the
held-out split never shares a real file with train."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from resnets.data import build_data
from resnets.data.safe_files import SafeImageFolder
from resnets.deploy.predict import list_files

from .conftest import write_image_folder
from .test_hostile_data import folder_cfg


@pytest.fixture(autouse=True)
def never_blocks():
    """A FIFO opened by mistake blocks forever: fail the test instead (SIGALRM interrupts open)."""

    def stop(signum, frame):
        raise TimeoutError("blocked: a FIFO or a link loop was followed")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _hostile_tree(root: Path, outside: Path) -> dict[str, Path]:
    write_image_folder(root, classes=("a", "b"), per_class=8, size=16, splits=("train",))
    write_image_folder(outside, classes=("x",), per_class=2, size=16, splits=("extra",))
    train = root / "train"
    os.mkfifo(train / "a" / "pipe.png")  # opening it would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(train / "b" / "sock.png"))
    sock.close()
    (train / "a" / "loop").symlink_to("..")  # a/loop/b/... would label b's images as a
    (train / "a" / "self").symlink_to(".")
    (train / "a" / "dup.JPEG").symlink_to(train / "b" / "0.JPEG")  # b's file, linked into a
    (train / "b" / "shared").symlink_to(outside / "extra" / "x")  # out of the tree: followed once
    (train / "b" / "shared_again").symlink_to(outside / "extra" / "x")
    return {"train": train}


def test_folder_keeps_each_regular_real_file_once_with_its_own_label(tmp_path, caplog) -> None:
    tree = _hostile_tree(tmp_path / "data", tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING):
        folder = SafeImageFolder(str(tree["train"]))
    paths = [Path(p) for p, _ in folder.samples]
    assert all(p.is_file() for p in paths)  # no FIFO, no socket
    reals = [os.path.realpath(p) for p in paths]
    assert len(reals) == len(set(reals)) == 18  # 16 images + 2 reached out of the tree
    for path, label in folder.samples:  # every in-tree image labelled by its real folder
        real = Path(os.path.realpath(path))
        if real.is_relative_to(tree["train"]):
            assert folder.classes[label] == real.parent.name
    log = caplog.text
    assert "2 not a regular file (FIFO, socket or device), skipped" in log
    assert "3 a link into the tree, not followed" in log
    assert "2 reached through a link out of the tree" in log


def test_build_data_on_a_hostile_tree_splits_unique_files(tmp_path) -> None:
    tree = _hostile_tree(tmp_path / "data", tmp_path / "elsewhere")
    bundle = build_data(folder_cfg(tree["train"].parent, val_fraction=0.25), batch_size=4)
    assert bundle.train_size + bundle.val_size == 18  # torchvision's walk: hundreds, and a FIFO
    labels = [int(v) for _, batch in bundle.val for v in batch]  # reading never blocks
    assert len(labels) == bundle.val_size


def test_held_out_folder_never_shares_a_real_file_with_train(tmp_path, caplog) -> None:
    root = write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=4, size=16)
    (root / "val" / "a" / "leak.JPEG").symlink_to(root / "train" / "a" / "0.JPEG")
    os.link(root / "train" / "b" / "1.JPEG", root / "val" / "b" / "hard.JPEG")  # same inode
    with caplog.at_level(logging.WARNING):
        bundle = build_data(folder_cfg(root), batch_size=4)
    assert bundle.train_size == 8 and bundle.val_size == 8
    assert "also in" in caplog.text and "left out of evaluation" in caplog.text


def test_predict_folder_and_glob_list_each_file_once(tmp_path, caplog) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("1.png", "2.png", "sub/3.png"):
        (folder / name).write_bytes(b"x")
    (folder / "selfloop").symlink_to(".")
    (folder / "sub" / "up").symlink_to("..")
    os.mkfifo(folder / "pipe.png")
    expected = [folder / "1.png", folder / "2.png", folder / "sub" / "3.png"]
    with caplog.at_level(logging.WARNING):
        assert list_files(str(folder)) == expected
    assert "1 not a regular file" in caplog.text
    globbed = list_files(f"{folder}/**/*.png")
    assert sorted(os.path.realpath(p) for p in globbed) == [os.path.realpath(p) for p in expected]
    with pytest.raises(ValueError, match="matches no files"):
        list_files(str(folder / "pipe.png"))  # a FIFO named directly is not read either
