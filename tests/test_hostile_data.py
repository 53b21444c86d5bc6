"""Hostile and damaged dataset files: nothing runs code, nothing trains on garbage."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from resnets.config import DataConfig
from resnets.data import DataError, build_data

from .conftest import write_cifar10, write_cifar100
from .helpers import run_train_cli


def data_cfg(**fields):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), fields)


def cifar10(root) -> object:
    return build_data(data_cfg(name="cifar10", root=str(root)), batch_size=8)


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` (BINSTRING), as the official CIFAR files are."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def _py2_dump(obj, path) -> None:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Python 2's numpy lived in numpy.core
    path.write_bytes(
        buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    )


def test_python2_batches_with_str_keys_load_exactly(tmp_path) -> None:
    written = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data, labels = written[name]
        # Python 2 pickled str keys; `encoding="bytes"` reads them back as bytes
        _py2_dump({"data": data, "labels": labels, "batch_label": name}, folder / name)
    assert b"GLOBAL" not in (folder / "test_batch").read_bytes()[:2]
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / "test_batch").read_bytes()
    _py2_dump(
        {"label_names": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]}, folder / "batches.meta"
    )
    bundle = build_data(data_cfg(name="cifar10", root=str(tmp_path)), batch_size=8, split="val")
    data, labels = written["test_batch"]
    images = torch.cat([x for x, _ in bundle.val])  # normalised; undo with the CIFAR stats
    assert bundle.class_names[:3] == ["a", "b", "c"]
    assert [int(v) for _, y in bundle.val for v in y] == labels
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    pixels = (images * std + mean) * 255
    expected = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float()
    assert torch.allclose(pixels, expected, atol=1e-3)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_batches_of_every_protocol_load(tmp_path, protocol) -> None:
    written = write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    data, fine = written["train"]
    # numpy scalars in the label list: what a numpy-based re-saving tool leaves behind
    labels = [np.int64(v) for v in fine]
    path.write_bytes(pickle.dumps({"data": data, "fine_labels": labels}, protocol=protocol))
    bundle = build_data(data_cfg(name="cifar100", root=str(tmp_path)), batch_size=50)
    assert bundle.train_size == len(fine) and bundle.num_classes == 100
    got = sorted(int(v) for _, y in bundle.train for v in y)
    assert got == sorted(fine)


class _Payload:
    def __init__(self, reduce) -> None:
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _hostile_payloads(target) -> dict[str, object]:
    import subprocess

    return {
        "builtins.open": _Payload((open, (str(target), "w"))),
        "os.system": _Payload((os.system, (f"touch {target}",))),
        "subprocess.call": _Payload((subprocess.call, (["touch", str(target)],))),
        "object array": np.array([_Payload((open, (str(target), "w")))], dtype=object),
        "in a label list": [1, 2, _Payload((os.system, (f"touch {target}",)))],
        "pathlib.Path.touch": _Payload((type(target).touch, (target,))),
    }


HOSTILE = [
    "builtins.open",
    "os.system",
    "subprocess.call",
    "object array",
    "in a label list",
    "pathlib.Path.touch",
]


@pytest.mark.parametrize("kind", HOSTILE)
def test_batch_that_would_run_code_is_refused(tmp_path, kind) -> None:
    write_cifar10(tmp_path)
    target = tmp_path / "pwned"
    payload = _hostile_payloads(target)[kind]
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}))
    with pytest.raises(DataError, match=rf"cifar10 file {path} refused: "):
        cifar10(tmp_path)
    assert not target.exists()


def test_object_dtype_smuggled_through_dtype_state_is_refused(tmp_path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.array([1, "x"], dtype=object), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=rf"{path} refused"):
        cifar10(tmp_path)


@pytest.mark.slow
def test_command_line_refuses_hostile_batch_in_one_line(tmp_path) -> None:
    root = tmp_path / "data"
    write_cifar10(root)
    target = tmp_path / "created-by-the-dataset"
    path = root / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Payload((open, (str(target), "w")))}))
    result = run_train_cli(
        ["data=cifar10", f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}"]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and str(path) in lines[0] and "would import and call io.open" in lines[0]
    ), lines
    assert not target.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def _damage(folder, name, **entry) -> None:
    base = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    base.update({k.encode(): v for k, v in entry.items()})
    (folder / name).write_bytes(pickle.dumps({k: v for k, v in base.items() if v is not None}))


DAMAGED = {
    "64 images, 50 labels": (
        dict(data=np.zeros((64, 3072), np.uint8), labels=[1] * 50),
        r"64 images but 50 labels",
    ),
    "label out of range": (dict(labels=[0, 1, 10, 3]), r"label 10 at index 2 is outside 0\.\.9"),
    "negative label": (dict(labels=[0, -1, 2, 3]), r"label -1 at index 1 is outside 0\.\.9"),
    "float images": (dict(data=np.zeros((4, 3072), np.float32)), r"images are float32; .*uint8"),
    "images as a list": (dict(data=[[0] * 3072] * 4), r"images are list; .*uint8"),
    "wrong image shape": (
        dict(data=np.zeros((4, 3000), np.uint8)),
        r"images have shape \(4, 3000\); the format stores \(N, 3072\)",
    ),
    "no images": (dict(data=np.zeros((0, 3072), np.uint8), labels=[]), r"holds no images"),
    "labels as text": (dict(labels=[b"cat"] * 4), r"labels are not a list of integers"),
    "float labels": (dict(labels=[0.5] * 4), r"labels are not a list of integers"),
    "no labels entry": (dict(labels=None), r"not a CIFAR batch \(no labels entry\)"),
    "a list, not a dict": (None, r"not a CIFAR batch \(a pickled dict"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_cifar_batch_names_file_and_problem(tmp_path, case) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    entry, message = DAMAGED[case]
    if entry is None:
        (folder / "data_batch_4").write_bytes(pickle.dumps([1, 2, 3]))
    else:
        _damage(folder, "data_batch_4", **entry)
    with pytest.raises(DataError, match=rf"{folder / 'data_batch_4'}.*{message}") as err:
        cifar10(tmp_path)
    assert "\n" not in str(err.value)


def test_cifar100_fine_label_100_is_out_of_range(tmp_path) -> None:
    write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    data = np.zeros((3, 3072), np.uint8)
    (folder / "test").write_bytes(pickle.dumps({b"data": data, b"fine_labels": [99, 100, 0]}))
    with pytest.raises(DataError, match=r"test: label 100 at index 1 is outside 0\.\.99"):
        build_data(data_cfg(name="cifar100", root=str(tmp_path)), batch_size=8)


def test_metadata_with_wrong_class_count_is_refused(tmp_path) -> None:
    write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    with pytest.raises(DataError, match=r"batches\.meta: 2 class names; cifar10 has 10"):
        cifar10(tmp_path)


# --------------------------------------------------------------------------- image folders
def _damaged_tree(root):
    from .conftest import write_image_folder

    write_image_folder(root, per_class=6, size=20)
    truncated = root / "train" / "cat" / "0.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:300])
    text = root / "train" / "dog" / "notes.JPEG"
    text.write_text("not an image\n")
    broken_val = root / "val" / "eel" / "2.JPEG"
    broken_val.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    return truncated, text, broken_val


def folder_cfg(root, **fields):
    return data_cfg(name="imagefolder", root=str(root), image_size=16, **fields)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_images_skipped_counted_and_named(tmp_path, caplog, workers) -> None:
    truncated, text, broken_val = _damaged_tree(tmp_path)
    bundle = build_data(
        folder_cfg(tmp_path, max_bad_images=0.2, persistent_workers=False),
        batch_size=4,
        num_workers=workers,
    )
    assert bundle.train_size == 19  # 18 images + the text file with an image name
    sizes = [len(labels) for _, labels in bundle.train]
    assert sizes == [4, 4, 4, 4]  # a bad sample is replaced: every batch keeps its size
    assert sorted(bundle.train.bad) == sorted([str(truncated), str(text)])
    val_labels = [int(v) for _, labels in bundle.val for v in labels]
    assert len(val_labels) == 17 and val_labels.count(2) == 5  # the bad one is dropped, not doubled
    assert list(bundle.val.bad) == [str(broken_val)]
    warned = [
        r.getMessage() for r in caplog.records if "skipped unreadable image" in r.getMessage()
    ]
    assert any(str(truncated) in m and "truncated" in m.lower() for m in warned), warned
    assert any(str(text) in m and "cannot identify image file" in m for m in warned), warned


def test_too_many_unreadable_images_stop_with_one_line(tmp_path) -> None:
    _damaged_tree(tmp_path)
    bundle = build_data(folder_cfg(tmp_path), batch_size=4)  # default: 0.1% of 19 images
    with pytest.raises(
        DataError,
        match=r"1 unreadable images in the train split of .* \(19 images\), more than "
        r"data\.max_bad_images=0\.001 allows; latest: .*JPEG \(",
    ):
        for _ in bundle.train:
            pass


def test_unreadable_images_listed_in_metrics(tmp_path) -> None:
    from resnets.engine.trainer import train

    from .helpers import TINY, compose_train, read_metrics

    truncated, text, broken_val = _damaged_tree(tmp_path / "data")
    cfg = compose_train(
        [
            *TINY,
            "data=imagefolder",
            f"data.root={tmp_path / 'data'}",
            "data.image_size=16",
            "data.max_bad_images=0.2",
            "trainer.batch_size=4",
            "trainer.epochs=1",
        ]
    )
    train(cfg, tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    assert metrics["bad_images"] == sorted(map(str, (truncated, text, broken_val)))
    assert metrics["steps"] == 4 and metrics["val_samples"] == 17


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_class_folder_found_before_training(tmp_path, split) -> None:
    from .conftest import write_image_folder

    write_image_folder(tmp_path, per_class=3, size=20)
    for image in (tmp_path / split / "dog").iterdir():
        image.unlink()
    with pytest.raises(
        DataError, match=rf"{tmp_path / split}: .*no valid file for the classes dog"
    ):
        build_data(folder_cfg(tmp_path), batch_size=4)


def test_class_too_small_to_split_is_a_data_error(tmp_path) -> None:
    from .conftest import write_image_folder

    write_image_folder(tmp_path, per_class=3, size=20, splits=("train",))
    for image in list((tmp_path / "train" / "dog").iterdir())[1:]:
        image.unlink()
    with pytest.raises(DataError, match=r"data\.val_fraction=0\.2: .* cannot be split"):
        build_data(folder_cfg(tmp_path), batch_size=2)
