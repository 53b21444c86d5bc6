"""The engine as a plain Python API: `Trainer(cfg, output_dir).fit()` with no Hydra app around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import Trainer

from .helpers import TINY, compose_train


def test_trainer_runs_without_hydra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one short epoch: 90% of the digits held out leaves 2 steps of 64
    composed = compose_train(
        [*TINY, "data=digits", "data.val_fraction=0.9", "trainer.epochs=1", "trainer.device=cpu"]
    )
    # a plain DictConfig, as OmegaConf.load of a run's .hydra/config.yaml gives it
    cfg = OmegaConf.create(OmegaConf.to_yaml(composed, resolve=True))
    assert not GlobalHydra.instance().is_initialized() and not HydraConfig.initialized()

    def no_hydra(*_args, **_kwargs):
        raise AssertionError("the engine read Hydra's global state")

    monkeypatch.setattr(HydraConfig, "get", staticmethod(no_hydra))
    out = tmp_path / "api-run"
    best = Trainer(cfg, out, overrides=["trainer.epochs=1"]).fit()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["overrides"] == ["trainer.epochs=1"]
    # digits: 1,797 images, 1,618 (90%, rounded up) held out; batch 64 with drop_last over 179
    assert metrics["val_samples"] == 1618 and metrics["epochs"] == 1
    assert metrics["steps"] == metrics["steps_per_epoch"] == (1797 - 1618) // 64
    assert best == metrics["best_val_top1"] == metrics["val_top1"]
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["step"] == metrics["steps"] and last["epoch"] == 1
    assert OmegaConf.create(last["config"]).data.name == "digits"
    assert load_checkpoint(out / "checkpoints" / "best.pt")["best"] == best
    assert "epoch 1/1 step 2: train loss" in (out / "train.log").read_text()


def test_output_dir_is_required() -> None:
    """No hidden default: without Hydra there is no output directory to fall back on."""
    with pytest.raises(TypeError, match="output_dir"):
        Trainer(compose_train(TINY))  # type: ignore[call-arg]
