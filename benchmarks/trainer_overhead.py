"""Trainer.fit vs bare hand-written PyTorch loops: training images/s, same model, data, precision.

All train resnet20 with SGD on the same tensor-resident batches for the same number of steps, in
this process, alternating. Ours runs with the defaults a user gets (on CPU: channels_last, fp32,
chosen by the device); the bare loops are the two a user would write, NCHW and channels_last.
Ours is `metrics.json`'s images_per_s (training epochs only: validation and checkpoint writing
are outside it, so the bare loops do neither). Target: ours >= 0.95x the faster bare loop.
`--default-run` also times the whole `make train` run (12 epochs on digits) once.

    python -m benchmarks.trainer_overhead [--epochs 2] [--repeats 3] [--default-run]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from resnets.config import register_configs
from resnets.data import build_data
from resnets.engine.trainer import Trainer
from resnets.models import build_model_from_config
from resnets.runtime import apply_device_defaults

from .common import interleaved, write_result

CONF = Path(__file__).resolve().parents[1] / "conf"
TARGET = 0.95


def config(epochs: int, fake_size: int, precision: str, extra: tuple[str, ...] = ()):
    register_configs()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                "model=resnet20",
                "data=fake",
                f"data.fake_size={fake_size}",
                "sched=constant",
                "trainer.batch_size=128",
                f"trainer.epochs={epochs}",
                f"trainer.precision={precision}",
                "trainer.label_smoothing=0",
                "trainer.progress=false",
                "trainer.workers=0",
                f"trainer.device={device}",
                *extra,
            ],
        )


def ours(cfg) -> float:
    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, out).fit()
        return json.loads((Path(out) / "metrics.json").read_text())["images_per_s"]


def bare(
    cfg,
    model: nn.Module | None = None,
    fp16_scaler: bool = False,
    channels_last: bool | None = None,
) -> float:
    """The loop a user would write by hand: the same model, optimizer settings and batches.

    `model` replaces ours (a torchvision build); `fp16_scaler` trains as torchvision's reference
    script does with --amp (fp16 autocast and a GradScaler) instead of `cfg`'s precision;
    `channels_last` overrides the config's memory format (unset there means NCHW here)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, batch_size=cfg.trainer.batch_size, device=device, seed=cfg.seed)
    if model is None:
        model = build_model_from_config(
            cfg.model,
            num_classes=data.num_classes,
            in_chans=data.in_chans,
            image_size=data.image_size,
        )
    # the same device defaults the trainer applies to what the config leaves unset
    settings = OmegaConf.to_container(cfg.trainer)
    apply_device_defaults(settings, device.type)
    if channels_last is None:
        channels_last = settings["channels_last"]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    scaler = torch.amp.GradScaler("cuda") if fp16_scaler else None
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.nesterov,
        weight_decay=cfg.optim.weight_decay,
    )
    criterion = nn.CrossEntropyLoss()
    dtype = torch.bfloat16 if settings["precision"] == "bf16-mixed" else None
    dtype = torch.float16 if fp16_scaler else dtype
    seen, elapsed = 0, 0.0
    for epoch in range(cfg.trainer.epochs):
        model.train()
        data.train.set_epoch(epoch)
        start = time.perf_counter()
        for images, labels in data.train:
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model(images).float(), labels)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += labels.numel()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
    return seen / elapsed


def default_run() -> dict:
    """The whole `make train` run (ResNet-20 on digits, 12 epochs, every default) once."""
    cfg = config_default()
    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, out).fit()
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    keys = ("train_time_s", "images_per_s", "best_val_top1", "epochs")
    return {key: metrics[key] for key in keys}


def config_default():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=["trainer.progress=false"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fake-size", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--default-run", action="store_true", help="also time `make train` once")
    args = parser.parse_args(argv)
    cfg = config(args.epochs, args.fake_size, args.precision)
    bare(config(1, 512, args.precision))  # warm up allocator and kernels for all
    rates = interleaved(
        {
            "trainer": lambda: ours(cfg),
            "bare_nchw": lambda: bare(cfg, channels_last=False),
            "bare_channels_last": lambda: bare(cfg, channels_last=True),
        },
        args.repeats,
    )
    best_bare = max(rates["bare_nchw"], rates["bare_channels_last"])
    ratio = rates["trainer"] / best_bare
    result = {
        "model": "resnet20",
        "data": f"fake {args.fake_size} images, 32 px, tensor-resident",
        "batch_size": 128,
        "epochs": args.epochs,
        "precision": args.precision,
        "images_per_s": rates,
        "ratio": ratio,
        "ratio_vs_bare_nchw": rates["trainer"] / rates["bare_nchw"],
        "channels_last_speedup_bare": rates["bare_channels_last"] / rates["bare_nchw"],
        "target": f">= {TARGET}x the faster bare loop",
        "passed": ratio >= TARGET,
    }
    if args.default_run:
        run = default_run()
        result["default_run"] = {
            **run,
            "target": "train_time_s < 30",
            "passed": run["train_time_s"] < 30,
        }
    write_result("trainer_overhead", result)
    return {"ratio": ratio}


if __name__ == "__main__":
    main()
