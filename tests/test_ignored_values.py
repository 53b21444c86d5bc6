"""Values that were accepted and then not read are refused in one line naming the field.

stride_in_1x1 on ResNeSt, zero_init_residual on pre-activation networks, image-file geometry on
in-memory datasets, a warm-up or a floor under one-cycle: each changed nothing, silently.
"""

from __future__ import annotations

import re

import pytest
import torch

from resnets.config import ConfigError
from resnets.data import DataError, build_data
from resnets.models import ModelError, build_model
from resnets.validation import validate

from .helpers import TINY, compose_train, run_script_inprocess


def test_stride_in_1x1_on_resnest_is_refused() -> None:
    with pytest.raises(ModelError, match=r"^model\.stride_in_1x1=True .*radix > 0"):
        build_model("resnet", 10, depth=50, radix=2, stride_in_1x1=True)
    # where it is read, it moves the stride: the first 1x1 of layer2's first block strides
    v1 = build_model("resnet50", 10, stride_in_1x1=True).layer2[0]
    assert v1.conv1.stride == (2, 2) and v1.conv2.stride == (1, 1)


def test_zero_init_residual_on_a_preact_network_is_refused() -> None:
    with pytest.raises(ModelError, match=r"^model\.zero_init_residual=True .*preact=true"):
        build_model("preact_resnet18", 10, zero_init_residual=True)
    with pytest.raises(ModelError, match=r"zero_init_residual"):
        build_model("wide_resnet16_8", 10, zero_init_residual=True)
    # post-activation networks read it: every block's last BN starts at zero
    net = build_model("resnet18", 10, zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in net.layer1)


@pytest.mark.parametrize(
    "override",
    [
        "data.val_resize=40",
        "data.val_crop=28",
        "data.augment.random_resized_crop_scale=[0.5,1.0]",
    ],
)
def test_image_file_geometry_on_an_in_memory_dataset_is_refused(override: str) -> None:
    cfg = compose_train(["data=digits", override])
    field = re.escape(override.split("=")[0])
    with pytest.raises(DataError, match=rf"^{field}=.* is not read by data=digits"):
        build_data(cfg.data, batch_size=8, num_workers=0)


def test_image_file_geometry_on_cifar_is_refused_too(cifar10_root) -> None:
    cfg = compose_train(["data=cifar10", f"data.root={cifar10_root}", "data.val_crop=32"])
    with pytest.raises(DataError, match=r"^data\.val_crop=32 is not read by data=cifar10"):
        build_data(cfg.data, batch_size=8, num_workers=0)
    # the defaults build
    cfg = compose_train(["data=cifar10", f"data.root={cifar10_root}"])
    assert build_data(cfg.data, batch_size=8, num_workers=0).eval_crop == 32


@pytest.mark.parametrize("field", ["warmup_epochs=1", "min_lr=0.001"])
def test_warmup_and_min_lr_under_onecycle_are_refused(field: str) -> None:
    cfg = compose_train(["sched=onecycle", f"sched.{field}", "trainer.epochs=5"])
    with pytest.raises(
        ConfigError, match=rf"^sched\.{field.split('=')[0]}=.* not read by sched=onecycle"
    ):
        validate(cfg)
    validate(compose_train(["sched=cosine", f"sched.{field}", "trainer.epochs=5"]))


def test_train_cli_refuses_an_ignored_value_in_one_line(tmp_path, capsys) -> None:
    code = run_script_inprocess(
        "train",
        [*TINY, "sched=onecycle", "sched.min_lr=0.01", f"hydra.run.dir={tmp_path}"],
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: sched.min_lr=0.01")
    assert not (tmp_path / "checkpoints").exists()
