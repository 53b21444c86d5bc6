"""Every name builds and trains; backbone outputs, shortcuts, stems and errors behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from resnets.models import ModelError, build_model, build_model_from_config, list_models
from resnets.models.summary import count_flops, layer_table
from resnets.models.summary import main as summary_main

from .helpers import model_params

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
SMALL_IMAGES = {
    n
    for n in list_models()
    if n.endswith("_cifar") or n.startswith(("resnext29", "wide_resnet28", "wide_resnet16"))
}
SMALL_IMAGES |= {f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)}
SMALL_IMAGES |= {f"preact_resnet{d}" for d in (110, 164, 1001)}


def _native(name: str) -> int:
    return 32 if name in SMALL_IMAGES else 224


@pytest.mark.parametrize("name", model_params(list_models()))
def test_every_name_runs_forward_and_backward_at_native_size(name: str) -> None:
    size = _native(name)
    model = build_model(name, num_classes=7, image_size=size)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_every_name_has_a_preset_yaml_and_back() -> None:
    files = {p.stem for p in CONF.glob("*.yaml")}
    assert files == set(list_models())
    for name in list_models():
        assert yaml.safe_load((CONF / f"{name}.yaml").read_text())["name"] == name


def test_stem_auto_picks_cifar_for_small_images(caplog) -> None:
    with caplog.at_level("INFO"):
        small = build_model("resnext50_32x4d", num_classes=10, image_size=32)
    assert small.stem_type == "cifar" and "chose the cifar stem" in caplog.text
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)
    big = build_model("resnext50_32x4d", image_size=224)
    assert big.stem_type == "imagenet" and big.conv1.kernel_size == (7, 7)
    # 32 px through the CIFAR stem keeps a 4x4 final map instead of 1x1
    assert small.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4


def test_backbone_and_feature_maps() -> None:
    backbone = build_model("resnet50", include_top=False)
    assert not hasattr(backbone, "fc")
    assert backbone(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 7, 7)
    fpn = build_model("resnet50", out_indices=[1, 2, 3, 4])
    maps = fpn(torch.randn(1, 3, 224, 224))
    assert [m.shape[1:] for m in maps] == [
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (2048, 7, 7),
    ]
    assert [f["num_chs"] for f in fpn.feature_info[1:]] == [256, 512, 1024, 2048]
    assert [f["reduction"] for f in fpn.feature_info[1:]] == [4, 8, 16, 32]


def test_feature_maps_feed_torchvision_faster_rcnn_fpn() -> None:
    from torchvision.ops import FeaturePyramidNetwork

    maps = build_model("resnet18", out_indices=[1, 2, 3, 4])(torch.randn(1, 3, 128, 128))
    fpn = FeaturePyramidNetwork([64, 128, 256, 512], 32)
    out = fpn({str(i): m for i, m in enumerate(maps)})
    assert [v.shape[-1] for v in out.values()] == [32, 16, 8, 4]


def _shortcut_params(model) -> int:
    return sum(
        p.numel()
        for m in model.modules()
        if getattr(m, "downsample", None) is not None
        for p in m.downsample.parameters()
    )


def test_shortcut_options() -> None:
    a = build_model("resnet", depth=20, stem="cifar", shortcut="A", num_classes=10)
    b = build_model("resnet", depth=20, stem="cifar", shortcut="B", num_classes=10)
    c = build_model("resnet", depth=20, stem="cifar", shortcut="C", num_classes=10)
    assert _shortcut_params(a) == 0
    # B: projections only at the two stage transitions (16->32, 32->64), conv + BN
    assert _shortcut_params(b) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    # C: a projection in every one of the 9 blocks
    blocks_c = [m for m in c.modules() if getattr(m, "downsample", None) is not None]
    assert len(blocks_c) == 9 and _shortcut_params(c) > _shortcut_params(b)
    x = torch.randn(2, 3, 32, 32)
    assert a(x).shape == b(x).shape == c(x).shape == (2, 10)


def test_zero_init_residual_makes_blocks_start_as_identity() -> None:
    net = build_model("resnet18", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for layer in (net.layer1, net.layer4) for b in layer)


def test_drop_path_increases_linearly_with_depth() -> None:
    net = build_model("resnet", depth=20, stem="cifar", drop_path_rate=0.2, num_classes=10)
    rates = [
        b.drop_path.p
        for layer in (net.layer1, net.layer2, net.layer3)
        for b in layer
        if isinstance(b.drop_path, torch.nn.Module) and hasattr(b.drop_path, "p")
    ]
    assert rates[0] == pytest.approx(0.2 / 8) and rates[-1] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "resnet51"}, r"model\.name='resnet51'.*closest: resnet56, resnet50"),
        ({"name": "resnet", "depth": 42}, r"model\.depth=42.*18, 34, 50, 101, 152.*6n\+2.*9n\+2"),
        ({"name": "resnet", "depth": 42, "block": "basic"}, r"model\.depth=42.*6n\+2: 20, 32"),
        ({"name": "resnet", "block": "triple"}, r"model\.block='triple'.*basic, bottleneck"),
        ({"name": "resnet50", "attention": "cbam"}, r"model\.attention='cbam'.*none, se"),
        ({"name": "resnet50", "stem": "huge"}, r"model\.stem='huge'.*imagenet, cifar, deep, auto"),
        ({"name": "resnet50", "shortcut": "D"}, r"model\.shortcut='D'.*A, B, C"),
        ({"name": "resnet50", "colour": 1}, r"model\.colour=1.*known fields"),
        (
            {"name": "resnet", "depth": 18, "block": "bottleneck"},
            r"model\.block='bottleneck'.*'basic' for ImageNet depth 18",
        ),
        ({"name": "resnet50", "drop_path_rate": 1.5}, r"model\.drop_path_rate=1\.5.*\[0, 1\)"),
    ],
)
def test_bad_fields_name_field_value_and_accepted(kwargs, pattern) -> None:
    with pytest.raises(ModelError, match=pattern):
        build_model(kwargs.pop("name"), **kwargs)


def test_build_from_config_ignores_nulls_and_uses_data_shape() -> None:
    cfg = {"name": "resnet20", "depth": None, "preact": None, "layers": None}
    net = build_model_from_config(cfg, num_classes=10, in_chans=1, image_size=32)
    assert net.conv1.in_channels == 1 and net.fc.out_features == 10


def test_summary_totals_equal_parameter_sum(capsys) -> None:
    model = build_model("resnet20", num_classes=10, image_size=32)
    rows = layer_table(model, 32)
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    assert (
        summary_main(["resnet20", "--input-size", "32", "--num-classes", "10", "--depth", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "total parameters:     269,722" in out and "layer3.2.conv2" in out


def test_flops_match_published_resnet50() -> None:
    # REFERENCE.md: 4.09 G multiply-adds at 224 px; flop_counter counts a multiply-add as 2 FLOPs
    gmacs = count_flops(build_model("resnet50"), 224) / 2e9
    assert gmacs == pytest.approx(4.09, rel=0.01)


def test_summary_cli_rejects_unknown_name(capsys) -> None:
    assert summary_main(["resnet51"]) == 2
    assert "model.name='resnet51'" in capsys.readouterr().err
