"""Datasets read back from their real on-disk formats; the tensor loader's guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from resnets.config import DataConfig
from resnets.data import DataError, build_data
from resnets.data.loaders import TensorLoader, crop, shard_indices

from .conftest import write_cifar10, write_cifar100


def data_cfg(**fields):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), fields)


def test_cifar10_pickles_read_back_exactly(tmp_path) -> None:
    written = write_cifar10(tmp_path)
    bundle = build_data(data_cfg(name="cifar10", root=str(tmp_path)), batch_size=8, split="val")
    assert bundle.train_size == 100 and bundle.val_size == 40 and bundle.num_classes == 10
    assert bundle.class_names[:2] == ["airplane", "automobile"]
    data, labels = written["test_batch"]
    # the raw rows are 1024 R, 1024 G, 1024 B values, row-major 32x32
    expected = torch.from_numpy(data.reshape(-1, 3, 32, 32))
    assert torch.equal(bundle.val.images, expected)
    assert bundle.val.labels.tolist() == labels
    train_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(bundle.train.images, torch.from_numpy(train_data.reshape(-1, 3, 32, 32)))


def test_cifar100_reads_fine_labels(tmp_path) -> None:
    written = write_cifar100(tmp_path)
    bundle = build_data(data_cfg(name="cifar100", root=str(tmp_path)), batch_size=8)
    assert bundle.num_classes == 100 and bundle.val.labels.tolist() == written["test"][1]


def test_missing_cifar_names_path_and_remedy(tmp_path) -> None:
    with pytest.raises(
        DataError,
        match=r"data\.root=.*no cifar10 batches at .*cifar-10-batches-py.*data\.download=true",
    ):
        build_data(data_cfg(name="cifar10", root=str(tmp_path / "nowhere")), batch_size=8)


def test_corrupt_cifar_batch_is_a_data_error(tmp_path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match=r"cifar10 file .*data_batch_3 is corrupt"):
        build_data(data_cfg(name="cifar10", root=str(tmp_path)), batch_size=8)


def test_unknown_dataset_and_bad_split() -> None:
    with pytest.raises(DataError, match=r"data\.name='mnist'.*accepted: digits, cifar10, cifar100"):
        build_data(data_cfg(name="mnist"), batch_size=8)
    with pytest.raises(DataError, match=r"data\.split='dev'.*val, test, train"):
        build_data(data_cfg(name="digits"), batch_size=8, split="dev")


def test_digits_split_is_fixed_stratified_and_upsampled() -> None:
    a = build_data(data_cfg(name="digits"), batch_size=64, seed=1)
    b = build_data(data_cfg(name="digits"), batch_size=64, seed=2)
    assert a.train_size == 1437 and a.val_size == 360 and a.in_chans == 1 and a.image_size == 32
    assert torch.equal(a.val.labels, b.val.labels)  # independent of the run seed
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of ~180 per class


def test_image_folder_tree(imagefolder_root) -> None:
    cfg = data_cfg(
        name="imagefolder", root=str(imagefolder_root), image_size=32, val_crop=32, val_resize=36
    )
    bundle = build_data(cfg, batch_size=4)
    assert (
        bundle.class_names == ["cat", "dog", "eel"]
        and bundle.train_size == 18
        and bundle.val_size == 18
    )
    images, labels = next(iter(bundle.val))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 0, 0]  # evaluation order is the folder's order


def test_image_folder_without_val_dir_splits_stratified(tmp_path) -> None:
    from .conftest import write_image_folder

    write_image_folder(tmp_path, per_class=10, splits=("train",))
    bundle = build_data(
        data_cfg(name="imagefolder", root=str(tmp_path), image_size=32, val_fraction=0.2),
        batch_size=4,
    )
    assert bundle.train_size == 24 and bundle.val_size == 6


def test_missing_image_folder_names_the_layout(tmp_path) -> None:
    with pytest.raises(DataError, match=r"no 'train/' directory at .*Expected an ImageFolder tree"):
        build_data(data_cfg(name="imagenet", root=str(tmp_path)), batch_size=4)


def _loader(n=100, batch=16, **kw):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    labels = torch.arange(n)
    return TensorLoader(
        images,
        labels,
        batch_size=batch,
        mean=(0, 0, 0),
        std=(1 / 255,) * 3,
        device=torch.device("cpu"),
        **kw,
    )


def test_tensor_loader_yields_every_sample_once_per_epoch() -> None:
    loader = _loader(train=True, seed=3, drop_last=False)
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen = torch.cat([y for _, y in loader])
        assert sorted(seen.tolist()) == list(range(100))
    loader.set_epoch(0)
    first = torch.cat([y for _, y in loader])
    loader.set_epoch(1)
    assert not torch.equal(first, torch.cat([y for _, y in loader]))  # reshuffled per epoch


def test_tensor_loader_is_identical_for_the_same_seed_and_resumes_exactly() -> None:
    a = _loader(train=True, seed=5, crop_padding=2, hflip=True, cutout=2)
    b = _loader(train=True, seed=5, crop_padding=2, hflip=True, cutout=2)
    a.set_epoch(4)
    b.set_epoch(4, start_sample=2 * 16)  # after two batches of 16
    full, tail = list(a), list(b)
    assert len(full) == 6 and len(tail) == 4
    for (xa, ya), (xb, yb) in zip(full[2:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_crop_offsets_and_flip_rate_match_torchvision_distribution() -> None:
    """Pad-4 random crop offsets cover 0..8 uniformly (as RandomCrop(32, padding=4)); ~half flipped."""
    n = 4000
    # image whose pixel value encodes its column, so the crop's x offset is readable
    cols = torch.arange(32, dtype=torch.uint8).view(1, 1, 1, 32).expand(n, 1, 32, 32)
    gen = torch.Generator().manual_seed(0)
    # the tensor loader's draw: offsets uniform in [0, 2 * padding], one crop per image
    dy, dx = (torch.randint(0, 9, (n,), generator=gen) for _ in range(2))
    cropped = crop(cols.contiguous() + 1, 4, dy, dx, None)  # +1: padding (0) is distinguishable
    # first column: value v means offset dx = 4 - (number of zero columns) ...
    left_pad = (cropped[:, 0, 16, :] == 0).int().argmin(dim=1)  # index of first non-pad column
    first_val = cropped[:, 0, 16, :].gather(1, left_pad[:, None]).squeeze(1).long() - 1
    dx = 4 - left_pad + first_val  # dx in [0, 8]
    counts = torch.bincount(dx, minlength=9)
    assert counts.numel() == 9 and dx.min() >= 0 and dx.max() <= 8
    assert counts.min() > n / 9 * 0.8 and counts.max() < n / 9 * 1.2
    loader = _loader(n=2000, batch=2000, train=True, seed=0, hflip=True)
    img = torch.zeros(2000, 3, 8, 8, dtype=torch.uint8)
    img[..., 0] = 255  # bright left column: flipped images have it on the right
    loader.images = img
    loader.set_epoch(0)
    x, _ = next(iter(loader))
    flipped = (x[:, 0, 0, -1] > 0).float().mean().item()
    assert 0.46 < flipped < 0.54


def test_shards_cover_every_sample_once() -> None:
    parts = [
        shard_indices(101, shuffle=True, seed=1, epoch=0, rank=r, world_size=4, even=False)
        for r in range(4)
    ]
    assert sorted(torch.cat(parts).tolist()) == list(range(101))
    even = [
        shard_indices(101, shuffle=True, seed=1, epoch=0, rank=r, world_size=4, even=True)
        for r in range(4)
    ]
    assert {len(p) for p in even} == {25}


def test_training_shards_deal_whole_batches_like_accumulation() -> None:
    """Step k on W ranks sees the W micro-batches that one process accumulating W would see."""
    full = shard_indices(103, shuffle=True, seed=3, epoch=2, rank=0, world_size=1, even=True)
    shards = [
        shard_indices(103, shuffle=True, seed=3, epoch=2, rank=r, world_size=2, even=True, chunk=8)
        for r in range(2)
    ]
    assert {len(p) for p in shards} == {51}  # 6 rounds of 8 each, then the 7-sample tail split
    for k in range(6):
        for r in range(2):
            micro = 2 * k + r
            assert shards[r][8 * k : 8 * k + 8].tolist() == full[8 * micro : 8 * micro + 8].tolist()
    used = torch.cat(shards).tolist()
    assert len(set(used)) == len(used) == 102


def test_tensor_loader_ranks_reproduce_the_one_process_batches_with_augmentation() -> None:
    images = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(96)
    common = dict(
        batch_size=12,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=torch.device("cpu"),
        train=True,
        seed=5,
        crop_padding=2,
        hflip=True,
        cutout=3,
    )
    single = TensorLoader(images, labels, **common)
    ranks = [TensorLoader(images, labels, rank=r, world_size=2, **common) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(1)
    micro = list(single)
    per_rank = [list(loader) for loader in ranks]
    assert len(micro) == 8 and all(len(p) == 4 for p in per_rank)
    for k in range(4):
        for r in range(2):
            assert torch.equal(per_rank[r][k][0], micro[2 * k + r][0])
            assert torch.equal(per_rank[r][k][1], micro[2 * k + r][1])


def test_torchvision_loader_same_interface(cifar10_root) -> None:
    cfg = data_cfg(
        name="cifar10",
        root=str(cifar10_root),
        loader="torchvision",
        augment={"crop_padding": 4, "hflip": True},
    )
    bundle = build_data(cfg, batch_size=16, num_workers=0)
    bundle.train.set_epoch(0)
    batches = list(bundle.train)
    assert len(batches) == len(bundle.train) == 6
    assert batches[0][0].shape == (16, 3, 32, 32)
    bundle.train.set_epoch(0, start_sample=4 * 16)  # after four batches of 16
    tail = list(bundle.train)
    assert len(tail) == 2 and torch.equal(tail[0][1], batches[4][1])  # same sample order


def _folder_bundle_decoding_on(device: str, root, **fields):
    """The gpu_decode path with its device check bypassed: decode_jpeg runs on the CPU too."""
    from resnets.data.factory import Batching, _folder_bundle

    cfg = data_cfg(
        name="imagefolder", root=str(root), image_size=32, val_crop=32, val_resize=36, **fields
    )
    return _folder_bundle(
        cfg, Batching(4, eval_batch_size=6), device=torch.device(device), workers=0, split="val"
    )


def test_device_decode_matches_the_per_sample_pipeline(imagefolder_root) -> None:
    per_sample = build_data(
        data_cfg(
            name="imagefolder",
            root=str(imagefolder_root),
            image_size=32,
            val_crop=32,
            val_resize=36,
        ),
        batch_size=4,
        eval_batch_size=6,
    )
    decoded = _folder_bundle_decoding_on("cpu", imagefolder_root, gpu_decode=True)
    assert len(decoded.val) == len(per_sample.val) == 3
    for (a, la), (b, lb) in zip(per_sample.val, decoded.val, strict=True):
        assert a.shape == b.shape == (6, 3, 32, 32) and torch.equal(la, lb)
        # PIL vs torchvision's JPEG decoder and resize: within about one grey level on average
        assert (a - b).abs().mean() < 0.03
    decoded.train.set_epoch(0)
    batches = list(decoded.train)
    assert len(batches) == 18 // 4
    assert all(x.shape == (4, 3, 32, 32) and torch.isfinite(x).all() for x, _ in batches)
    labels = torch.cat([y for _, y in batches])
    assert len(set(labels.tolist())) > 1  # shuffled across classes


def test_device_decode_refuses_cpu_and_in_memory_datasets(imagefolder_root) -> None:
    cfg = data_cfg(name="imagefolder", root=str(imagefolder_root), gpu_decode=True)
    with pytest.raises(DataError, match=r"data\.gpu_decode=true needs a CUDA device"):
        build_data(cfg, batch_size=4)
    with pytest.raises(DataError, match=r"data\.gpu_decode=true decodes image folders"):
        build_data(data_cfg(name="digits", gpu_decode=True), batch_size=4, device="cuda")
