"""Tar shards (`python -m resnets.data.shards SRC DST`, `data=shards`): the folder's bytes, labels
and order, read by offset; training from them equals training from the folder; damage is named."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from resnets.data import DataError, build_data
from resnets.data.shards import INDEX, ShardError, ShardFolder, main, parse_bytes
from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train

from .conftest import write_image_folder
from .helpers import TINY, compose_train, run_script_inprocess


def make(tmp_path, shard_size="12KB", **kw) -> tuple[Path, Path]:
    src = write_image_folder(tmp_path / "folder", per_class=kw.pop("per_class", 5), size=40, **kw)
    assert main([str(src), str(tmp_path / "shards"), "--shard-size", shard_size]) == 0
    return src, tmp_path / "shards"


def test_shards_hold_the_folders_bytes_labels_and_order(tmp_path) -> None:
    from torchvision.datasets import ImageFolder

    src, dst = make(tmp_path)
    for split in ("train", "val"):
        folder, shards = ImageFolder(str(src / split)), ShardFolder(dst / split)
        assert shards.classes == folder.classes and shards.targets == folder.targets
        for i, (path, _) in enumerate(folder.samples):
            assert shards.read_bytes(i) == Path(path).read_bytes()
        files = sorted((dst / split).glob("shard-*.tar"))
        assert len(files) > 2  # 12 KB shards (tar pads to 10 KiB records) of 15 images
        assert all(f.stat().st_size <= 12000 for f in files)
        # plain tar files: any tar reader lists and extracts the members
        with tarfile.open(files[0]) as tar:
            member = tar.getmembers()[0]
            assert member.name == "cat/0.JPEG"
            assert tar.extractfile(member).read() == (src / split / "cat" / "0.JPEG").read_bytes()
    with np.load(dst / "train" / INDEX, allow_pickle=False) as index:  # plain arrays only
        assert list(index["label"]) == ImageFolder(str(src / "train")).targets


def test_held_out_split_takes_trains_class_indices(tmp_path) -> None:
    src = write_image_folder(tmp_path / "folder", per_class=2, size=20, splits=("train",))
    write_image_folder(tmp_path / "folder", classes=("dog",), per_class=2, size=20, splits=("val",))
    main([str(src), str(tmp_path / "shards")])
    val = ShardFolder(tmp_path / "shards" / "val")
    assert val.classes == ["cat", "dog", "eel"] and val.targets == [1, 1]


@pytest.mark.slow
def test_shards_give_the_folders_batches_from_any_start(tmp_path) -> None:
    """Sample i of the shards is sample i of the folder: the same epoch order and seeds give the
    same pixels, and a resumed start reads its samples directly."""
    src, dst = make(tmp_path)

    def passes(root, name, start=0):
        cfg = OmegaConf.create(dict(name=name, root=str(root), image_size=16))
        bundle = build_data(cfg, batch_size=4, seed=4, num_workers=0)
        bundle.train.set_epoch(1, start_sample=start)
        return [(x, y) for x, y in bundle.train], [(x, y) for x, y in bundle.val]

    (train_f, val_f), (train_s, val_s) = passes(src, "imagefolder"), passes(dst, "shards")
    for (x, y), (z, t) in zip(train_f + val_f, train_s + val_s, strict=True):
        assert torch.equal(x, z) and torch.equal(y, t)
    tail, _ = passes(dst, "shards", start=8)
    assert all(torch.equal(x, z) for (x, _), (z, _) in zip(train_f[2:], tail, strict=True))


def _train(tmp_path, name, data, root, loader, *extra) -> dict:
    overrides = [
        *TINY,
        f"data={data}",
        f"data.root={root}",
        f"data.loader={loader}",
        "data.image_size=16",
        "trainer.batch_size=4",
        "trainer.epochs=2",
        "trainer.deterministic=true",
        *extra,
    ]
    train(compose_train(overrides), tmp_path / name)
    return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["torchvision", "dali"])
def test_two_epochs_on_shards_equal_two_on_the_folder(tmp_path, loader) -> None:
    src, dst = make(tmp_path, per_class=4)
    a = _train(tmp_path, "folder", "imagefolder", src, loader)
    b = _train(tmp_path, "shards", "shards", dst, loader)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


# ----------------------------------------------------------------------------- damage
def _cfg(dst):
    return OmegaConf.create(dict(name="shards", root=str(dst), image_size=16))


def test_truncated_shard_is_named(tmp_path) -> None:
    _, dst = make(tmp_path)
    shard = dst / "train" / "shard-00001.tar"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ShardError) as info:
        build_data(_cfg(dst), batch_size=4)
    message = str(info.value)
    assert message.startswith(f"{shard}: damaged shard (1000 bytes, the index says ")
    assert "python -m resnets.data.shards" in message and "\n" not in message


def test_missing_shard_is_named(tmp_path) -> None:
    _, dst = make(tmp_path)
    (dst / "val" / "shard-00000.tar").unlink()
    with pytest.raises(ShardError, match=r"val/shard-00000\.tar: shard missing"):
        build_data(_cfg(dst), batch_size=4)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not an index"),  # pickled data is refused
        lambda p: p.write_bytes(p.read_bytes()[:200]),  # cut short
        lambda p: np.savez(p, label=np.zeros(3)),  # keys missing
    ],
)
def test_bad_index_is_named(tmp_path, damage) -> None:
    _, dst = make(tmp_path)
    index = dst / "train" / INDEX
    damage(index)
    with pytest.raises(
        ShardError, match=rf"^{index}: damaged shard index \(.+\); rebuild it"
    ) as info:
        build_data(_cfg(dst), batch_size=4)
    assert "allow_pickle" not in str(info.value)  # numpy's advice to load unsafely is not passed on


def test_index_pointing_past_a_shard_is_named(tmp_path) -> None:
    _, dst = make(tmp_path)
    path = dst / "train" / INDEX
    with np.load(path) as z:
        index = dict(z)
    index["offset"][3] = 10**6
    np.savez(path, **index)
    with pytest.raises(ShardError, match=r"shard-\d+\.tar: damaged shard index \(sample .+ ends"):
        build_data(_cfg(dst), batch_size=4)


@pytest.mark.slow
def test_damaged_shard_stops_train_py_with_one_line(tmp_path, capsys) -> None:
    _, dst = make(tmp_path)
    shard = dst / "train" / "shard-00000.tar"
    shard.write_bytes(shard.read_bytes()[:-512])
    args = [*TINY, "data=shards", f"data.root={dst}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert run_script_inprocess("train", args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {shard}: damaged shard") and "\n" not in err


def test_a_folder_is_not_a_shard_tree(tmp_path) -> None:
    src = write_image_folder(tmp_path / "folder", per_class=2, size=20)
    with pytest.raises(DataError, match=r"is not a shard tree \(no train/index\.npz\); write one"):
        build_data(_cfg(src), batch_size=4)
    cfg = OmegaConf.merge(_cfg(src), {"gpu_decode": True})
    with pytest.raises(DataError):
        build_data(cfg, batch_size=4)


def test_command_line_refusals(tmp_path, capsys) -> None:
    assert main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no train/ directory" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), str(tmp_path / "out"), "--shard-size", "lots"])
    assert stop.value.code == 2
    assert "--shard-size='lots' is not valid; accepted: a positive size" in capsys.readouterr().err
    assert parse_bytes("1GB") == 10**9 and parse_bytes("64KiB") == 65536 and parse_bytes("7") == 7
