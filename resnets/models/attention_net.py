"""Residual Attention Network (Wang et al. 2017) built from pre-activation bottleneck units.

Each attention module has a trunk of `t` units and a soft-mask branch (bottom-up max pooling,
top-down bilinear upsampling with skip units), combined as (1 + M(x)) * T(x). Here p=1, t=2, r=1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BlockOptions, PreActBottleneck
from .layers import conv1x1

P, T, R = 1, 2, 1


def residual_unit(in_chs: int, out_chs: int, stride: int = 1) -> PreActBottleneck:
    changes_shape = stride != 1 or in_chs != out_chs
    downsample = conv1x1(in_chs, out_chs, stride) if changes_shape else None
    return PreActBottleneck(in_chs, out_chs // 4, stride, downsample, BlockOptions())


def _units(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(residual_unit(channels, channels) for _ in range(count)))


class AttentionModule(nn.Module):
    """One attention module whose mask branch pools `levels` times below the input resolution."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.first = _units(channels, P)
        self.trunk = _units(channels, T)
        self.down = nn.ModuleList(_units(channels, R) for _ in range(levels))
        self.skips = nn.ModuleList(_units(channels, 1) for _ in range(levels - 1))
        self.bottom = _units(channels, R)
        self.up = nn.ModuleList(_units(channels, R) for _ in range(levels - 1))
        self.mask_head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv1x1(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv1x1(channels, channels),
            nn.Sigmoid(),
        )
        self.last = _units(channels, P)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        trunk = self.trunk(x)
        sizes, skips, m = [], [], x
        for level, down in enumerate(self.down):
            sizes.append(m.shape[-2:])
            m = down(F.max_pool2d(m, 3, stride=2, padding=1))
            if level < len(self.skips):
                skips.append(self.skips[level](m))
        m = self.bottom(m)
        for up, skip in zip(reversed(self.up), reversed(skips), strict=True):
            m = up(_upsample(m, skip.shape[-2:]) + skip)
        mask = self.mask_head(_upsample(m, sizes[0]))
        return self.last((1 + mask) * trunk)


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ResidualAttentionNet(nn.Module):
    """Attention-56 (1/1/1 modules per stage) or Attention-92 (1/2/3), ImageNet or CIFAR layout."""

    def __init__(
        self,
        modules_per_stage: Sequence[int] = (1, 1, 1),
        stem: str = "imagenet",
        num_classes: int = 1000,
        in_chans: int = 3,
        include_top: bool = True,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            width, widths = 64, (256, 512, 1024, 2048)
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            width, widths = 16, (64, 128, 256, 256)
            self.stem = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_chs = width
        for stage, count in enumerate(modules_per_stage):
            out = widths[stage]
            stages.append(residual_unit(in_chs, out, stride=1 if stage == 0 else 2))
            # Deeper stages run at lower resolution, so their masks pool fewer times.
            stages += [AttentionModule(out, levels=3 - stage) for _ in range(count)]
            in_chs = out
        final_stride = 2 if stem == "imagenet" else 1
        stages += [
            residual_unit(in_chs, widths[3], stride=final_stride),
            residual_unit(widths[3], widths[3]),
            residual_unit(widths[3], widths[3]),
        ]
        self.features = nn.Sequential(*stages)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True))
        self.num_features = widths[3]
        self.include_top = include_top
        if include_top:
            self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
            self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module | None:
        return self.fc if self.include_top else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(self.features(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if not self.include_top:
            return x
        return self.fc(self.dropout(x.mean((2, 3))))
