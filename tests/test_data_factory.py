"""The data factory's seams: schema defaults, the loader protocol, CIFAR's image_size, and
`len(loader)` counted without drawing the epoch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from resnets.config import AugmentConfig, DataConfig
from resnets.data import build_data
from resnets.data.datasets import CIFAR_MEAN, CIFAR_STD
from resnets.data.loaders import Loader, SamplerLoader, TensorLoader

from .conftest import write_cifar10
from .test_data import data_cfg


def test_a_field_the_config_lacks_takes_the_schema_default(imagefolder_root) -> None:
    """A checkpoint's stored config is a plain DictConfig: without image_size an image folder is
    built at DataConfig's default (not a second default written in the factory)."""
    augment = OmegaConf.to_container(OmegaConf.structured(AugmentConfig))
    stored = OmegaConf.create(
        {"name": "imagefolder", "root": str(imagefolder_root), "augment": augment}
    )
    bundle = build_data(stored, batch_size=4)
    size = DataConfig.image_size
    assert bundle.image_size == size and bundle.eval_crop == size
    assert bundle.eval_resize == round(size / 0.875)
    assert isinstance(bundle.train, Loader) and isinstance(bundle.val, Loader)
    bundle.train.set_epoch(0)
    images, _ = next(iter(bundle.train))
    assert images.shape == (4, 3, size, size)
    val_images, _ = next(iter(bundle.val))
    assert val_images.shape == (4, 3, size, size)


@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_cifar_image_size_upsamples_every_batch(tmp_path, loader) -> None:
    """data.image_size=48 on 32 px CIFAR: validation batches are the normalised images resized
    bilinearly to 48 px (computed here from the pickled bytes), training batches are 48 px too."""
    data, _ = write_cifar10(tmp_path)["test_batch"]
    cfg = data_cfg(name="cifar10", root=str(tmp_path), image_size=48, loader=loader)
    bundle = build_data(cfg, batch_size=8, eval_batch_size=8)
    assert bundle.image_size == 48 and isinstance(bundle.val, Loader)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    raw = torch.from_numpy(data[:8].reshape(8, 3, 32, 32)).float() / 255
    expected = F.interpolate((raw - mean) / std, size=(48, 48), mode="bilinear", antialias=False)
    images, _ = next(iter(bundle.val))
    assert images.shape == (8, 3, 48, 48)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)
    bundle.train.set_epoch(0)
    train_images, _ = next(iter(bundle.train))
    assert train_images.shape == (8, 3, 48, 48)


class Numbers(Dataset):
    """Sample i is the one-pixel image i with label i: cheap, and every batch says what it holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((1, 1, 1), float(i)), i


def _build(kind: str, n: int, **keywords):
    if kind == "tensor":
        images = torch.zeros(n, 1, 1, 1, dtype=torch.uint8)
        return TensorLoader(
            images, torch.arange(n), mean=(0.0,), std=(1.0,), device="cpu", **keywords
        )
    options = dict(workers=0, pin_memory=False, persistent_workers=False, prefetch_factor=2)
    return SamplerLoader(Numbers(n), **options, **keywords)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["tensor", "torchvision"]),
    train=st.booleans(),
    n=st.integers(0, 90),
    batch_size=st.integers(1, 40),
    accumulate=st.integers(1, 3),
    world_size=st.integers(1, 4),
    rank_pick=st.integers(0, 3),
    drop_last=st.booleans(),
    start_pick=st.floats(0.0, 1.2),
    epoch=st.integers(0, 3),
    repeats=st.sampled_from([0, 2, 3]),
)
def test_len_is_the_number_of_batches_a_pass_yields(
    kind,
    train,
    n,
    batch_size,
    accumulate,
    world_size,
    rank_pick,
    drop_last,
    start_pick,
    epoch,
    repeats,
) -> None:
    """Counted from sizes alone, len(loader) equals the batches the next pass yields, for any
    dataset size, batch size (larger than the data too), accumulation, rank of any world size,
    drop_last, repeated augmentation and resume position."""
    loader = _build(
        kind,
        n,
        batch_size=batch_size,
        train=train,
        seed=3,
        drop_last=drop_last,
        rank=rank_pick % world_size,
        world_size=world_size,
        accumulate=accumulate,
        **({"repeats": repeats} if train else {}),
    )
    start = int(start_pick * n)
    loader.set_epoch(epoch, start_sample=start if train else None)
    expected = len(loader)
    batches = list(loader)
    assert expected == len(batches)
    if not train:  # evaluation: this rank's samples r, r+W, ..., each once
        seen = torch.cat([labels for _, labels in batches]) if batches else torch.empty(0)
        assert seen.tolist() == list(range(rank_pick % world_size, n, world_size))


def test_len_of_a_billion_sample_epoch_is_arithmetic() -> None:
    """Counting needs no order: drawing a permutation of 10**9 samples (8 GB) would not finish
    here. Rank 3 of 8, batch 32, accumulation 2: (10**9 // 512) steps of 2 micro-batches; the
    val shard holds 10**9 / 8 samples in ceil(125_000_000 / 32) batches."""
    n = 10**9
    keywords = dict(seed=0, rank=3, world_size=8, batch_size=32)
    train = _build("torchvision", n, train=True, drop_last=True, accumulate=2, **keywords)
    val = _build("torchvision", n, train=False, drop_last=False, **keywords)
    train.set_epoch(5, start_sample=512 * 1000)
    assert len(train) == (n // 512 - 1000) * 2
    assert len(val) == -(-(n // 8) // 32)
