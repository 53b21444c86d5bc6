"""Every family of the zoo exports to each format and runs equal to eager (tiny widths, random
weights in eval mode); the trained-run export tests cover resnet20, pre-act, SE-ResNeXt and
the attention network end to end through export.py."""

from __future__ import annotations

import pytest
import torch

from resnets.deploy import formats
from resnets.models import build_model

SMALL = {"num_classes": 10, "image_size": 16, "base_channels": 16}
FAMILIES = {
    # split attention (softmax over the radix), deep stem and average-pool shortcuts
    "resnest": dict(layers=[1, 1, 1], block="bottleneck", radix=2, stem="deep", avg_down=True),
    "resnet_d": dict(layers=[1, 1, 1], block="bottleneck", stem="deep", avg_down=True),
    "wide": dict(layers=[1, 1, 1], preact=True, widen_factor=2, stem="cifar", inner_dropout=0.3),
    "shortcut_a": dict(depth=8, stem="cifar", shortcut="A"),
    "v1_stride_in_1x1": dict(
        layers=[1, 1], block="bottleneck", stride_in_1x1=True, stem="imagenet"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_exports_to_every_format_equal_to_eager(family, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet", **SMALL, **FAMILIES[family]).eval()
    x = torch.randn(7, 3, 16, 16)
    with torch.no_grad():
        reference = model(x)
    for fmt in formats.FORMATS:
        path = tmp_path / formats.FILE_NAMES[fmt]
        formats.write(fmt, model, path, in_chans=3, size=16, dynamic_batch=True)
        run = formats.load(fmt, path)
        for batch in (1, 7):
            got = run(x[:batch])
            assert got.shape == (batch, 10), (fmt, batch)
            assert torch.allclose(got, reference[:batch], atol=1e-4, rtol=0), (
                fmt,
                batch,
                (got - reference[:batch]).abs().max().item(),
            )
