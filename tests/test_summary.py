"""The summary table: --depth, one row per module call, per-layer MACs checked against the
convolution formula, shortcut A visible, no Identity rows, totals in MACs and FLOPs."""

from __future__ import annotations

import pytest

from resnets.models import build_model
from resnets.models.summary import count_flops, count_macs, layer_table
from resnets.models.summary import main as summary_main


def conv_macs(c_in: int, c_out: int, k: int, h: int, w: int, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k * h * w


@pytest.mark.slow  # ResNet-50 at 224 px, four forward passes
def test_resnet50_table_is_short_and_its_macs_add_up(capsys) -> None:
    model = build_model("resnet50")
    rows = layer_table(model, 224, depth=2)
    assert 20 <= len(rows) <= 30  # stem, 4 stages, 16 blocks, pool, head
    assert {r.depth for r in rows} == {1, 2}
    macs = count_macs(model, 224)
    assert macs == pytest.approx(4.09e9, rel=0.01)  # torchvision's docs: 4.09 "GFLOPS"
    assert count_flops(model, 224) == 2 * macs
    assert sum(r.macs for r in rows if r.depth == 1) == macs
    stage_macs = {r.name: r.macs for r in rows}
    assert stage_macs["layer1"] == sum(stage_macs[f"layer1.{i}"] for i in range(3))
    # the stem conv by the formula: 64 filters of 3x7x7 at 112x112 outputs
    assert stage_macs["conv1"] == conv_macs(3, 64, 7, 112, 112)
    assert stage_macs["fc"] == 2048 * 1000
    assert summary_main(["resnet50"]) == 0
    out = capsys.readouterr().out
    assert f"multiply-adds (MACs): {macs / 1e9:.3f} G per 224 px image" in out
    assert f"FLOPs:                {2 * macs / 1e9:.3f} G (1 multiply-add = 2 FLOPs)" in out
    assert "GFLOPS" in out  # names torchvision's convention


def test_every_leaf_conv_has_the_formulas_macs() -> None:
    model = build_model("resnext50_32x4d", num_classes=10, image_size=64)
    modules = dict(model.named_modules())
    rows = layer_table(model, 64)
    convs = [r for r in rows if r.kind == "Conv2d"]
    assert len(convs) == 53
    for r in convs:
        conv = modules[r.name]
        c, h, w = r.output_shape[1:]
        expected = conv_macs(conv.in_channels, c, conv.kernel_size[0], h, w, conv.groups)
        assert r.macs == expected, r.name


def test_shortcut_a_is_visible_and_repeated_calls_get_their_own_rows() -> None:
    model = build_model("resnet20", num_classes=10, image_size=32)
    blocks = {r.name: r.kind for r in layer_table(model, 32, depth=2)}
    assert blocks["layer2.0"] == "BasicBlock +A" and blocks["layer2.1"] == "BasicBlock"
    rows = layer_table(model, 32, depth=3)
    names = [r.name for r in rows]
    shortcut = next(r for r in rows if r.name == "layer2.0.downsample")
    assert shortcut.kind == "ZeroPadShortcut" and shortcut.output_shape == (1, 32, 16, 16)
    # each block calls its ReLU twice: two rows, parameters counted once
    assert "layer1.0.relu #1" in names and "layer1.0.relu #2" in names


def test_no_identity_rows_and_leaf_parameters_add_up() -> None:
    model = build_model("preact_resnet18", num_classes=10, image_size=32)
    assert any(type(m).__name__ == "Identity" for m in model.modules())
    rows = layer_table(model, 32)
    assert not [r for r in rows if r.kind == "Identity"]
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())


def test_depth_flag(capsys) -> None:
    assert (
        summary_main(["resnet20", "--input-size", "32", "--num-classes", "10", "--depth", "1"]) == 0
    )
    table = capsys.readouterr().out.split("\n-")[1].splitlines()[1:]
    assert [line.split()[0] for line in table] == [
        "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc",
    ]  # fmt: skip
    assert summary_main(["resnet20", "--depth", "0"]) == 2
    assert "--depth=0 is not valid" in capsys.readouterr().err
