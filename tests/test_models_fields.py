"""Every model field either changes the network as it says or is refused: nothing is dropped."""

from __future__ import annotations

import pytest
import torch

from resnets.models import ModelError, build_model


def _dropouts(model: torch.nn.Module) -> list[float]:
    return [
        m.p
        for name, m in model.named_modules()
        if name.startswith("layer") and isinstance(m, torch.nn.Dropout)
    ]


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "preact_resnet18", "wide_resnet16_8"])
def test_inner_dropout_reaches_every_basic_block(name: str) -> None:
    model = build_model(name, 10, inner_dropout=0.3, image_size=32)
    blocks = [b for stage in model.stages() for b in stage]
    assert _dropouts(model) == [0.3] * len(blocks)
    # In training mode it really drops: two passes with different masks give different outputs.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_inner_dropout_sits_between_the_two_convs_of_a_basic_block() -> None:
    block = build_model("resnet20", 10, inner_dropout=0.5).layer1[0]
    order = [name for name, _ in block.named_children()]
    assert order.index("conv1") < order.index("dropout") < order.index("conv2")


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        (
            "resnet50",
            {"inner_dropout": 0.2},
            r"model\.inner_dropout=0\.2.*0 for bottleneck blocks",
        ),
        ("resnet20", {"inner_dropout": 1.0}, r"model\.inner_dropout=1\.0.*\[0, 1\)"),
        ("resnet20", {"inner_dropout": -0.1}, r"model\.inner_dropout=-0\.1.*\[0, 1\)"),
        ("resnest50d", {"attention": "se"}, r"model\.attention='se'.*none with radix > 0"),
        ("resnet18", {"stride_in_1x1": True}, r"model\.stride_in_1x1=True.*false for basic blocks"),
        ("resnet20", {"stride_in_1x1": True}, r"model\.stride_in_1x1=True.*false for basic blocks"),
    ],
)
def test_values_a_network_cannot_honour_are_refused(name, kwargs, pattern) -> None:
    with pytest.raises(ModelError, match=pattern):
        build_model(name, 10, **kwargs)


def test_stride_in_1x1_moves_the_stride_of_bottlenecks() -> None:
    v15 = build_model("resnet50", 10).layer2[0]
    v1 = build_model("resnet50", 10, stride_in_1x1=True).layer2[0]
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))
    assert (v1.conv1.stride, v1.conv2.stride) == ((2, 2), (1, 1))
