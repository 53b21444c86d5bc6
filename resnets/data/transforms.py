"""Per-sample torchvision (v2) pipelines, for image folders and for `data.loader=torchvision`."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import v2

from .errors import DataError
from .normalize import Normalize

AUTO_AUGMENT = ("autoaugment", "trivialaugment", "randaugment")


def _auto_augment(name: str | None) -> list[v2.Transform]:
    if name is None:
        return []
    if name not in AUTO_AUGMENT:
        raise DataError(
            f"data.augment.auto_augment={name!r} is not valid; accepted: null, {', '.join(AUTO_AUGMENT)}"
        )
    return [
        {
            "autoaugment": v2.AutoAugment,
            "trivialaugment": v2.TrivialAugmentWide,
            "randaugment": v2.RandAugment,
        }[name]()
    ]


def _to_normalized(mean: Sequence[float], std: Sequence[float]) -> list:
    # the one normalisation (resnets.data.normalize): the tensor loader's numbers exactly
    return [v2.ToImage(), Normalize(mean, std)]


def _erasing(p: float) -> list[v2.Transform]:
    return [v2.RandomErasing(p=p)] if p > 0 else []


def _resize(resize: int | None) -> list[v2.Transform]:
    return [v2.Resize((resize, resize), antialias=False)] if resize else []


def small_image_train(aug, image_size: int, mean, std, resize: int | None = None) -> v2.Compose:
    """CIFAR-style: pad + random crop, flip, optional auto-augment and erasing (uint8 CHW tensors in);
    `resize` then upsamples to the size pretrained weights suit."""
    ops: list[v2.Transform] = []
    if aug.crop_padding:
        ops.append(v2.RandomCrop(image_size, padding=aug.crop_padding))
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip())
    ops += _auto_augment(aug.auto_augment)
    return v2.Compose(
        ops + _to_normalized(mean, std) + _resize(resize) + _erasing(aug.random_erasing)
    )


def small_image_eval(mean, std, resize: int | None = None) -> v2.Compose:
    return v2.Compose(_to_normalized(mean, std) + _resize(resize))


def _uint8_erasing(p: float, mean: Sequence[float]) -> list[v2.Transform]:
    """Random erasing on uint8 images: the erased box gets the mean colour (to the nearest grey
    level), which normalises to ~0 as torchvision's erasing of normalised images gives."""
    fill = [round(255 * m) for m in mean]
    return [v2.RandomErasing(p=p, value=fill)] if p > 0 else []


def folder_train(aug, image_size: int, mean) -> v2.Compose:
    """ImageNet-style: random-resized crop, flip, optional auto-augment (on the PIL image, as
    before), then a uint8 CHW tensor and erasing. Workers stop at uint8: the device normalises
    each batch (resnets.data.normalize), a quarter of the bytes to pin and copy."""
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=tuple(aug.random_resized_crop_scale), antialias=True)
    ]
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip())
    ops += _auto_augment(aug.auto_augment)
    return v2.Compose([*ops, v2.ToImage(), *_uint8_erasing(aug.random_erasing, mean)])


def eval_geometry(cfg, image_size: int) -> tuple[int, int]:
    """(resize, crop) of validation for image files: the shorter side goes to `resize`, then a
    centre crop of `crop` (by default the classic 0.875 ratio, 256 -> 224)."""
    crop = int(cfg.get("val_crop") or image_size)
    return int(cfg.get("val_resize") or round(crop / 0.875)), crop


def folder_eval(resize: int, crop: int) -> v2.Compose:
    """Validation for PIL images, to a uint8 CHW tensor (normalised by
    `resnets.data.normalize.Normalize`, per batch on the device). On a picture already `crop` px
    square with resize == crop (the in-memory datasets) both steps are the identity, so with
    that normalisation this equals `small_image_eval`."""
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop), v2.ToImage()])
