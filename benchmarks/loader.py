"""Tensor-resident loader vs torchvision's per-sample CIFAR pipeline: images/s, same workers.

Peer: a Dataset that turns each uint8 HWC image into a PIL image (as torchvision's CIFAR10 does)
and applies RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, batched by a
DataLoader. Ours: the whole uint8 set in one tensor, crop/flip/normalise as batch operations.
Target: ours >= 5x with the same number of workers.

`image_files` (`--jpegs N`, 0 skips it): ImageNet-sized JPEGs (500x375, q90) to normalised
224 px random-resized-crop + flip batches, one epoch each, through the torchvision folder
pipeline (`--workers` loader processes) against DALI's CPU operators (`--workers` threads; the
GPU run is benchmarks/gpu.py) and against both reading tar shards (resnets.data.shards):
images/s and the CPU cores the pass kept busy (process + worker CPU time / wall time).

    python -m benchmarks.loader [--images 10000] [--repeats 3] [--jpegs 512] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnets.data.datasets import CIFAR_MEAN, CIFAR_STD
from resnets.data.loaders import TensorLoader

from .common import interleaved, write_jpegs, write_result

BATCH = 128
TARGET = 5.0


class PerSampleCifar(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def epoch_rate(loader, epoch: int) -> float:
    """Images per second for one pass, the batches materialised as a training step would."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        seen += labels.numel()
        images.sum()  # touch the data
    return seen / (time.perf_counter() - start)


def _cpu_seconds() -> float:
    """CPU time of this process's threads (DALI's included) and of its finished children
    (loader workers that are not persistent end with their epoch)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def image_files(n: int, workers: int, repeats: int, batch: int = 64) -> dict:
    """One epoch of 224 px training batches from n 500x375 JPEGs, four ways (see the docstring)."""
    from omegaconf import OmegaConf

    from resnets.config import DataConfig
    from resnets.data import build_data
    from resnets.data.shards import write_shards

    batch = min(batch, max(1, n // 4))  # a few whole batches at smoke sizes too
    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = Path(tmp) / "folder", Path(tmp) / "shards"
        write_jpegs(folder, n, (500, 375))
        write_shards(folder, shards, 10**9)
        loaders, cores = {}, {}
        for name, data, root in [("folder", "imagefolder", folder), ("shards", "shards", shards)]:
            for kind in ("torchvision", "dali"):
                fields = dict(name=data, root=str(root), image_size=224, loader=kind)
                cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), fields)
                cfg.persistent_workers = False  # workers exit each epoch: their CPU time counts
                bundle = build_data(cfg, batch_size=batch, num_workers=workers)
                loaders[f"{kind}_{name}"] = bundle.train
                cores[f"{kind}_{name}"] = []

        counter = iter(range(1, 10**6))

        def epoch(key: str) -> float:
            loader = loaders[key]
            loader.set_epoch(next(counter))
            cpu, start, seen = _cpu_seconds(), time.perf_counter(), 0
            for images, labels in loader:
                seen += labels.numel()
                images.sum()  # touch the data
            wall = time.perf_counter() - start
            cores[key].append((_cpu_seconds() - cpu) / wall)
            return seen / wall

        for key in loaders:  # warm-up: workers, DALI's pipeline, the page cache
            epoch(key)
            cores[key].clear()
        rates = interleaved({key: (lambda k=key: epoch(k)) for key in loaders}, repeats)
    base = rates["torchvision_folder"]
    used = {k: sorted(v)[len(v) // 2] for k, v in cores.items()}
    return {
        "images": n,
        "image_size": "500x375 JPEG q90 -> 224 random-resized crop + flip, normalised",
        "batch_size": batch,
        "workers": workers,
        "images_per_s": rates,
        "cpu_cores_used": used,
        # on a shared machine the passes get what CPU is left: images per CPU second compares
        # the pipelines' own cost
        "images_per_cpu_second": {k: rates[k] / used[k] for k in rates},
        "ratio_vs_torchvision_folder": {k: v / base for k, v in rates.items()},
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jpegs", type=int, default=512, help="ImageNet-sized JPEGs; 0 skips")
    parser.add_argument("--workers", type=int, default=2, help="loader processes / DALI threads")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images)

    ours = TensorLoader(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        batch_size=BATCH,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        device=torch.device("cpu"),
        train=True,
        crop_padding=4,
        hflip=True,
    )
    dataset = PerSampleCifar(images, labels)
    peer_w0 = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=0)
    peer_w2 = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    epoch_rate(peer_w2, 0)  # start the workers before timing
    counter = iter(range(10**6))
    rates = interleaved(
        {
            "ours_workers0": lambda: epoch_rate(ours, next(counter)),
            "torchvision_workers0": lambda: epoch_rate(peer_w0, 0),
            "torchvision_workers2": lambda: epoch_rate(peer_w2, 0),
        },
        args.repeats,
    )
    ratio = rates["ours_workers0"] / rates["torchvision_workers0"]
    return write_result(
        "loader",
        {
            "images": args.images,
            "batch_size": BATCH,
            "images_per_s": rates,
            "ratio_same_workers": ratio,
            "ratio_vs_torchvision_2_workers": rates["ours_workers0"]
            / rates["torchvision_workers2"],
            "target": f">= {TARGET}x",
            "passed": ratio >= TARGET,
            **(
                {"image_files": image_files(args.jpegs, args.workers, args.repeats)}
                if args.jpegs
                else {}
            ),
        },
    ) and {"ratio": ratio}


if __name__ == "__main__":
    main()
