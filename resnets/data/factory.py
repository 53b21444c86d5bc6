"""The data factory: `build_data(cfg.data, ...)` picks the dataset and builds its loaders."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from ..config import AugmentConfig, DataConfig
from ..messages import first_line
from . import transforms as T
from .bad_images import BadImageLoader, SkipUnreadable, collate_skipping, read_rgb
from .dali import dali_loaders, refuse_in_memory, require_dali
from .datasets import (
    ARRAY_DATASETS,
    FOLDER_DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    ArrayDataset,
    ArraySplit,
    check_arrays,
    dataset_names,
    image_folder_dir,
)
from .device_decode import BatchTransform, DeviceDecodeLoader, EncodedImages, collate_encoded
from .errors import DataError
from .inference import inference_facts
from .loaders import Loader, SamplerLoader, TensorLoader
from .normalize import DeviceNormalized, Normalize
from .repeated import check_repeats
from .safe_files import SafeImageFolder, drop_shared
from .shards import ShardFolder, check_shard_config, is_shard_split

NO_TEST_SPLIT = {
    "digits": "its validation images are a stratified data.val_fraction of the 1,797 digits",
    "fake": "it is generated: train and val only",
}

__all__ = ["LOADERS", "DataBundle", "DataError", "build_data", "dataset_names"]


L = TypeVar("L", bound=Loader)


@dataclass
class DataBundle:
    train: Loader
    val: Loader
    num_classes: int
    in_chans: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    val_size: int
    # validation geometry: the shorter side resized to eval_resize, a centre crop of eval_crop
    # (in-memory datasets: their stored size, so both are the identity on their own images),
    # then, for an in-memory dataset stored at another size, the normalised batch upsampled
    eval_resize: int = 0
    eval_crop: int = 0
    eval_upsample: int = 0

    def eval_preprocessing(self) -> dict[str, Any]:
        """Exactly the validation preprocessing, as plain values (resnets.data.inference)."""
        crop = self.eval_crop or self.image_size
        return {
            "mode": "L" if self.in_chans == 1 else "RGB",
            "resize": self.eval_resize or crop,
            "crop": crop,
            "interpolation": "bilinear",
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "upsample": self.eval_upsample or None,
            "input_size": self.eval_upsample or crop,
        }

    def inference_facts(self) -> dict[str, Any]:
        """What predict.py and export.py need without the data (stored in checkpoints)."""
        return inference_facts(self).to_dict()


class TensorImageDataset(Dataset):
    """uint8 CHW tensors through a per-sample torchvision transform (`data.loader=torchvision`)."""

    def __init__(self, split: ArraySplit, transform) -> None:
        self.images, self.labels, self.transform = split.images, split.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


class TransformedSubset(Dataset):
    """A subset of an ImageFolder with its own transform (train and val split one tree)."""

    def __init__(self, folder, indices: Sequence[int], transform) -> None:
        self.folder, self.indices, self.transform = folder, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.folder[self.indices[i]]
        return self.transform(image), label


def build_data(
    cfg: Mapping[str, Any],
    *,
    batch_size: int,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    split: str | None = None,
    accumulate: int = 1,
    stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> DataBundle:
    """Train and evaluation loaders for `cfg` (a `data` config node); `split` picks what `val` scores.

    The train loader yields `accumulate` micro-batches per rank for each optimizer step, cut as
    `resnets.data.plan` says. `stats`: (mean, std) of pretrained weights, used instead of the
    dataset's own when data.mean/std are unset (averaged over channels for one-channel images).
    A field `cfg` lacks takes the schema's default (resnets.config.DataConfig)."""
    cfg = with_schema_defaults(cfg)
    name = cfg["name"]
    check_repeats(cfg["repeated_aug"])
    if name not in dataset_names():
        raise DataError(f"data.name={name!r} is not valid; accepted: {', '.join(dataset_names())}")
    if cfg["gpu_decode"] and (device is None or torch.device(device).type != "cuda"):
        raise DataError("data.gpu_decode=true needs a CUDA device; accepted on CPU: false")
    if cfg["gpu_decode"] and name not in FOLDER_DATASETS:
        raise DataError(
            f"data.gpu_decode=true decodes image folders; data.name={name!r} is already decoded "
            f"in memory (accepted with gpu_decode: {', '.join(FOLDER_DATASETS)})"
        )
    if name in FOLDER_DATASETS and not cfg["root"]:
        raise DataError(
            f"data={name} needs data.root=PATH: a folder holding train/<class>/<images> "
            "(and val/<class>/..., or a data.val_fraction split of train/)"
        )
    split = split or cfg["split"]
    if split not in SPLITS:
        raise DataError(f"data.split={split!r} is not valid; accepted: {', '.join(SPLITS)}")
    if split == "test" and name in NO_TEST_SPLIT:
        # scoring the validation images under the name "test" would mislead
        raise DataError(
            f"data.split='test': {name} has no test split ({NO_TEST_SPLIT[name]}); "
            f"accepted for data={name}: val, train"
        )
    loader = cfg["loader"]
    if loader == "auto":
        loader = "tensor" if name in ARRAY_DATASETS else "torchvision"
    if loader not in LOADERS:
        raise DataError(
            f"data.loader={loader!r} is not valid; accepted: auto, {', '.join(LOADERS)}"
        )
    if loader not in FOLDER_LOADERS and name in FOLDER_DATASETS:
        raise DataError(
            f"data.loader={loader!r} is not valid for data.name={name!r}; accepted: "
            f"{', '.join(FOLDER_LOADERS)}, auto"
        )
    if loader == "dali":
        require_dali()
        if name not in FOLDER_DATASETS:
            refuse_in_memory()
    check_shard_config(cfg)
    batching = Batching(
        batch_size,
        eval_batch_size or batch_size,
        drop_last=bool(cfg["drop_last"]),
        accumulate=accumulate,
        seed=seed,
        rank=rank,
        world_size=world_size,
        repeats=check_repeats(cfg["repeated_aug"]),
    )
    common = dict(device=torch.device(device), workers=num_workers, split=split, stats=stats)
    if name in ARRAY_DATASETS:
        return _in_memory_bundle(cfg, ARRAY_DATASETS[name](cfg), loader, batching, **common)
    return _folder_bundle(cfg, batching, **common)


def with_schema_defaults(cfg: Mapping[str, Any]) -> DictConfig:
    """`cfg` over the schema's defaults: a field it lacks (a plain mapping, or the stored config
    of a checkpoint older than the field) gets the one default there is, DataConfig's. Keys the
    schema does not know are kept, and values are not retyped, as before."""
    defaults = OmegaConf.to_container(OmegaConf.structured(DataConfig))
    del defaults["name"]  # required: no default
    return OmegaConf.merge(OmegaConf.create(defaults), cfg)


def _stats(
    cfg, default_mean, default_std, channels: int, weights_stats=None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if weights_stats is not None:
        default_mean, default_std = (
            # a one-channel image meets summed first-conv weights: average the channel statistics
            (sum(v) / len(v),) if channels == 1 and len(v) != 1 else tuple(v)
            for v in weights_stats
        )
    mean = tuple(cfg["mean"] or default_mean)
    std = tuple(cfg["std"] or default_std)
    for field, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise DataError(
                f"data.{field}={list(values)} has {len(values)} values; the images have "
                f"{channels} channel{'s' if channels > 1 else ''} (accepted: {channels} numbers)"
            )
    if any(not s > 0 for s in std):
        raise DataError(f"data.std={list(std)} is not valid; accepted: positive numbers")
    return mean, std


def _check_classes(cfg, found: int) -> None:
    wanted = cfg["num_classes"]
    if wanted is not None and int(wanted) != found and cfg["name"] != "fake":
        raise DataError(f"data.num_classes={wanted} does not match the dataset, which has {found}")


@dataclass(frozen=True)
class Batching:
    """What a train loader and its val loader are built from besides their data: the train
    loader shuffles and cuts epochs as `resnets.data.plan` says; the val loader keeps every
    sample once, in order, at `eval_batch_size`."""

    batch_size: int
    eval_batch_size: int
    drop_last: bool = True
    accumulate: int = 1
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    repeats: int = 0  # repeated augmentation of the train loader (resnets.data.repeated)


def loader_pair(
    make: Callable[..., L],
    train_data: Any,
    eval_data: Any,
    batching: Batching,
    *,
    train_only: Mapping[str, Any] | None = None,
    **shared: Any,
) -> tuple[L, L]:
    """`make(data, **keywords)` for the training split and for the evaluated one: `shared`
    keywords go to both, `train_only` ones (augmentation) to the first."""
    b = batching
    shard = dict(seed=b.seed, rank=b.rank, world_size=b.world_size)
    train = make(
        train_data,
        batch_size=b.batch_size,
        train=True,
        drop_last=b.drop_last,
        accumulate=b.accumulate,
        repeats=b.repeats,
        **(train_only or {}),
        **shard,
        **shared,
    )
    val = make(
        eval_data, batch_size=b.eval_batch_size, train=False, drop_last=False, **shard, **shared
    )
    return train, val


def _tensor_loader(split: ArraySplit, **keywords: Any) -> TensorLoader:
    return TensorLoader(split.images, split.labels, **keywords)


def _in_memory_bundle(
    cfg: DictConfig,
    arrays: ArrayDataset,
    loader: str,
    batching: Batching,
    *,
    device: torch.device,
    workers: int,
    split: str,
    stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> DataBundle:
    check_arrays(arrays, cfg["name"])
    _refuse_folder_fields(cfg)
    mean, std = _stats(cfg, arrays.mean, arrays.std, int(arrays.train.images.shape[1]), stats)
    evaluated = arrays.train if split == "train" else arrays.val
    _check_classes(cfg, len(arrays.class_names))
    stored = int(arrays.train.images.shape[-1])
    # CIFAR is stored at 32 px; another data.image_size upsamples each batch (digits and fake
    # are generated at data.image_size already)
    size = int(cfg["image_size"])
    resize = size if size != stored else None
    train, val = LOADERS[loader](
        arrays.train,
        evaluated,
        batching,
        cfg=cfg,
        mean=mean,
        std=std,
        device=device,
        workers=workers,
        stored=stored,
        resize=resize,
    )
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(arrays.class_names),
        in_chans=int(arrays.train.images.shape[1]),
        image_size=size,
        class_names=arrays.class_names,
        mean=mean,
        std=std,
        train_size=len(arrays.train.labels),
        val_size=len(evaluated.labels),
        eval_resize=stored,
        eval_crop=stored,
        eval_upsample=resize or 0,
    )


def _refuse_folder_fields(cfg) -> None:
    """Image-file geometry that an in-memory dataset (stored at its size) would not read."""
    default_scale = list(AugmentConfig().random_resized_crop_scale)
    for key, value, unset in (
        ("val_resize", cfg["val_resize"], None),
        ("val_crop", cfg["val_crop"], None),
        (
            "augment.random_resized_crop_scale",
            list(cfg["augment"]["random_resized_crop_scale"]),
            default_scale,
        ),
    ):
        if value != unset:
            raise DataError(
                f"data.{key}={value!r} is not read by data={cfg['name']} (in memory, stored at "
                f"its size; data.image_size sets the network's input); accepted: {unset!r}, or "
                "an image-folder dataset"
            )


def _tensor_loaders(
    train_split: ArraySplit,
    evaluated: ArraySplit,
    batching: Batching,
    *,
    cfg,
    mean,
    std,
    device,
    workers,
    stored,
    resize,
) -> tuple[TensorLoader, TensorLoader]:
    """Batches cut and augmented as whole tensors on the device (crop, flip, cutout)."""
    aug = cfg["augment"]
    if aug["auto_augment"] or aug["random_erasing"]:
        raise DataError(
            "data.augment.auto_augment/random_erasing need data.loader=torchvision "
            "(the tensor loader does crop, flip and cutout)"
        )
    return loader_pair(
        _tensor_loader,
        train_split,
        evaluated,
        batching,
        train_only=dict(
            crop_padding=int(aug["crop_padding"]),
            hflip=bool(aug["hflip"]),
            cutout=int(aug["cutout"]),
        ),
        mean=mean,
        std=std,
        device=device,
        resize=resize,
    )


def _torchvision_loaders(
    train_split: ArraySplit,
    evaluated: ArraySplit,
    batching: Batching,
    *,
    cfg,
    mean,
    std,
    device,
    workers,
    stored,
    resize,
) -> tuple[SamplerLoader, SamplerLoader]:
    """Per-sample torchvision transforms in loader workers (every augmentation but cutout)."""
    aug = cfg["augment"]
    if aug["cutout"]:
        raise DataError("data.augment.cutout needs data.loader=tensor; use random_erasing here")
    return loader_pair(
        SamplerLoader,
        TensorImageDataset(train_split, T.small_image_train(aug, stored, mean, std, resize)),
        TensorImageDataset(evaluated, T.small_image_eval(mean, std, resize)),
        batching,
        **_loader_options(cfg, workers),
    )


# data.loader -> the (train, val) loader pair of an in-memory dataset (image folders always use
# torchvision's). The one list of loaders: build_data and config validation (with `auto`) read it.
LOADERS: dict[str, Callable[..., tuple[Loader, Loader]]] = {
    "tensor": _tensor_loaders,
    "torchvision": _torchvision_loaders,
    "dali": refuse_in_memory,  # image files only: resnets.data.dali, called from _folder_bundle
}
FOLDER_LOADERS = ("torchvision", "dali")  # what image folders and shards accept


def _loader_options(cfg, workers: int) -> dict[str, Any]:
    return dict(
        workers=workers,
        pin_memory=bool(cfg["pin_memory"]),
        persistent_workers=bool(cfg["persistent_workers"]),
        prefetch_factor=int(cfg["prefetch_factor"]),
    )


def _samples(dataset) -> list[tuple[str, int]]:
    """(path, label) pairs of an ImageFolder or of a TransformedSubset of one."""
    if isinstance(dataset, TransformedSubset):
        return [dataset.folder.samples[i] for i in dataset.indices]
    return list(dataset.samples)


def device_decode_loaders(
    train_set,
    eval_set,
    train_tf: BatchTransform,
    eval_tf: BatchTransform,
    batching: Batching,
    *,
    device: torch.device,
    **options,
) -> tuple[DeviceDecodeLoader, DeviceDecodeLoader]:
    """Workers read JPEG bytes; decoding and the folder pipelines' transforms run on `device`."""
    train, val = loader_pair(
        SamplerLoader,
        EncodedImages(_samples(train_set)),
        EncodedImages(_samples(eval_set)),
        batching,
        collate_fn=collate_encoded,
        **options,
    )
    return DeviceDecodeLoader(train, train_tf, device), DeviceDecodeLoader(val, eval_tf, device)


def _image_folder(root, transform=None):
    """An ImageFolder whose loader marks undecodable files; empty class folders stop here."""
    if is_shard_split(root):  # data=shards: the same samples, read from tar shards
        return ShardFolder(root, transform)
    try:
        return SafeImageFolder(str(root), transform=transform, loader=read_rgb)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise DataError(f"{root}: {first_line(err)}") from err


def _device_transforms(
    aug, size: int, val_resize: int, val_crop: int, mean, std, device: torch.device
) -> tuple[BatchTransform, BatchTransform]:
    """T.folder_train / T.folder_eval as batch transforms on the device (data.gpu_decode)."""
    auto = T._auto_augment(aug["auto_augment"])
    train = BatchTransform(
        train=True,
        size=size,
        mean=mean,
        std=std,
        device=device,
        scale=tuple(aug["random_resized_crop_scale"]),
        hflip=bool(aug["hflip"]),
        auto_augment=auto[0] if auto else None,
        random_erasing=float(aug["random_erasing"]),
    )
    val = BatchTransform(
        train=False, size=val_crop, resize=val_resize, mean=mean, std=std, device=device
    )
    return train, val


def _eval_folder(root: str, train_folder, transform):
    """An ImageFolder of a val/test tree labelled with train's class-to-index mapping: a class
    missing there just has no samples; a class train does not know is refused."""
    if is_shard_split(root):
        return ShardFolder(root, transform, classes=train_folder.classes)
    mapping = train_folder.class_to_idx
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    unknown = [name for name in found if name not in mapping]
    if unknown:
        raise DataError(
            f"{root} has class folder(s) {', '.join(map(repr, unknown))} that {train_folder.root} "
            f"does not have; accepted: the training classes ({', '.join(train_folder.classes)})"
        )

    class TrainClasses(SafeImageFolder):
        def find_classes(self, directory):
            return list(train_folder.classes), dict(mapping)

    folder = TrainClasses(root, transform=transform, loader=read_rgb, allow_empty=True)
    drop_shared(folder, train_folder)  # the held-out split never shares a real file with train
    # a class folder that is there but holds no image is a damaged tree, not a missing class
    present = set(folder.targets)
    empty = [name for name in found if mapping[name] not in present]
    if empty:
        raise DataError(f"{root}: found no valid file for the classes {', '.join(empty)}")
    return folder


def _folder_bundle(
    cfg: DictConfig,
    batching: Batching,
    *,
    device: torch.device,
    workers: int,
    split: str,
    stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> DataBundle:
    root = str(cfg["root"])
    mean, std = _stats(cfg, IMAGENET_MEAN, IMAGENET_STD, 3, stats)
    aug, size = cfg["augment"], int(cfg["image_size"])
    val_resize, val_crop = T.eval_geometry(cfg, size)
    # workers end in uint8 tensors; the batch is normalised on `device` (normalize.py)
    train_set, eval_set, classes = _folder_splits(
        cfg, split, T.folder_train(aug, size, mean), T.folder_eval(val_resize, val_crop)
    )
    _check_classes(cfg, len(classes))
    options = _loader_options(cfg, workers)
    if cfg["loader"] == "dali":  # resnets.data.dali: decoded and augmented by DALI
        train, val = dali_loaders(
            cfg,
            train_set,
            eval_set,
            batching,
            mean=mean,
            std=std,
            size=size,
            val_resize=val_resize,
            val_crop=val_crop,
            device=device,
            workers=workers,
            where=(f"the train split of {root}", f"the {split} split of {root}"),
        )
    elif cfg["gpu_decode"]:
        train, val = device_decode_loaders(
            train_set,
            eval_set,
            *_device_transforms(aug, size, val_resize, val_crop, mean, std, device),
            batching,
            device=device,
            **options,
        )
    else:
        train, val = _skipping_loaders(cfg, split, train_set, eval_set, batching, options)
        normalize = Normalize(mean, std, device)
        train = DeviceNormalized(train, normalize, device)
        val = DeviceNormalized(val, normalize, device)
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(classes),
        in_chans=3,
        image_size=size,
        class_names=list(classes),
        mean=mean,
        std=std,
        train_size=len(train_set),
        val_size=len(eval_set),
        eval_resize=val_resize,
        eval_crop=val_crop,
    )


def _folder_splits(cfg, split: str, train_tf, eval_tf) -> tuple[Dataset, Dataset, list[str]]:
    """(training set, evaluated set, class names) of an image-folder tree: its own val/ or test/
    folder, or (without one) a fixed stratified split of train/."""
    from sklearn.model_selection import train_test_split

    root = str(cfg["root"])
    train_folder = _image_folder(image_folder_dir(root, "train"))
    if not train_folder.samples:
        raise DataError(f"data.root={root!r}: {root}/train holds no images")
    held_out = "val" if split in ("val", "train") else "test"
    if (Path(root) / held_out).is_dir() or cfg["name"] == "imagenet":
        train_set = _image_folder(train_folder.root, transform=train_tf)
        if split == "train":
            eval_set = _image_folder(train_folder.root, transform=eval_tf)
        else:
            eval_set = _eval_folder(str(image_folder_dir(root, held_out)), train_folder, eval_tf)
        return train_set, eval_set, train_folder.classes
    targets = train_folder.targets
    try:
        train_idx, val_idx = train_test_split(
            list(range(len(targets))),
            test_size=float(cfg["val_fraction"]),
            stratify=targets,
            random_state=0,
        )
    except ValueError as err:  # e.g. a class with one image cannot be split stratified
        raise DataError(
            f"data.val_fraction={cfg['val_fraction']}: {root}/train cannot be split into "
            f"train and val by class ({err}); add a val/ folder or more images"
        ) from err
    train_set = TransformedSubset(train_folder, train_idx, train_tf)
    eval_set = TransformedSubset(train_folder, train_idx if split == "train" else val_idx, eval_tf)
    return train_set, eval_set, train_folder.classes


def _skipping_loaders(cfg, split: str, train_set, eval_set, batching: Batching, options):
    """Loaders that skip and count unreadable images (bad_images.py), up to data.max_bad_images."""
    root = str(cfg["root"])
    train, val = loader_pair(
        SamplerLoader,
        SkipUnreadable(train_set, substitute=True),
        SkipUnreadable(eval_set, substitute=False),
        batching,
        collate_fn=collate_skipping,
        **options,
    )
    limit = float(cfg["max_bad_images"])
    train = BadImageLoader(
        train, size=len(train_set), max_fraction=limit, where=f"the train split of {root}"
    )
    val = BadImageLoader(
        val, size=len(eval_set), max_fraction=limit, where=f"the {split} split of {root}"
    )
    return train, val
