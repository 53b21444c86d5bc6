"""CIFAR-style and attention networks: parameter counts against the papers' figures."""

from __future__ import annotations

import pytest
import torch

from resnets.models import build_model

# (name, published parameters, source); counts are for 10 classes.
PAPER_COUNTS = [
    ("resnet20", 0.27e6, "He et al. 2015, Table 6"),
    ("resnet32", 0.46e6, "He et al. 2015, Table 6"),
    ("resnet44", 0.66e6, "He et al. 2015, Table 6"),
    ("resnet56", 0.85e6, "He et al. 2015, Table 6"),
    ("resnet110", 1.7e6, "He et al. 2015, Table 6"),
    ("resnet1202", 19.4e6, "He et al. 2015, Table 6"),
    ("preact_resnet110", 1.7e6, "He et al. 2016 (identity mappings), Table 3"),
    ("preact_resnet164", 1.7e6, "He et al. 2016 (identity mappings), Table 3"),
    ("preact_resnet1001", 10.2e6, "He et al. 2016 (identity mappings), Table 3"),
    ("resnext29_8x64d", 34.4e6, "Xie et al. 2017, Table 7"),
    ("resnext29_16x64d", 68.1e6, "Xie et al. 2017, Table 7"),
    ("wide_resnet28_10", 36.5e6, "Zagoruyko & Komodakis 2016, Table 4"),
    ("wide_resnet16_8", 11.0e6, "Zagoruyko & Komodakis 2016, Table 4"),
]
ATTENTION_COUNTS = [
    ("attention56", 31.9e6, 1000, "Wang et al. 2017, Table 4"),
    ("attention92", 51.3e6, 1000, "Wang et al. 2017, Table 4"),
]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "published", "source"), PAPER_COUNTS)
def test_cifar_counts_match_papers_within_2_percent(
    name: str, published: float, source: str
) -> None:
    count = _params(build_model(name, num_classes=10, image_size=32))
    assert abs(count - published) / published < 0.02, f"{name}: {count} vs {published} ({source})"


@pytest.mark.parametrize(("name", "published", "classes", "source"), ATTENTION_COUNTS)
def test_attention_counts_match_paper_within_5_percent(name, published, classes, source) -> None:
    count = _params(build_model(name, num_classes=classes))
    assert abs(count - published) / published < 0.05, f"{name}: {count} vs {published} ({source})"


def _unit(c: int) -> int:
    """Pre-activation bottleneck C -> C/4 -> C: three convs and three BNs."""
    w = c // 4
    return c * w + 9 * w * w + w * c + 2 * (c + w + w)


def _module(c: int, levels: int) -> int:
    """Attention module, p=1 t=2 r=1: 3L+3 units and a BN-ReLU-1x1 x2 mask head."""
    return (3 * levels + 3) * _unit(c) + 2 * (c * c + 2 * c)


def test_attention92_cifar_equals_the_architecture_in_docs() -> None:
    """Paper figure (1.9M) is not reachable with the module REFERENCE.md describes; see docs/models.md.

    Instead, check the build against an independent count of that architecture.
    """

    def proj(i, o):
        return i * o

    def first_unit(i, o):  # unit with a projection shortcut, input width i
        w = o // 4
        return i * w + 9 * w * w + w * o + 2 * (i + w + w) + proj(i, o)

    expected = 3 * 9 * 16  # 3x3 stem
    expected += first_unit(16, 64) + _module(64, 3)
    expected += first_unit(64, 128) + 2 * _module(128, 2)
    expected += first_unit(128, 256) + 3 * _module(256, 1)
    expected += 3 * _unit(256) + 2 * 256 + 256 * 10 + 10
    assert _params(build_model("attention92_cifar", num_classes=10)) == expected


def test_resnet20_layout_is_the_papers() -> None:
    net = build_model("resnet20", num_classes=10)
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [3, 3, 3]
    assert net.layer3[0].conv2.out_channels == 64
    # option A: no parameters in any shortcut
    assert all(
        sum(p.numel() for p in b.downsample.parameters()) == 0
        for layer in (net.layer2, net.layer3)
        for b in layer[:1]
    )
