"""Output paths are checked before any work (a folder, writable, with free space: one line, exit
2); export's opset is validated; a 0-image CIFAR batch is refused for what it is."""

from __future__ import annotations

import pickle
import shutil
from collections import namedtuple

import numpy as np
import pytest

from resnets.config import ConfigError
from resnets.data import DataError
from resnets.engine.trainer import train
from resnets.output_paths import check_output_dir

from .conftest import write_cifar10
from .helpers import TINY, compose_train, run_script_inprocess
from .test_hostile_data import cifar10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(compose_train([*TINY, "data=digits", "trainer.epochs=1", "trainer.max_steps=1"]), run)
    return run / "checkpoints" / "last.pt"


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_check_output_dir_refuses_file_unwritable_and_full(tmp_path, monkeypatch) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir='.*taken' is a file, not a folder"):
        check_output_dir(a_file, "output_dir")
    with pytest.raises(ConfigError, match=r"output_dir='/proc/nope/deeper' cannot be written"):
        check_output_dir("/proc/nope/deeper", "output_dir")
    with pytest.raises(ConfigError, match="cannot be written"):
        check_output_dir(a_file / "below", "output_dir")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 2**20))
    target = tmp_path / "new" / "deep"
    with pytest.raises(ConfigError, match=r"has 1\.0 MiB free, needs about 16 MiB"):
        check_output_dir(target, "output_dir")


def test_failed_check_leaves_no_folder(tmp_path, monkeypatch) -> None:
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ConfigError, match=r"cannot be written \(Read-only file system\)"):
        check_output_dir(tmp_path / "a" / "b", "output_dir")
    assert not (tmp_path / "a").exists()


def test_predict_output_dir_checked_before_any_image(checkpoint, tmp_path, capsys) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "x.png").write_bytes(b"not read")
    status = run_script_inprocess(
        "predict",
        [
            f"ckpt={checkpoint}",
            f"images={images}",
            "output_dir=/proc/nope",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
    )
    line = _one_line(capsys)
    assert status == 2 and "output_dir='/proc/nope' cannot be written" in line, line


@pytest.mark.parametrize("kind", ["file", "proc"])
def test_export_output_dir_checked_before_any_export(checkpoint, tmp_path, capsys, kind) -> None:
    target = tmp_path / "taken" if kind == "file" else "/proc/nope"
    if kind == "file":
        target.write_text("x")
    status = run_script_inprocess(
        "export", [f"ckpt={checkpoint}", "format=torchscript", f"output_dir={target}"]
    )
    line = _one_line(capsys)
    assert status == 2 and f"output_dir='{target}'" in line, line
    assert not (checkpoint.parent.parent / "export").exists()


@pytest.mark.parametrize("opset", [1, 17, 10_000])
def test_export_opset_outside_the_exporters_range(tmp_path, capsys, opset) -> None:
    status = run_script_inprocess(
        "export", [f"ckpt={tmp_path / 'never_read.pt'}", f"opset={opset}"]
    )
    line = _one_line(capsys)
    assert status == 2 and f"opset={opset} is not valid; accepted: null" in line, line


@pytest.mark.parametrize("where", ["/proc/nope", "file"])
def test_unwritable_hydra_run_dir_is_one_line(tmp_path, capsys, monkeypatch, where) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    if where == "file":
        (tmp_path / "taken").write_text("x")
        where = str(tmp_path / "taken" / "run")
    status = run_script_inprocess("train", [*TINY, "data=digits", f"hydra.run.dir={where}"])
    line = _one_line(capsys)
    assert status == 2 and f"the run directory cannot be written: {where}" in line, line


def test_zero_image_cifar_batch_of_protocol_2_is_refused_for_that(tmp_path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    empty = {b"data": np.zeros((0, 3072), np.uint8), b"labels": [], b"filenames": []}
    (folder / "test_batch").write_bytes(pickle.dumps(empty, protocol=2))  # b'' is bytes()
    with pytest.raises(DataError, match=r"test_batch.*holds no images") as err:
        cifar10(tmp_path)
    assert "import and call" not in str(err.value)
