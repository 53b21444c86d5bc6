"""model.blurpool: FFCV's anti-aliased ResNet-50, exact against timm's BlurPool2d applied FFCV's
way to torchvision's network, with parameter names (and weights) unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets.models import build_model
from resnets.models.layers import BlurConv2d

timm_layers = pytest.importorskip("timm.layers")
torchvision_models = pytest.importorskip("torchvision.models")


def _blur_like_ffcv(model: nn.Module) -> int:
    """The reference: timm's BlurPool2d (binomial 3x3, stride 1, zero padding) run on the input
    of every torchvision conv with stride > 1 and at least 16 input channels."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1 and module.in_channels >= 16:
            blur = timm_layers.BlurPool2d(module.in_channels, 3, stride=1, pad_mode="constant")
            module.register_forward_pre_hook(lambda m, args, blur=blur: (blur(args[0]),))
            count += 1
    return count


@pytest.mark.slow
def test_resnet50_blurpool_equals_timms_blur_on_torchvisions_network() -> None:
    torch.manual_seed(0)
    ours = build_model("resnet50", num_classes=10, blurpool=True).eval()
    reference = torchvision_models.resnet50(num_classes=10).eval()
    reference.load_state_dict(ours.state_dict())  # the same names: strict
    # FFCV's rule on ResNet-50: the strided 3x3 of three downsampling blocks and their three
    # projection shortcuts; the stem's conv sees 3 channels
    assert _blur_like_ffcv(reference) == 6
    assert sum(isinstance(m, BlurConv2d) for m in ours.modules()) == 6
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        plain = build_model("resnet50", num_classes=10).eval()
        plain.load_state_dict(ours.state_dict())
        assert (plain(x) - ours(x)).abs().max() > 1e-3  # the blur changes the outputs


def test_blur_is_a_binomial_low_pass_at_stride_one() -> None:
    conv = BlurConv2d(16, 4, 3, stride=2, padding=1, bias=False)
    nn.init.dirac_(conv.weight[:, :4])  # out channel k copies in channel k
    conv.weight.data[:, 4:] = 0
    x = torch.zeros(1, 16, 8, 8)
    x[0, 0, 4, 4] = 16.0
    y = conv(x)
    # the impulse at (4, 4) blurred to [1 2 1] x [1 2 1], then sampled at even positions
    assert y[0, 0, 2, 2] == 4.0 and y[0, 0, 2, 1] == 0.0 and y.shape == (1, 4, 4, 4)


@pytest.mark.slow
def test_blurpool_keeps_state_dict_keys_and_seeded_weights() -> None:
    torch.manual_seed(0)
    plain = build_model("resnet50", num_classes=10).state_dict()
    torch.manual_seed(0)
    blurred = build_model("resnet50", num_classes=10, blurpool=True).state_dict()
    assert list(plain) == list(blurred)
    assert all(torch.equal(plain[k], blurred[k]) for k in plain)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("resnet18", 3 + 3),
        pytest.param("resnet50d", 3, marks=pytest.mark.slow),  # avg-pool shortcuts: no strided 1x1
        pytest.param("resnext50_32x4d", 6, marks=pytest.mark.slow),
        ("resnet20", 2),  # zero-padded identity shortcuts: no conv
    ],
)
def test_blur_sits_before_every_strided_conv_on_16_or_more_channels(name, count) -> None:
    model = build_model(name, num_classes=10, blurpool=True)
    blurred = [m for m in model.modules() if isinstance(m, BlurConv2d)]
    assert len(blurred) == count
    plain = [
        m
        for m in model.modules()
        if type(m) is nn.Conv2d and max(m.stride) > 1 and m.in_channels >= 16
    ]
    assert plain == []
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
