"""GPU figures (skipped without CUDA): ResNet-50 at 224 px and a CIFAR ResNet-18 epoch.

- resnet50, bf16-mixed + channels_last, batch 128, synthetic tensor-resident 224 px data:
  training images/s of Trainer.fit, of a bare loop with the same settings, and of a loop with
  torchvision's reference-script settings (torchvision's resnet50, --amp: fp16 autocast with a
  GradScaler, contiguous memory format).
- resnet18 with the CIFAR stem on 50,000 synthetic 32 px images (CIFAR-10's size), batch 512,
  trainer=gpu: seconds per training epoch.

    python -m benchmarks.gpu [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torchvision

from .common import interleaved, write_result
from .trainer_overhead import bare, config, ours


def cifar_resnet18_epoch_s() -> float:
    cfg = config(
        2,
        50_000,
        "bf16-mixed",
        ("model=resnet18", "trainer=gpu", "trainer.batch_size=512", "trainer.progress=false"),
    )
    from resnets.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, out).fit()
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    # two epochs: the first pays for compilation, so report the per-image rate as epoch time
    return 50_000 / metrics["images_per_s"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        write_result("gpu", {"skipped": "no CUDA device"})
        return {"skipped": True}
    extra = ("model=resnet50", "data.image_size=224", "data.num_classes=1000")
    cfg = config(2, 4096, "bf16-mixed", (*extra, "trainer.channels_last=true"))
    reference = config(2, 4096, "32", extra)
    rates = interleaved(
        {
            "trainer": lambda: ours(cfg),
            "bare_loop": lambda: bare(cfg),
            "torchvision_reference": lambda: bare(
                reference,
                model=torchvision.models.resnet50(),
                fp16_scaler=True,
                channels_last=False,
            ),
        },
        args.repeats,
    )
    result = {
        "resnet50_224": {
            "batch_size": 128,
            "precision": "bf16-mixed, channels_last (reference: fp16 + GradScaler, contiguous)",
            "images_per_s": rates,
            "ratio_vs_bare_loop": rates["trainer"] / rates["bare_loop"],
            "ratio_vs_torchvision_reference": rates["trainer"] / rates["torchvision_reference"],
        },
        "cifar_resnet18_epoch_s": cifar_resnet18_epoch_s(),
    }
    write_result("gpu", result)
    return result


if __name__ == "__main__":
    main()
