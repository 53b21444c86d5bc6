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
from torch import nn

from resnets.config import register_configs
from resnets.engine.trainer import Trainer

from .common import bare_loop, interleaved, write_result

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
    """Training images/s of the loop a user would write by hand (benchmarks.common.bare_loop):
    the same model, optimizer settings and batches, epoch by epoch as the trainer runs them."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loop = bare_loop(
        cfg, device=device, model=model, fp16_scaler=fp16_scaler, channels_last=channels_last
    )
    seen, elapsed = 0, 0.0
    for epoch in range(cfg.trainer.epochs):
        loop.data.train.set_epoch(epoch)
        start = time.perf_counter()
        for images, labels in loop.data.train:
            loop.step(images, labels)
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
