"""One generic ResNet: v1, pre-activation (v2), ResNeXt, Wide, SE, ResNet-D and ResNeSt by arguments."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from .blocks import BlockOptions, block_class
from .errors import ModelError
from .layers import ZeroPadShortcut, blur_strided_convs, conv3x3, projection_shortcut

log = logging.getLogger(__name__)

# Blocks per stage for the ImageNet depths (He et al. 2015, Table 1).
IMAGENET_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar", "deep", "auto")
SHORTCUTS = ("A", "B", "C")
ATTENTIONS = ("none", "se")
CIFAR_MAX_IMAGE_SIZE = 64


def resolve_stem(stem: str, image_size: int | None) -> str:
    """`auto` picks the 3x3 CIFAR stem for small images, where a 7x7/2 stem and max pool lose too much."""
    if stem != "auto":
        return stem
    chosen = (
        "cifar" if image_size is not None and image_size <= CIFAR_MAX_IMAGE_SIZE else "imagenet"
    )
    log.info("stem=auto chose the %s stem for %s px images", chosen, image_size or 224)
    return chosen


def stage_layout(depth: int | None, block: str | None, layers: Sequence[int] | None):
    """Blocks per stage and block type from depth (ImageNet table, or 6n+2 / 9n+2 CIFAR rule)."""
    if block is not None and block not in BLOCKS:
        raise ModelError("block", block, BLOCKS)
    if layers is not None:
        if not layers or any(int(n) < 1 for n in layers):
            raise ModelError("layers", list(layers), "a non-empty list of positive block counts")
        return block or "basic", tuple(int(n) for n in layers)
    if depth is None:
        raise ModelError("depth", depth, "an integer depth or an explicit `layers` list")
    if depth in IMAGENET_LAYERS:
        table_block, table_layers = IMAGENET_LAYERS[depth]
        if block not in (None, table_block):
            raise ModelError(
                "block", block, f"'{table_block}' for ImageNet depth {depth} (or give `layers`)"
            )
        return table_block, table_layers
    rules = {
        "basic": (6, "6n+2: 20, 32, 44, 56, 110, 1202"),
        "bottleneck": (9, "9n+2: 29, 164, 1001"),
    }
    candidates = [block] if block else ["basic", "bottleneck"]
    for name in candidates:
        per, _ = rules[name]
        if depth > 2 and (depth - 2) % per == 0:
            return name, ((depth - 2) // per,) * 3
    accepted = (
        ", ".join(str(d) for d in IMAGENET_LAYERS)
        + " (ImageNet) or "
        + "; ".join(rules[name][1] for name in candidates)
    )
    raise ModelError("depth", depth, accepted + " (CIFAR)")


class ResNet(nn.Module):
    """Generic residual network. Module names follow torchvision so its weights load strictly."""

    def __init__(
        self,
        depth: int | None = 50,
        block: str | None = None,
        preact: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        widen_factor: float = 1,
        base_channels: int | None = None,
        attention: str = "none",
        stem: str = "auto",
        shortcut: str = "B",
        avg_down: bool = False,
        stride_in_1x1: bool = False,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        inner_dropout: float = 0.0,
        zero_init_residual: bool = False,
        num_classes: int = 1000,
        include_top: bool = True,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
        radix: int = 0,
        image_size: int | None = None,
        blurpool: bool = False,
    ) -> None:
        super().__init__()
        block, layers = stage_layout(depth, block, layers)
        _check_arguments(
            block,
            stem=stem,
            shortcut=shortcut,
            attention=attention,
            groups=groups,
            width_per_group=width_per_group,
            base_channels=base_channels,
            widen_factor=widen_factor,
            rates=dict(
                drop_path_rate=drop_path_rate, drop_rate=drop_rate, inner_dropout=inner_dropout
            ),
            radix=radix,
            preact=preact,
            stride_in_1x1=stride_in_1x1,
            avg_down=avg_down,
            zero_init_residual=zero_init_residual,
        )
        self.preact = preact
        self.stem_type = resolve_stem(stem, image_size)
        self.num_stages = len(layers)
        base_channels = base_channels or (64 if self.num_stages == 4 else 16)
        opts = BlockOptions(
            groups=int(groups),
            width_per_group=int(width_per_group),
            attention=attention,
            stride_in_1x1=stride_in_1x1,
            drop_rate=inner_dropout,
            radix=radix,
        )
        self._build_stem(in_chans, base_channels)
        self.num_features = self._build_stages(
            layers,
            block_class(block, preact, radix),
            opts,
            base_channels=base_channels,
            widen_factor=widen_factor,
            shortcut=(shortcut, avg_down),
            drop_path_rate=drop_path_rate,
        )
        self._build_head(num_classes, include_top, out_indices, drop_rate)
        self._init_weights(zero_init_residual)
        if blurpool:  # after the init: the same seed gives the same weights with or without
            blur_strided_convs(self)

    def _build_stages(
        self,
        layers: Sequence[int],
        cls: type[nn.Module],
        opts: BlockOptions,
        *,
        base_channels: int,
        widen_factor: float,
        shortcut: tuple[str, bool],
        drop_path_rate: float,
    ) -> int:
        """layer1..layerN, each doubling the planes of the last and halving the size (after the
        first), stochastic depth rising linearly to the last block; `feature_info` of the stem
        and each stage. Returns the channels of the last stage."""
        in_chs = base_channels
        stem_reduction = 1 if self.stem_type == "cifar" else 4
        self.feature_info = [
            {"num_chs": base_channels, "reduction": stem_reduction, "module": "maxpool"}
        ]
        total_blocks, block_index = sum(layers), 0
        for stage, num_blocks in enumerate(layers):
            planes = int(base_channels * widen_factor * 2**stage)
            blocks = []
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                out_chs = planes * cls.expansion
                downsample = self._shortcut(shortcut[0], in_chs, out_chs, stride, shortcut[1])
                rate = drop_path_rate * block_index / max(total_blocks - 1, 1)
                blocks.append(cls(in_chs, planes, stride, downsample, opts, rate))
                in_chs, block_index = out_chs, block_index + 1
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            self.feature_info.append(
                {
                    "num_chs": in_chs,
                    "reduction": stem_reduction * 2**stage,
                    "module": f"layer{stage + 1}",
                }
            )
        return in_chs

    def _build_head(
        self,
        num_classes: int,
        include_top: bool,
        out_indices: Sequence[int] | None,
        drop_rate: float,
    ) -> None:
        """The final norm of pre-activation nets, and the classifier unless feature maps are
        asked for (`out_indices`) or the top is left off."""
        in_chs = self.num_features
        # Pre-activation nets end with the BN-ReLU that no block applied to the last sum.
        self.final_norm = nn.BatchNorm2d(in_chs) if self.preact else None
        self.out_indices = tuple(out_indices) if out_indices is not None else None
        if self.out_indices is not None:
            bad = [i for i in self.out_indices if not 0 <= i <= self.num_stages]
            if bad:
                raise ModelError(
                    "out_indices", list(out_indices), f"indices in 0..{self.num_stages}"
                )
        self.include_top = include_top and self.out_indices is None
        if self.include_top:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
            self.fc = nn.Linear(in_chs, num_classes)

    def _build_stem(self, in_chans: int, width: int) -> None:
        if self.stem_type == "deep":
            half = width // 2
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, half, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                conv3x3(half, half),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                conv3x3(half, width),
            )
        elif self.stem_type == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
        # A pre-activation CIFAR net's first block normalises the stem output itself.
        cifar = self.stem_type == "cifar"
        self.bn1 = None if (cifar and self.preact) else nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1)

    def _shortcut(
        self, kind: str, in_chs: int, out_chs: int, stride: int, avg_down: bool
    ) -> nn.Module | None:
        changes_shape = stride != 1 or in_chs != out_chs
        if kind == "A":
            return ZeroPadShortcut(in_chs, out_chs, stride) if changes_shape else None
        if kind == "B" and not changes_shape:
            return None
        # Pre-activation projections are bare convs: the block already normalised their input.
        return projection_shortcut(in_chs, out_chs, stride, avg_down, with_norm=not self.preact)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as the identity.
            for m in self.modules():
                norm = m.last_norm() if hasattr(m, "last_norm") else None
                if norm is not None:
                    nn.init.zeros_(norm.weight)

    def parts(self) -> dict[str, list[nn.Module]]:
        """The parts `freeze` accepts: the stem and each stage."""
        stem = [m for m in (self.conv1, self.bn1, self.maxpool) if m is not None]
        return {"stem": stem, **{f"layer{i + 1}": [s] for i, s in enumerate(self.stages())}}

    def freeze(self, parts: Sequence[str]) -> None:
        """No gradients for these parts, and their BatchNorm statistics stay as loaded: they are
        kept in eval mode through every later `train()` call (see `train`)."""
        known = self.parts()
        for part in parts:
            if part not in known:
                raise ModelError("freeze", list(parts), f"a list of: {', '.join(known)}")
        for part in parts:
            for module in known[part]:
                module.requires_grad_(False)
        self.frozen = tuple(dict.fromkeys(parts))
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        for part in getattr(self, "frozen", ()):
            for module in self.parts()[part]:
                module.eval()  # frozen BatchNorm layers normalise with the loaded statistics
        return self

    def get_classifier(self) -> nn.Module | None:
        return self.fc if self.include_top else None

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        return self.maxpool(x)

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.final_norm(x)) if self.final_norm is not None else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return self._finish(x)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at `out_indices` (0 = stem, 1..4 = layer1..layer4, i.e. C2..C5)."""
        wanted = self.out_indices or tuple(range(1, self.num_stages + 1))
        x = self.stem(x)
        outputs = [x] if 0 in wanted else []
        for i, stage in enumerate(self.stages(), start=1):
            x = stage(x)
            if i == self.num_stages:
                x = self._finish(x)
            if i in wanted:
                outputs.append(x)
        return outputs

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.out_indices is not None:
            return self.forward_intermediates(x)
        x = self.forward_features(x)
        return self.forward_head(x) if self.include_top else x


def _check_arguments(
    block: str,
    *,
    stem: str,
    shortcut: str,
    attention: str,
    groups: int,
    width_per_group: int,
    base_channels: int | None,
    widen_factor: float,
    rates: dict[str, float],
    radix: int,
    preact: bool,
    stride_in_1x1: bool,
    avg_down: bool,
    zero_init_residual: bool,
) -> None:
    """Every argument refused before a layer is built, in one line naming the accepted values."""
    _check_choice("stem", stem, STEMS)
    _check_choice("shortcut", shortcut, SHORTCUTS)
    _check_choice("attention", attention, ATTENTIONS)
    _check_widths(block, groups, width_per_group, base_channels, widen_factor)
    for field, value in rates.items():
        if not 0.0 <= value < 1.0:
            raise ModelError(field, value, "a probability in [0, 1)")
    if radix and (block != "bottleneck" or preact):
        raise ModelError("radix", radix, "0 unless block is a post-activation bottleneck")
    _check_block_fields(block, radix, attention, stride_in_1x1, rates["inner_dropout"])
    if shortcut == "A" and avg_down:
        raise ModelError("avg_down", avg_down, "false with shortcut A (it has no projection)")
    _check_unused_fields(radix, stride_in_1x1, preact, zero_init_residual)


def _check_widths(
    block: str, groups: int, width_per_group: int, base_channels: int | None, widen_factor: float
) -> None:
    for field, value in (("groups", groups), ("width_per_group", width_per_group)):
        if int(value) < 1:
            raise ModelError(field, value, "a positive integer")
    if block == "basic" and (int(groups) != 1 or int(width_per_group) != 64):
        # a basic block has no grouped bottleneck conv: these would be silently ignored
        field, value = (
            ("groups", groups) if int(groups) != 1 else ("width_per_group", width_per_group)
        )
        raise ModelError(
            field,
            value,
            f"{1 if field == 'groups' else 64} with basic blocks (grouped width is a bottleneck setting)",
        )
    if base_channels is not None and int(base_channels) < 1:
        raise ModelError(
            "base_channels", base_channels, "null (the stage table's) or a positive integer"
        )
    if widen_factor <= 0:
        raise ModelError("widen_factor", widen_factor, "a positive number")


def _check_block_fields(
    block: str, radix: int, attention: str, stride_in_1x1: bool, inner_dropout: float
) -> None:
    """Refuse the fields the chosen block type has no place for, instead of dropping them."""
    if block == "basic" and stride_in_1x1:
        raise ModelError("stride_in_1x1", stride_in_1x1, "false for basic blocks (no 1x1 conv)")
    if block != "basic" and inner_dropout > 0:
        raise ModelError(
            "inner_dropout",
            inner_dropout,
            "0 for bottleneck blocks (it is Wide ResNet's dropout between a basic block's convs)",
        )
    if radix and attention != "none":
        raise ModelError("attention", attention, "none with radix > 0 (ResNeSt has no SE)")


def _check_unused_fields(
    radix: int, stride_in_1x1: bool, preact: bool, zero_init_residual: bool
) -> None:
    """Refuse the fields the network would build without reading (once accepted and ignored)."""
    if radix and stride_in_1x1:
        raise ModelError(
            "stride_in_1x1",
            stride_in_1x1,
            "false with radix > 0 (a ResNeSt block downsamples after its split-attention conv)",
        )
    if preact and zero_init_residual:
        raise ModelError(
            "zero_init_residual",
            zero_init_residual,
            "false with preact=true (a pre-activation block ends in a convolution: there is no "
            "last batch norm to start at zero)",
        )


def _check_choice(field: str, value: object, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ModelError(field, value, accepted)
