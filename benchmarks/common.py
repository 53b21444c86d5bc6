"""What every benchmark shares: timing, machine description, and writing the JSON result."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """benchmarks/results, or $RESNETS_BENCH_RESULTS (the smoke test writes elsewhere)."""
    return Path(os.environ.get("RESNETS_BENCH_RESULTS", DEFAULT_RESULTS))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def median_time(fn: Callable[[], Any], repeats: int, sync: bool = False) -> float:
    """Median wall time of `fn()` over `repeats` calls (CUDA synchronised when `sync`)."""
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each measurement `repeats` times, alternating between them (and reversing the order
    every other round) so that drifts in machine load hit all alike; return the median of each."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            samples[name].append(fns[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def write_result(name: str, result: dict[str, Any]) -> Path:
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k != "machine"}, indent=2))
    return path


@dataclass
class BareLoop:
    """The loop a user writes by hand, doing the trainer's work: the data bundle, the model in
    the trainer's memory format (compiled when the trainer would compile it) and one SGD step."""

    data: Any
    model: torch.nn.Module
    device: torch.device
    batch_size: int
    step: Callable[[torch.Tensor, torch.Tensor], None]


def bare_loop(
    cfg: Any,
    *,
    device: torch.device,
    model: torch.nn.Module | None = None,
    fp16_scaler: bool = False,
    channels_last: bool | None = None,
) -> BareLoop:
    """`model` replaces ours (a torchvision build); `fp16_scaler` trains as torchvision's
    reference script does with --amp (fp16 autocast and a GradScaler) instead of `cfg`'s
    precision; `channels_last` overrides the memory format the device defaults choose."""
    from omegaconf import OmegaConf

    from resnets.data import build_data
    from resnets.models import build_model_from_config
    from resnets.runtime import apply_device_defaults

    # the same device defaults the trainer applies to what the config leaves unset
    settings = OmegaConf.to_container(cfg.trainer)
    apply_device_defaults(settings, device.type)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, batch_size=settings["batch_size"], device=device, seed=cfg.seed)
    if model is None:
        model = build_model_from_config(
            cfg.model,
            num_classes=data.num_classes,
            in_chans=data.in_chans,
            image_size=data.image_size,
        )
    if channels_last is None:
        channels_last = bool(settings["channels_last"])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    forward = torch.compile(model, mode=settings["compile_mode"]) if settings["compile"] else model
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.get("nesterov", False),
        weight_decay=cfg.optim.weight_decay,
    )
    scaler = torch.amp.GradScaler("cuda") if fp16_scaler else None
    dtype = torch.bfloat16 if settings["precision"] == "bf16-mixed" else None
    dtype = torch.float16 if fp16_scaler else dtype
    criterion = torch.nn.CrossEntropyLoss()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = criterion(forward(images).float(), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return BareLoop(data, model, device, settings["batch_size"], step)


def write_jpegs(root: Path, n: int, size: tuple[int, int]) -> None:
    """Photo-like JPEGs (smooth colour fields with grain) in 8 classes, quality 90, under
    root/train, and one per class under root/val (a val split the bundle needs; not timed)."""
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
    for c in range(8):
        (root / "val" / f"c{c}").mkdir(parents=True, exist_ok=True)
        src = next((root / "train" / f"c{c}").iterdir())
        (root / "val" / f"c{c}" / src.name).write_bytes(src.read_bytes())
