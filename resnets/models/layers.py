"""Small building blocks shared by the residual blocks: convs, shortcuts, SE, split attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth


def conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor` (timm's rule, so SE widths match timm)."""
    min_value = min_value or divisor
    return max(min_value, int(value + divisor / 2) // divisor * divisor)


def drop_path(rate: float) -> nn.Module:
    """Stochastic depth on a residual branch (per sample), identity when rate is 0."""
    return StochasticDepth(rate, mode="row") if rate > 0 else nn.Identity()


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with timm's parameter names (fc1/fc2, biased 1x1 convs)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        reduced = make_divisible(channels / reduction)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class SplitAttention(nn.Module):
    """ResNeSt split-attention 3x3 conv (Zhang et al. 2020), with timm's parameter names."""

    def __init__(self, channels: int, stride: int = 1, groups: int = 1, radix: int = 2) -> None:
        super().__init__()
        self.radix = radix
        self.groups = groups
        mid = channels * radix
        attn = make_divisible(channels * radix * 0.25, min_value=32)
        self.conv = nn.Conv2d(
            channels, mid, 3, stride=stride, padding=1, groups=groups * radix, bias=False
        )
        self.bn0 = nn.BatchNorm2d(mid)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, attn, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(attn)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn, mid, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv(x)))
        b, rc, h, w = x.shape
        splits = x.reshape(b, self.radix, rc // self.radix, h, w)
        gap = splits.sum(dim=1).mean((2, 3), keepdim=True)
        attn = self.fc2(self.act1(self.bn1(self.fc1(gap))))
        # softmax across the radix splits within each cardinal group
        attn = attn.view(b, self.groups, self.radix, -1).transpose(1, 2)
        attn = F.softmax(attn, dim=1).reshape(b, self.radix, rc // self.radix, 1, 1)
        return (splits * attn).sum(dim=1)


class ZeroPadShortcut(nn.Module):
    """Option A of He et al. 2015: subsample spatially and zero-pad the new channels; no parameters."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


def projection_shortcut(
    in_chs: int, out_chs: int, stride: int, avg_down: bool, with_norm: bool
) -> nn.Sequential:
    """1x1 conv projection (option B/C); ResNet-D averages first so no activations are skipped.

    Index layout matches torchvision (0 conv, 1 bn) and timm's avg-down (0 pool, 1 conv, 2 bn).
    """
    layers: list[nn.Module] = []
    if avg_down:
        pool = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1
            else nn.Identity()
        )
        layers += [pool, conv1x1(in_chs, out_chs)]
    else:
        layers.append(conv1x1(in_chs, out_chs, stride))
    if with_norm:
        layers.append(nn.BatchNorm2d(out_chs))
    return nn.Sequential(*layers)


class BlurConv2d(nn.Conv2d):
    """A strided convolution that first blurs its input with the 3x3 binomial filter
    [1, 2, 1] x [1, 2, 1] / 16 per channel, at stride 1 with zero padding (Zhang 2019,
    "Making Convolutional Networks Shift-Invariant Again", as FFCV's ResNet-50 applies it): the
    anti-aliasing low-pass before the conv subsamples.

    A subclass of Conv2d with the filter as a non-persistent buffer, so the parameters keep the
    names of the plain conv: weights load the same with or without the blur."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        self.register_buffer(
            "blur_filter", kernel.expand(self.in_channels, 1, 3, 3).clone(), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x, self.blur_filter.to(x.dtype), padding=1, groups=self.in_channels)
        return super().forward(blurred)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> BlurConv2d:
        blur = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        blur.weight = conv.weight
        if conv.bias is not None:
            blur.bias = conv.bias
        return blur


# FFCV's rule: blur before every strided conv that sees at least this many channels (so not the
# stem's first conv on the image itself)
BLUR_MIN_CHANNELS = 16


def blur_strided_convs(module: nn.Module) -> int:
    """Replace every plain strided Conv2d with >= 16 input channels by a BlurConv2d holding the
    same parameters; returns how many were replaced."""
    replaced = 0
    for name, child in module.named_children():
        if (
            type(child) is nn.Conv2d
            and max(child.stride) > 1
            and child.in_channels >= BLUR_MIN_CHANNELS
        ):
            setattr(module, name, BlurConv2d.from_conv(child))
            replaced += 1
        else:
            replaced += blur_strided_convs(child)
    return replaced
