"""Our networks against torchvision's and timm's: same state-dict keys, same outputs, same counts."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from resnets.models import build_model

TORCHVISION = {  # name -> parameter count from shared/REFERENCE.md (1000 classes)
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}
TIMM = {
    "seresnet18": 11_779_624,
    "seresnet34": 21_960_416,
    "seresnet50": 28_088_024,
    "seresnet101": 49_326_872,
    "seresnet152": 66_821_848,
    "seresnext50_32x4d": 27_559_896,
    "seresnext101_32x8d": 93_569_048,
    "resnet50d": 25_576_264,
    "resnest50d": 27_483_240,
}
BIG = {
    "resnet152",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet101_2",
    "seresnet152",
    "seresnext101_32x8d",
    "seresnet101",
    "resnet101",
}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _compare(ours: torch.nn.Module, reference: torch.nn.Module, expected_params: int) -> None:
    reference.eval()
    # Randomise BN statistics so a wrong eval-time path cannot hide behind identity BNs.
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    assert _params(ours) == _params(reference) == expected_params
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff < 1e-5


def _marks(name: str):
    return [pytest.mark.slow] if name in BIG else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in TORCHVISION])
def test_matches_torchvision(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    _compare(build_model(name), reference, TORCHVISION[name])


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in TIMM])
def test_matches_timm(name: str) -> None:
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False)
    _compare(build_model(name), reference, TIMM[name])


@pytest.mark.slow
def test_fields_alone_rebuild_a_named_network() -> None:
    """`model=resnet` with fields gives the same network as the preset name."""
    by_fields = build_model("resnet", depth=101, groups=32, width_per_group=8)
    assert _params(by_fields) == TORCHVISION["resnext101_32x8d"]
    by_fields.load_state_dict(torchvision.models.resnext101_32x8d().state_dict(), strict=True)


def test_keras_v1_variant_moves_the_stride_to_the_first_1x1() -> None:
    v1 = build_model("resnet50", stride_in_1x1=True, drop_rate=0.5)
    block = v1.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert _params(v1) == TORCHVISION["resnet50"]  # same weights, different placement
    assert isinstance(v1.dropout, torch.nn.Dropout) and v1.dropout.p == 0.5
