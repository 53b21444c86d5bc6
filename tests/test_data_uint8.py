"""Image-folder workers return uint8; the device normalises each batch once.

The reference is the former worker pipeline, written out here with torchvision's own
ToDtype(float32, scale=True) + Normalize applied image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from resnets.config import AugmentConfig, DataConfig
from resnets.data import build_data
from resnets.data import transforms as T
from resnets.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from resnets.data.normalize import Normalize

from .conftest import write_image_folder


def _jpegs(tmp_path, n: int = 12, seed: int = 0) -> list[Image.Image]:
    """Varied real JPEGs (gradients, noise, odd sizes), decoded back as ImageFolder does."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        ramp = np.linspace(0, 255, w)[None, :, None] * rng.random(3)
        pixels = np.clip(ramp + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / f"{k}.JPEG"
        Image.fromarray(pixels).save(path, quality=85)
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def _per_image(transform, images, seed: int = 0) -> list[torch.Tensor]:
    out = []
    for k, image in enumerate(images):
        torch.manual_seed(seed * 1000 + k)  # each sample's own seed, as SeededSamples gives it
        out.append(transform(image))
    return out


def _float_reference(geometry: list[v2.Transform], after: list[v2.Transform] = ()) -> v2.Compose:
    """The former pipeline: geometry on the PIL image, then float32 normalisation per image."""
    return v2.Compose(
        [
            *geometry,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            *after,
        ]
    )


def _aug(**fields):
    return OmegaConf.merge(OmegaConf.structured(AugmentConfig), fields)


@pytest.mark.parametrize("auto_augment", [None, "trivialaugment", "randaugment"])
def test_uint8_workers_and_batch_normalisation_equal_the_float_pipeline(
    tmp_path, auto_augment
) -> None:
    images = _jpegs(tmp_path)
    aug = _aug(hflip=True, auto_augment=auto_augment, random_erasing=0.0)
    geometry = [v2.RandomResizedCrop(48, scale=(0.08, 1.0), antialias=True)]
    geometry += [v2.RandomHorizontalFlip(), *T._auto_augment(auto_augment)]
    old = torch.stack(_per_image(_float_reference(geometry), images))
    worker = _per_image(T.folder_train(aug, 48, IMAGENET_MEAN), images)
    assert all(x.dtype == torch.uint8 and x.shape == (3, 48, 48) for x in worker)
    new = Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.stack(worker))
    assert new.dtype == torch.float32
    assert (new - old).abs().max().item() < 1e-5
    assert old.std() > 0.3  # real pictures, not a constant that any pipeline maps alike


def test_validation_transform_equals_the_float_pipeline(tmp_path) -> None:
    images = _jpegs(tmp_path, seed=1)
    old = _per_image(_float_reference([v2.Resize(36, antialias=True), v2.CenterCrop(32)]), images)
    worker = _per_image(T.folder_eval(36, 32), images)
    assert {x.dtype for x in worker} == {torch.uint8}
    new = Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.stack(worker))
    assert (new - torch.stack(old)).abs().max().item() < 1e-5


def test_random_erasing_fills_the_mean_colour_within_half_a_grey_level(tmp_path) -> None:
    """torchvision erases normalised images with 0 (the mean); on uint8 the box gets the mean
    rounded to a grey level: the same boxes (same draws), values within 0.5/255/std of 0."""
    images = _jpegs(tmp_path, seed=2)
    aug = _aug(hflip=True, random_erasing=0.5)
    geometry = [v2.RandomResizedCrop(48, antialias=True), v2.RandomHorizontalFlip()]
    old = torch.stack(_per_image(_float_reference(geometry, [v2.RandomErasing(p=0.5)]), images))
    new = Normalize(IMAGENET_MEAN, IMAGENET_STD)(
        torch.stack(_per_image(T.folder_train(aug, 48, IMAGENET_MEAN), images))
    )
    erased = old == 0  # torchvision's erased pixels, exactly 0 after normalisation
    assert erased.any(dim=(1, 2, 3)).sum() >= 2  # some images were erased, some not
    assert not erased.any(dim=(1, 2, 3)).all()
    assert (new - old)[~erased].abs().max().item() < 1e-5
    bound = torch.tensor([0.5 / 255 / s for s in IMAGENET_STD]).view(1, 3, 1, 1).expand_as(new)
    assert ((new - old).abs() <= bound + 1e-6)[erased].all()


def test_normalize_refuses_float_input_and_follows_the_batch_device() -> None:
    norm = Normalize([0.5], [0.25])
    with pytest.raises(
        TypeError, match=r"expected uint8 images from the loader, got torch\.float32"
    ):
        norm(torch.zeros(1, 1, 2, 2))
    out = norm(torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3))
    # independently: (v / 255 - 0.5) / 0.25
    assert out.flatten().tolist() == pytest.approx([-2.0, -1.2, 2.0], abs=1e-6)


@pytest.mark.parametrize("workers", [0, 1])
def test_folder_loader_workers_yield_uint8_and_the_bundle_normalises(tmp_path, workers) -> None:
    root = write_image_folder(tmp_path, per_class=5, size=40)
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        dict(name="imagefolder", root=str(root), image_size=32, val_resize=36, val_crop=32),
    )
    bundle = build_data(cfg, batch_size=4, eval_batch_size=5, num_workers=workers)
    bundle.train.set_epoch(0)
    train_raw = list(bundle.train.loader)  # the worker side: what is collated, pinned and copied
    bundle.train.set_epoch(0)
    passes = [(train_raw, list(bundle.train)), (list(bundle.val.loader), list(bundle.val))]
    for (raw, normalised), loader in zip(passes, (bundle.train, bundle.val), strict=True):
        assert len(raw) == len(normalised) == len(loader) > 0
        for (u8, labels), (x, same_labels) in zip(raw, normalised, strict=True):
            assert u8.dtype == torch.uint8 and x.dtype == torch.float32
            assert x.nbytes == 4 * u8.nbytes  # a quarter of the bytes cross from the workers
            assert torch.equal(labels, same_labels)
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            expected = (u8.double() / 255 - mean) / std  # independently, in float64
            assert (x.double() - expected).abs().max().item() < 1e-5
