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
