"""Shared fixtures: tiny datasets written in exactly the real on-disk formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_torch_thread():
    """Tiny convolutions run fastest on one thread (and the same on every machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_cifar10(root: Path, per_batch: int = 20, test: int = 40, seed: int = 0) -> dict:
    """`cifar-10-batches-py` as the python version ships it: pickled dicts with byte keys."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=n)]
        entry = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        written[name] = (data, labels)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f)
    return written


def write_cifar100(root: Path, train: int = 100, test: int = 50, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name, n in (("train", train), ("test", test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, size=n)]
        entry = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": data,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        written[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump(
            {
                b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
            },
            f,
        )
    return written


def write_image_folder(
    root: Path,
    classes=("cat", "dog", "eel"),
    per_class: int = 6,
    size: int = 40,
    splits=("train", "val"),
    seed: int = 0,
) -> Path:
    """An ImageFolder tree of real JPEG files: root/<split>/<class>/<n>.JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, size=(size, size + 8, 3), dtype=np.uint8) + 60 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root)
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root)
    return root


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="session")
def shards_root(tmp_path_factory, imagefolder_root) -> Path:
    """The image-folder fixture as tar shards (`python -m resnets.data.shards`)."""
    from resnets.data.shards import write_shards

    root = tmp_path_factory.mktemp("shards")
    write_shards(imagefolder_root, root, 10**9)
    return root


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that start several processes (torchrun, gloo) take tens of seconds each: they run
    in `make test`, not in the quick `make test-fast` loop."""
    for item in items:
        if item.get_closest_marker("distributed") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


# A recipe's pipeline at digits size: the recipe's components (model family and options,
# optimizer, loss, mixing, augmentation, progressive resizing) on 32 fake 16-px images, 1 epoch
RECIPE_SMOKE = [
    "data=fake",
    "data.fake_size=32",
    "data.num_classes=4",
    "data.image_size=16",
    # in-memory data is scored at its stored size: the recipes' ImageNet resize/crop unset
    "data.val_resize=null",
    "data.val_crop=null",
    "data.loader=torchvision",
    "model.layers=[1,1,1,1]",
    "model.block=bottleneck",
    "model.base_channels=8",
    "trainer=cpu",
    "trainer.epochs=1",
    "trainer.global_batch_size=8",
    "trainer.eval_batch_size=32",
    "trainer.workers=0",
    "trainer.progress=false",
]


@pytest.fixture
def recipe_smoke() -> list[str]:
    """Overrides that shrink any ImageNet recipe to a one-epoch CPU run of the same pipeline."""
    return list(RECIPE_SMOKE)
