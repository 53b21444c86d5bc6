"""GPU figures in steady state (skipped without CUDA): compile and warm-up excluded, synchronised.

- resnet50 at 224 px, bf16-mixed + channels_last, batch 128, synthetic tensor-resident data:
  training images/s of Trainer.fit (its steady epochs: epoch 1 pays for compilation and cuDNN's
  autotuning and is left out) against a bare loop doing the same work (same data bundle, model,
  SGD, autocast; timed with CUDA events after warm-up steps), eager and compiled; also a loop
  with torchvision's reference-script settings (torchvision's resnet50, fp16 + GradScaler, NCHW).
- resnet18 with the CIFAR stem on 50,000 synthetic 32 px images (CIFAR-10's size), batch 512,
  trainer=gpu (compiled): seconds per steady training epoch, and the first epoch's separately.
- gpu_decode: images/s of one epoch of an ImageFolder of JPEGs (500x375, ImageNet's commonest
  size) decoded on the GPU against the worker path (PIL decoding in `--workers` processes), both
  to normalised batches on the GPU.

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

from .common import bare_loop, interleaved, write_result
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


def _write_jpegs(root: Path, n: int, size: tuple[int, int]) -> None:
    """Photo-like JPEGs (smooth colour fields with grain) in 8 classes, quality 90."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "train" / f"c{i % 8}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 12, smooth.shape, dtype=np.int16)
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(
            folder / f"{i}.JPEG", quality=90
        )
    for c in range(8):  # a val split the bundle needs; not timed
        (root / "val" / f"c{c}").mkdir(parents=True, exist_ok=True)
        src = next((root / "train" / f"c{c}").iterdir())
        (root / "val" / f"c{c}" / src.name).write_bytes(src.read_bytes())


def decode_rates(workers: int, smoke: bool) -> dict:
    """One epoch of train batches, normalised on the device, after one warm-up epoch."""
    from resnets.data.factory import Batching, _folder_bundle

    device = torch.device("cpu" if smoke else "cuda")
    n, batch = (16, 8) if smoke else (2048, 128)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_jpegs(root, n, (500, 375))

        def rate(gpu_decode: bool) -> float:
            cfg = OmegaConf.merge(
                OmegaConf.structured(DataConfig),
                {
                    "name": "imagefolder",
                    "root": str(root),
                    "image_size": 224,
                    "gpu_decode": gpu_decode,
                    "augment": {"hflip": True},
                },
            )
            # _folder_bundle directly: build_data refuses gpu_decode off CUDA (the smoke run)
            bundle = _folder_bundle(
                cfg,
                Batching(batch, eval_batch_size=batch),
                device=device,
                workers=workers,
                split="val",
            )
            loader = bundle.train
            for epoch in range(2):  # the first warms the workers, nvJPEG and the allocator
                loader.set_epoch(epoch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, seen = time.perf_counter(), 0
                for images, _ in loader:  # both give normalised float batches
                    images = images.to(device, non_blocking=True)
                    seen += len(images)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
            return seen / elapsed

        rates = interleaved({"gpu_decode": lambda: rate(True), "workers": lambda: rate(False)}, 1)
    return {
        "images": n,
        "image_size": "500x375 JPEG q90 -> 224 random-resized crop + flip",
        "workers": workers,
        "images_per_s": rates,
        "ratio_gpu_decode_vs_workers": rates["gpu_decode"] / rates["workers"],
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
        "gpu_decode": decode_rates(0 if smoke else args.workers, smoke),
    }
    if smoke:
        print(json.dumps(result, indent=2))
    else:
        write_result("gpu", result)
    return result


if __name__ == "__main__":
    main()
