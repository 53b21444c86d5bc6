"""Our networks vs the peers' builds: forward+backward time, same input, same process.

resnet50 and resnext50_32x4d against torchvision's; resnet56 against an independent build of
the paper's CIFAR network written here (3x3 stem of 16, three stages of nine basic blocks at
16/32/64 channels, parameter-free zero-padded shortcut A). Target: ours / peer <= 1.03.

    python -m benchmarks.models [--repeats 5]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from resnets.models import build_model

from .common import interleaved, median_time, write_result

TARGET = 1.03


class PaperBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:  # option A: zero channels, no parameters
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + shortcut)


def paper_resnet56(num_classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(9):
            layers.append(PaperBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


CASES = {
    # name: (ours, peer, batch, size)
    "resnet50": (
        lambda: build_model("resnet50"),
        lambda: torchvision.models.resnet50(),
        8,
        224,
    ),
    "resnext50_32x4d": (
        lambda: build_model("resnext50_32x4d"),
        lambda: torchvision.models.resnext50_32x4d(),
        8,
        224,
    ),
    "resnet56": (
        lambda: build_model("resnet56", num_classes=10),
        paper_resnet56,
        64,
        32,
    ),
}


def step_time(model: nn.Module, x: torch.Tensor, iters: int) -> float:
    def step() -> None:
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)

    return median_time(step, iters, sync=x.is_cuda)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--iters", type=int, default=1, help="steps per timed sample")
    parser.add_argument("--only", nargs="*", default=list(CASES))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for name in args.only:
        make_ours, make_peer, batch, size = CASES[name]
        torch.manual_seed(0)
        ours, peer = make_ours().to(device).train(), make_peer().to(device).train()
        assert sum(p.numel() for p in ours.parameters()) == sum(
            p.numel() for p in peer.parameters()
        ), f"{name}: the two builds differ in size"
        if name != "resnet56":  # the same weights too, so the arithmetic is the same
            peer.load_state_dict(ours.state_dict())
        x = torch.randn(batch, 3, size, size, device=device)
        step_time(ours, x, 1)  # warm-up: allocator, kernel choice
        step_time(peer, x, 1)
        times = interleaved(
            {
                "ours_s": partial(step_time, ours, x, args.iters),
                "peer_s": partial(step_time, peer, x, args.iters),
            },
            args.repeats,
        )
        ratio = times["ours_s"] / times["peer_s"]
        results[name] = {
            "peer": "independent paper build"
            if name == "resnet56"
            else f"torchvision.models.{name}",
            "batch": batch,
            "input_size": size,
            **times,
            "ratio": ratio,
            "passed": ratio <= TARGET,
        }
    write_result(
        "models",
        {
            "measure": "median seconds per forward+backward step (train mode, fp32)",
            "device": str(device),
            "cases": results,
            "target": f"ours/peer <= {TARGET}",
            "passed": all(r["passed"] for r in results.values()),
        },
    )
    return results


if __name__ == "__main__":
    main()
