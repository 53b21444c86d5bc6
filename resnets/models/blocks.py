"""Residual blocks: post-activation (v1) basic/bottleneck, pre-activation (v2), and ResNeSt.

Parameter names follow torchvision (conv1/bn1/.../downsample) and timm (se, conv2 split attention)
so their state dicts load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import SplitAttention, SqueezeExcite, conv1x1, conv3x3, drop_path


@dataclass(frozen=True)
class BlockOptions:
    """Per-network block settings, the same for every block of the network."""

    groups: int = 1
    width_per_group: int = 64
    attention: str = "none"
    stride_in_1x1: bool = False
    drop_rate: float = 0.0  # dropout between the two convs of a basic block (Wide ResNet)
    radix: int = 0  # > 0: ResNeSt split attention


def _attention(name: str, channels: int) -> nn.Module | None:
    return SqueezeExcite(channels) if name == "se" else None


def _dropout(p: float) -> nn.Module | None:
    return nn.Dropout(p) if p > 0 else None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        opts: BlockOptions,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = _dropout(opts.drop_rate)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = _attention(opts.attention, planes)
        self.downsample = downsample
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += shortcut  # in place, as torchvision: no extra activation-sized tensor
        return self.relu(out)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand; stride in the 3x3 unless stride_in_1x1."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        opts: BlockOptions,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (opts.width_per_group / 64.0)) * opts.groups
        out_chs = planes * self.expansion
        s1, s3 = (stride, 1) if opts.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_chs, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, opts.groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.se = _attention(opts.attention, out_chs)
        self.downsample = downsample
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += shortcut  # in place, as torchvision: no extra activation-sized tensor
        return self.relu(out)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


class ResNeStBottleneck(nn.Module):
    """ResNeSt-D bottleneck as timm builds it: split-attention 3x3, stride by a 3x3 average pool after it."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        opts: BlockOptions,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (opts.width_per_group / 64.0)) * opts.groups
        out_chs = planes * self.expansion
        self.conv1 = conv1x1(in_chs, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = SplitAttention(width, groups=opts.groups, radix=opts.radix)
        self.avd_last = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else None
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.downsample = downsample
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.bn3(self.conv3(out))
        out = self.drop_path(out)
        out += shortcut  # in place, as torchvision: no extra activation-sized tensor
        return self.relu(out)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


class PreActBasicBlock(nn.Module):
    """Full pre-activation basic block (He et al. 2016, variant e): BN-ReLU-conv twice."""

    expansion = 1

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        opts: BlockOptions,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = _dropout(opts.drop_rate)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = _attention(opts.attention, planes)
        self.downsample = downsample
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        # a projection shortcut sees the pre-activated input, as in the authors' code
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.relu(self.bn2(self.conv1(pre)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv2(out)
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += shortcut
        return out

    def last_norm(self) -> None:
        return None


class PreActBottleneck(nn.Module):
    """Full pre-activation bottleneck (He et al. 2016, variant e)."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        opts: BlockOptions,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (opts.width_per_group / 64.0)) * opts.groups
        out_chs = planes * self.expansion
        s1, s3 = (stride, 1) if opts.stride_in_1x1 else (1, stride)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = conv1x1(in_chs, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, opts.groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.se = _attention(opts.attention, out_chs)
        self.downsample = downsample
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += shortcut
        return out

    def last_norm(self) -> None:
        return None


def block_class(block: str, preact: bool, radix: int) -> type[nn.Module]:
    if radix > 0:
        return ResNeStBottleneck
    if block == "basic":
        return PreActBasicBlock if preact else BasicBlock
    return PreActBottleneck if preact else Bottleneck
