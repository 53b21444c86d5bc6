"""Inference latency of exported networks on this CPU: eager PyTorch vs ONNX Runtime vs TorchScript.

resnet50 at 224 px (1000 classes) and resnet20 at 32 px (10 classes), batch 1 and 32, written
and loaded by export.py's own code (resnets.deploy.formats). The runtimes take turns call by call
(`interleaved`), medians of `--repeats`; ratios are eager time / exported time (> 1: faster).

    python -m benchmarks.export [--repeats 5] [--only resnet20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from functools import partial
from pathlib import Path

import torch

from resnets.deploy import formats
from resnets.deploy.parity import eager_logits
from resnets.models import build_model

from .common import interleaved, median_time, write_result

CASES = {
    # name: (preset, classes, input size)
    "resnet50_224": ("resnet50", 1000, 224),
    "resnet20_32": ("resnet20", 10, 32),
}
BATCHES = (1, 32)
RUNTIMES = {"onnxruntime": "onnx", "torchscript": "torchscript"}


def measure(name: str, repeats: int, workdir: Path) -> dict:
    preset, classes, size = CASES[name]
    torch.manual_seed(0)
    model = build_model(preset, num_classes=classes).eval()
    runners = {"eager": eager_logits(model)}
    for runtime, fmt in RUNTIMES.items():
        path = workdir / f"{name}_{formats.FILE_NAMES[fmt]}"
        formats.write(fmt, model, path, in_chans=3, size=size, dynamic_batch=True)
        runners[runtime] = formats.load(fmt, path)
    probe = torch.randn(4, 3, size, size)
    reference = runners["eager"](probe)
    result: dict = {
        "input_size": size,
        "max_abs_logit_diff": {
            r: float((runners[r](probe) - reference).abs().max()) for r in RUNTIMES
        },
        "ms_per_image": {r: {} for r in runners},
        "speedup_vs_eager": {r: {} for r in RUNTIMES},
    }
    for batch in BATCHES:
        x = torch.randn(batch, 3, size, size)
        for fn in runners.values():
            fn(x)  # warm-up
        seconds = interleaved(
            {r: partial(median_time, partial(fn, x), 1) for r, fn in runners.items()}, repeats
        )
        for r, s in seconds.items():
            result["ms_per_image"][r][f"batch{batch}"] = 1000 * s / batch
        for r in RUNTIMES:
            result["speedup_vs_eager"][r][f"batch{batch}"] = seconds["eager"] / seconds[r]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=list(CASES))
    parser.add_argument("--note", default=None, help="stored with the figures (e.g. machine busy)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: measure(name, args.repeats, Path(tmp)) for name in args.only}
    result = {
        "device": "cpu",
        "repeats": args.repeats,
        # the 1-minute load average before and after: > CPU count means other work competed
        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": args.note,
        "cases": cases,
    }
    write_result("export", result)
    return result


if __name__ == "__main__":
    main()
