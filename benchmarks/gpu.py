"""GPU figures in steady state (skipped without CUDA): compile and warm-up excluded, synchronised.

- resnet50 at 224 px, bf16-mixed + channels_last, batch 128, synthetic tensor-resident data:
  training images/s of Trainer.fit (its steady epochs: epoch 1 pays for compilation and cuDNN's
  autotuning and is left out) against a bare loop doing the same work (same data bundle, model,
  SGD, autocast; timed with CUDA events after warm-up steps), eager and compiled; also a loop
  with torchvision's reference-script settings (torchvision's resnet50, fp16 + GradScaler, NCHW).
- resnet18 with the CIFAR stem on 50,000 synthetic 32 px images (CIFAR-10's size), batch 512,
  trainer=gpu (compiled): seconds per steady training epoch, and the first epoch's separately.
- gpu_decode: images/s of one epoch of an ImageFolder of JPEGs (500x375, ImageNet's commonest
  size) decoded on the GPU against the worker path (PIL decoding in `--workers` processes), and
  DALI (`data.loader=dali`: mixed decoder, crop fused, `--workers` threads) from the folder and
  from its tar shards, all to normalised batches on the GPU.
- dali_feed: ResNet-50 bf16 channels_last steps fed by DALI against the same steps on one
  resident batch: the share of a step spent waiting for data (goal: under 5%).

    python -m benchmarks.gpu [--repeats 3] [--cpu-smoke]

`--cpu-smoke` runs every code path at tiny sizes on the CPU (no compile, host timers) and writes
nothing: a check that the script works before a GPU runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from resnets.config import DataConfig

from .common import bare_loop, interleaved, write_jpegs, write_result
from .trainer_overhead import config


def seconds_per_step(
    step: Callable[[], None], warmup: int, steps: int, device: torch.device
) -> float:
    """Mean time of `steps` calls after `warmup` calls: CUDA events on the GPU (the device's own
    clock, after a synchronise), the host clock elsewhere."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / steps
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - begin) / steps


def _endless(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def bare_rate(
    cfg,
    *,
    warmup: int,
    steps: int,
    model: nn.Module | None = None,
    fp16_scaler: bool = False,
    channels_last: bool | None = None,
) -> float:
    """Training images/s of the loop a user writes by hand, doing the trainer's work: the same
    data bundle, model, SGD settings, precision, memory format and compile setting."""
    device = torch.device(
        "cuda" if cfg.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"
    )
    loop = bare_loop(
        cfg, device=device, model=model, fp16_scaler=fp16_scaler, channels_last=channels_last
    )
    batches = _endless(loop.data.train)
    return loop.batch_size / seconds_per_step(
        lambda: loop.step(*next(batches)), warmup, steps, device
    )


def trainer_epochs(cfg) -> dict[str, list[float]]:
    """Trainer.fit's per-epoch training time and images/s, read back from its TensorBoard log
    (each epoch ends with a host read of its sums, so its time covers the GPU's work)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from resnets.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, out).fit()
        events = EventAccumulator(str(Path(out) / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        return {
            tag: [e.value for e in events.Scalars(f"perf/epoch_{tag}")]
            for tag in ("time_s", "images_per_s")
        }


def trainer_rate(cfg) -> float:
    """Median images/s of the steady epochs (all but the first)."""
    rates = trainer_epochs(cfg)["images_per_s"]
    return statistics.median(rates[1:])


def _r50_config(epochs: int, images: int, compiled: bool, smoke: bool):
    size, classes = ("32", "10") if smoke else ("224", "1000")
    return config(
        epochs,
        images,
        "32" if smoke else "bf16-mixed",
        (
            "model=resnet50",
            f"data.image_size={size}",
            f"data.num_classes={classes}",
            "trainer.channels_last=true",
            f"trainer.compile={str(compiled).lower()}",
            f"trainer.batch_size={8 if smoke else 128}",
        ),
    )


def resnet50_figures(repeats: int, smoke: bool) -> dict:
    epochs, images = (2, 16) if smoke else (3, 128 * 24)
    warmup, steps = (1, 2) if smoke else (15, 40)
    modes = (False,) if smoke else (False, True)
    result: dict = {"batch_size": 8 if smoke else 128, "images_per_s": {}}
    rates = result["images_per_s"]
    for compiled in modes:
        name = "compiled" if compiled else "eager"
        cfg = _r50_config(epochs, images, compiled, smoke)
        trainer, bare = [], []
        for _ in range(repeats):  # alternating, so drifts hit both alike
            trainer.append(trainer_rate(cfg))
            bare.append(bare_rate(cfg, warmup=warmup, steps=steps))
        rates[f"trainer_{name}"] = statistics.median(trainer)
        rates[f"bare_{name}"] = statistics.median(bare)
        result[f"ratio_trainer_vs_bare_{name}"] = rates[f"trainer_{name}"] / rates[f"bare_{name}"]
    if not smoke:
        reference = config(
            epochs,
            images,
            "32",
            (
                "model=resnet50",
                "data.image_size=224",
                "data.num_classes=1000",
                "trainer.compile=false",
                "trainer.channels_last=false",
            ),
        )
        rates["torchvision_reference"] = bare_rate(
            reference,
            warmup=warmup,
            steps=steps,
            model=torchvision.models.resnet50(),
            fp16_scaler=True,
        )
        result["ratio_trainer_eager_vs_torchvision_reference"] = (
            rates["trainer_eager"] / rates["torchvision_reference"]
        )
        result["compile_speedup_trainer"] = rates["trainer_compiled"] / rates["trainer_eager"]
        result["compile_speedup_bare"] = rates["bare_compiled"] / rates["bare_eager"]
    result["precision"] = "fp32 (CPU smoke)" if smoke else "bf16-mixed, channels_last"
    return result


def cifar_resnet18_epoch(smoke: bool) -> dict:
    images = 256 if smoke else 50_000
    extra = ("model=resnet18", "trainer.progress=false")
    extra += (
        ("trainer.batch_size=128",)
        if smoke
        else (
            "trainer=gpu",
            "trainer.batch_size=512",
        )
    )
    times = trainer_epochs(config(3, images, "32" if smoke else "bf16-mixed", extra))["time_s"]
    return {
        "images": images,
        "batch_size": 128 if smoke else 512,
        "steady_epoch_s": statistics.median(times[1:]),
        "first_epoch_s": times[0],  # compilation and cuDNN autotuning included
    }


def _folder_rate(loader, device: torch.device) -> float:
    """images/s of the second of two epochs (the first warms workers, decoders, allocator)."""
    for epoch in range(2):
        loader.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, seen = time.perf_counter(), 0
        for images, _ in loader:  # every path gives normalised float batches
            images = images.to(device, non_blocking=True)
            seen += len(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return seen / elapsed


def decode_rates(root: Path, shards: Path, n: int, workers: int, smoke: bool) -> dict:
    """One epoch of train batches, normalised on the device, after one warm-up epoch: the worker
    path (PIL in `workers` processes), gpu_decode (nvJPEG), and DALI (mixed decoder with the
    crop fused, `workers` threads) from the folder and from its tar shards."""
    from resnets.data import build_data
    from resnets.data.factory import Batching, _folder_bundle

    device = torch.device("cpu" if smoke else "cuda")
    batch = 8 if smoke else 128

    def rate(path: str) -> float:
        fields = {
            "name": "shards" if path == "dali_shards" else "imagefolder",
            "root": str(shards if path == "dali_shards" else root),
            "image_size": 224,
            "gpu_decode": path == "gpu_decode",
            "loader": "dali" if path.startswith("dali") else "torchvision",
            "augment": {"hflip": True},
        }
        cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), fields)
        if path.startswith("dali"):
            bundle = build_data(cfg, batch_size=batch, num_workers=workers, device=device)
        else:  # _folder_bundle directly: build_data refuses gpu_decode off CUDA (the smoke run)
            bundle = _folder_bundle(
                cfg,
                Batching(batch, eval_batch_size=batch),
                device=device,
                workers=workers,
                split="val",
            )
        return _folder_rate(bundle.train, device)

    paths = ("gpu_decode", "workers", "dali", "dali_shards")
    rates = interleaved({p: (lambda p=p: rate(p)) for p in paths}, 1)
    return {
        "images": n,
        "image_size": "500x375 JPEG q90 -> 224 random-resized crop + flip",
        "workers": workers,
        "images_per_s": rates,
        "ratio_gpu_decode_vs_workers": rates["gpu_decode"] / rates["workers"],
        "ratio_dali_vs_workers": rates["dali"] / rates["workers"],
    }


def dali_feed(root: Path, threads: int, smoke: bool) -> dict:
    """Does DALI keep up with ResNet-50 (bf16, channels_last) on one GPU with `threads` CPU
    threads? Steps on DALI's float16 batches against the same steps on one resident batch: the
    data wait is the share of the step the first takes longer (goal: under 5%)."""
    from torchvision.datasets import ImageFolder

    from resnets.data.dali import DaliLoader, EncodedSamples
    from resnets.models import build_model

    device = torch.device("cpu" if smoke else "cuda")
    batch, size, name = (8, 64, "resnet18") if smoke else (128, 224, "resnet50")
    samples = EncodedSamples(ImageFolder(str(root / "train")))
    loader = DaliLoader(
        samples, batch_size=batch, train=True, seed=0, mean=(0.45,) * 3, std=(0.225,) * 3,
        size=size, device=device, workers=threads, dtype=torch.float32 if smoke else torch.float16,
    )  # fmt: skip
    model = build_model(name, num_classes=8).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = torch.float32 if smoke else torch.bfloat16

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=not smoke):
            loss = nn.functional.cross_entropy(model(images).float(), labels.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed(batches: Callable[[], Iterator]) -> tuple[float, int]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, seen = time.perf_counter(), 0
        for images, labels, _ in batches():
            step(images, labels)
            seen += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, seen

    loader.set_epoch(0)
    resident = next(iter(loader))
    timed(lambda: loader)  # warm-up: cuDNN autotuning, DALI's buffers
    loader.set_epoch(1)
    fed, seen = timed(lambda: loader)
    alone, _ = timed(lambda: [resident] * (seen // batch))
    return {
        "model": name,
        "batch_size": batch,
        "dali_threads": threads,
        "images_per_s": {"dali_fed": seen / fed, "resident_batch": seen / alone},
        "data_wait_share": max(0.0, 1 - alone / fed),
        "goal": "data wait under 5% of a step with <= 8 CPU threads",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of every path")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        write_result("gpu", {"skipped": "no CUDA device"})
        return {"skipped": True}
    result = {
        "resnet50": resnet50_figures(1 if smoke else args.repeats, smoke),
        "cifar_resnet18": cifar_resnet18_epoch(smoke),
    }
    with tempfile.TemporaryDirectory() as tmp:
        from resnets.data.shards import write_shards

        root, shards, n = Path(tmp) / "folder", Path(tmp) / "shards", 16 if smoke else 2048
        write_jpegs(root, n, (500, 375))
        write_shards(root, shards, 10**9)
        workers = 0 if smoke else args.workers
        result["gpu_decode"] = decode_rates(root, shards, n, workers, smoke)
        result["dali_feed"] = dali_feed(root, max(workers, 1), smoke)
    if smoke:
        print(json.dumps(result, indent=2))
    else:
        write_result("gpu", result)
    return result


if __name__ == "__main__":
    main()
