"""Settings left to the device (precision auto, channels_last / compile null) follow it."""

from __future__ import annotations

import logging

import pytest
import yaml

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train
from resnets.runtime import apply_device_defaults

from .helpers import TINY, compose_train


@pytest.mark.parametrize(
    ("device", "bf16", "expected"),
    [
        ("cpu", None, {"precision": "32", "channels_last": True, "compile": False}),
        ("cuda", True, {"precision": "bf16-mixed", "channels_last": True, "compile": True}),
        ("cuda", False, {"precision": "16-mixed", "channels_last": True, "compile": True}),
    ],
)
def test_unset_fields_follow_the_device(device, bf16, expected) -> None:
    trainer = {"precision": "auto", "channels_last": None, "compile": None}
    assert apply_device_defaults(trainer, device, bf16_supported=bf16) == expected
    assert trainer == expected


def test_what_the_user_set_is_kept() -> None:
    trainer = {"precision": "bf16-mixed", "channels_last": False, "compile": None}
    assert apply_device_defaults(trainer, "cpu") == {"compile": False}
    assert trainer == {"precision": "bf16-mixed", "channels_last": False, "compile": False}


@pytest.mark.slow
def test_a_run_logs_and_records_what_the_device_chose(tmp_path, caplog) -> None:
    cfg = compose_train([*TINY, "data=digits", "trainer.max_steps=2", "trainer.device=cpu"])
    assert (cfg.trainer.precision, cfg.trainer.channels_last) == ("auto", None)
    with caplog.at_level(logging.INFO, logger="resnets.runtime"):
        train(cfg, tmp_path)
    assert "device cpu: precision=32, channels_last=True, compile=False" in caplog.text
    stored = yaml.safe_load(load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"])
    assert stored["trainer"]["precision"] == "32"
    assert stored["trainer"]["channels_last"] is True
    assert stored["trainer"]["compile"] is False


def test_an_explicit_choice_beats_the_device_default(tmp_path) -> None:
    cfg = compose_train(
        [*TINY, "data=digits", "trainer.max_steps=1", "trainer.channels_last=false"]
    )
    train(cfg, tmp_path)
    stored = yaml.safe_load(load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"])
    assert stored["trainer"]["channels_last"] is False


TOY_WIDTH = [
    "model=resnet",
    "model.depth=8",
    "model.stem=cifar",
    "model.base_channels=4",
    "data=fake",
    "data.fake_size=40",
    "data.num_classes=4",
    "data.image_size=8",
    "trainer.batch_size=4",
    "trainer.epochs=1",
    "trainer.workers=0",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def test_toy_widths_are_the_only_cpu_channels_last_hazard() -> None:
    from resnets.models import build_model
    from resnets.runtime import cpu_channels_last_hazard

    assert cpu_channels_last_hazard(build_model("resnet", 4, depth=8, base_channels=4)) == (
        "layer2.0.downsample.0"
    )
    for name in ("resnet20", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet16_8"):
        assert cpu_channels_last_hazard(build_model(name, 10)) is None, name


@pytest.mark.slow
def test_toy_width_run_falls_back_to_nchw_instead_of_corrupting_memory(tmp_path) -> None:
    # In channels_last this network's backward aborts the process (torch 2.14 CPU kernel bug),
    # so the run goes through a subprocess: a regression shows as a crash, not a dead test run.
    from .helpers import run_train_cli

    run = run_train_cli([*TOY_WIDTH, f"hydra.run.dir={tmp_path / 'run'}"])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "channels_last off: torch's CPU backward of layer2.0.downsample.0" in run.stdout
    stored = yaml.safe_load(load_checkpoint(tmp_path / "run/checkpoints/last.pt")["config"])
    assert stored["trainer"]["channels_last"] is False
    explicit = run_train_cli(
        [*TOY_WIDTH, "trainer.channels_last=true", f"hydra.run.dir={tmp_path / 'explicit'}"]
    )
    assert explicit.returncode == 2
    assert (
        explicit.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: trainer.channels_last=true: torch's CPU backward of layer2.0.downsample.0"
        )
    )
