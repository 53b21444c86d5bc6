"""The named networks: each name is a set of arguments for `ResNet` (PRESETS) or the residual
attention network (ATTENTION_PRESETS). Plain data with no import of the package, so the registry
that builds them, the pretrained-weights loader that names them in its messages and the runtime
checks can all read it without importing each other.
"""

from __future__ import annotations

from typing import Any

_CIFAR_A = {"stem": "cifar", "shortcut": "A"}
_SE = {"attention": "se"}
_D = {"stem": "deep", "avg_down": True}

# name -> ResNet arguments. ImageNet presets keep stem=auto so 32 px data gets a CIFAR stem.
PRESETS: dict[str, dict[str, Any]] = {
    **{f"resnet{d}": {"depth": d} for d in (18, 34, 50, 101, 152)},
    "resnext50_32x4d": {"depth": 50, "groups": 32, "width_per_group": 4},
    "resnext101_32x8d": {"depth": 101, "groups": 32, "width_per_group": 8},
    "resnext101_64x4d": {"depth": 101, "groups": 64, "width_per_group": 4},
    "wide_resnet50_2": {"depth": 50, "width_per_group": 128},
    "wide_resnet101_2": {"depth": 101, "width_per_group": 128},
    **{f"seresnet{d}": {"depth": d, **_SE} for d in (18, 34, 50, 101, 152)},
    "seresnext50_32x4d": {"depth": 50, "groups": 32, "width_per_group": 4, **_SE},
    "seresnext101_32x8d": {"depth": 101, "groups": 32, "width_per_group": 8, **_SE},
    "resnet50d": {"depth": 50, **_D},
    "resnest50d": {"depth": 50, "radix": 2, **_D},
    **{f"preact_resnet{d}": {"depth": d, "preact": True} for d in (18, 34, 50, 101, 152)},
    "preact_resnet110": {"depth": 110, "block": "basic", "preact": True, "stem": "cifar"},
    # 164 is both 6n+2 and 9n+2; the pre-activation paper's 164 and 1001 are bottleneck nets.
    "preact_resnet164": {"depth": 164, "block": "bottleneck", "preact": True, "stem": "cifar"},
    "preact_resnet1001": {"depth": 1001, "block": "bottleneck", "preact": True, "stem": "cifar"},
    **{f"resnet{d}": {"depth": d, **_CIFAR_A} for d in (20, 32, 44, 56, 110, 1202)},
    "resnext29_8x64d": {
        "depth": 29,
        "groups": 8,
        "width_per_group": 64,
        "base_channels": 64,
        "stem": "cifar",
    },
    "resnext29_16x64d": {
        "depth": 29,
        "groups": 16,
        "width_per_group": 64,
        "base_channels": 64,
        "stem": "cifar",
    },
    # WRN-d-k: (d - 4) / 6 pre-activation basic blocks per stage, widths 16k, 32k, 64k.
    "wide_resnet28_10": {"layers": [4, 4, 4], "preact": True, "widen_factor": 10, "stem": "cifar"},
    "wide_resnet16_8": {"layers": [2, 2, 2], "preact": True, "widen_factor": 8, "stem": "cifar"},
    # The generic entry: any combination of fields (`model=resnet model.depth=101 ...`).
    "resnet": {"depth": 50},
}

ATTENTION_PRESETS: dict[str, dict[str, Any]] = {
    "attention56": {"modules_per_stage": (1, 1, 1), "stem": "imagenet"},
    "attention92": {"modules_per_stage": (1, 2, 3), "stem": "imagenet"},
    "attention56_cifar": {"modules_per_stage": (1, 1, 1), "stem": "cifar"},
    "attention92_cifar": {"modules_per_stage": (1, 2, 3), "stem": "cifar"},
}


def list_models() -> list[str]:
    return sorted([*PRESETS, *ATTENTION_PRESETS])


def upsamples(name: str) -> bool:
    """Whether network `name` upsamples bilinearly (the attention networks' soft-mask branch),
    whose CUDA backward has no deterministic kernel (resnets.runtime refuses it under
    trainer.deterministic=true)."""
    return name in ATTENTION_PRESETS
