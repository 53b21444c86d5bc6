"""Image-folder batches as workers hand them over: float32 (before) vs uint8 (now), batch 64, 224 px.

Before, each worker normalised its images to float32; now it returns uint8 and the device
normalises the batch once after the copy. Measured per batch: bytes, and the main process's wait
for a batch from one DataLoader worker handing over ready-made samples (its default_collate into
shared memory, the hand-over, and pinning where CUDA is present); for uint8 also the
normalisation on the device (the CPU without CUDA) that replaces the workers'. A few seconds.

    python -m benchmarks.worker_batches [--batch 64] [--size 224] [--batches 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from resnets.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from resnets.data.normalize import Normalize

from .common import median_time, write_result


class Samples(Dataset):
    """Ready-made worker outputs (the decode and augmentation cost is the same either way)."""

    def __init__(self, samples: list[tuple[torch.Tensor, int]], length: int) -> None:
        self.samples, self.length = samples, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.samples[i % len(self.samples)]


def per_batch_ms(samples: list[tuple[torch.Tensor, int]], batch: int, batches: int) -> float:
    """Median main-process wait per batch from one DataLoader worker: its default_collate into
    shared memory, the hand-over, and pinning (with CUDA), the first batch left out."""
    loader = DataLoader(
        Samples(samples, batch * (batches + 1)),
        batch_size=batch,
        num_workers=1,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=1,
    )
    waits, it = [], iter(loader)
    next(it)
    while True:
        start = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            break
        waits.append(time.perf_counter() - start)
    return 1e3 * statistics.median(waits)


def measure(batch: int, size: int, batches: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    uint8 = [
        (torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen), k % 10)
        for k in range(batch)
    ]
    cpu_norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    float32 = [(cpu_norm(x), y) for x, y in uint8]  # what the workers returned before
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    out: dict = {}
    for name, samples in (("float32_before", float32), ("uint8_now", uint8)):
        images = default_collate(samples)[0]
        row = {
            "bytes_per_batch": images.nbytes,
            "host_ms_per_batch": per_batch_ms(samples, batch, batches),
            "device_normalise_ms": None,
        }
        if images.dtype == torch.uint8:  # the extra work the device now does
            norm, on_device = Normalize(IMAGENET_MEAN, IMAGENET_STD, device), images.to(device)
            row["device_normalise_ms"] = 1e3 * median_time(
                lambda n=norm, x=on_device: n(x), batches, sync=cuda
            )
        out[name] = row
    before, now = out["float32_before"], out["uint8_now"]
    return {
        "batch_size": batch,
        "image_size": size,
        "pinned": cuda,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "batches": out,
        "bytes_ratio": before["bytes_per_batch"] / now["bytes_per_batch"],
        "host_time_ratio": before["host_ms_per_batch"] / now["host_ms_per_batch"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args(argv)
    result = measure(args.batch, args.size, args.batches)
    write_result("worker_batches", result)
    return result


if __name__ == "__main__":
    main()
