"""Compose configs the way train.py does, and run the trainer in-process on tiny settings."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from resnets.config import register_configs

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model=resnet",
    "model.depth=8",
    "model.stem=cifar",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.workers=0",
]


def compose_train(overrides: list[str], config_name: str = "train") -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def run_train_cli(args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=kwargs.pop("cwd", REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def run_script_inprocess(script: str, args: list[str]) -> int | str | None:
    """Run REPO/<script>.py as `python <script>.py ARGS` would, in this process (no interpreter
    start-up; monkeypatches apply); returns the exit status."""
    path = REPO / f"{script}.py"
    argv = sys.argv
    sys.argv = [str(path), *args]
    try:
        runpy.run_path(str(path), run_name="__main__")
        return 0
    except SystemExit as stop:
        return stop.code
    finally:
        sys.argv = argv


# one network per block type and stem: the fast subset's sample of the registry (`make test`
# builds every name); the others are marked slow
QUICK_MODELS = {
    "resnet", "resnet18", "resnet20", "resnet50", "resnet50d", "preact_resnet18", "seresnet18",
    "wide_resnet16_8",
}  # fmt: skip


def model_params(names: list[str]) -> list:
    """`names` as pytest params, all but QUICK_MODELS marked slow."""
    import pytest

    return [pytest.param(n, marks=[] if n in QUICK_MODELS else [pytest.mark.slow]) for n in names]
