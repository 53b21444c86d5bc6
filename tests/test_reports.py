"""What evaluate.py writes is true and stays put: one report folder per checkpoint and setting,
its figures in the run's TensorBoard, warnings and refusals where scores would mislead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnets.config import register_eval_configs
from resnets.data import DataError
from resnets.engine.evaluation import evaluate_run
from resnets.engine.trainer import train

from .helpers import REPO, TINY, compose_train


def compose_eval(overrides: list[str]):
    register_eval_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def evaluate(overrides: list[str], tmp_path: Path) -> dict:
    cfg = compose_eval([*overrides, "trainer.workers=0"])
    return evaluate_run(cfg, overrides, tmp_path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(compose_train([*TINY, "trainer.epochs=1", "trainer.max_steps=4"]), out)
    return out


@pytest.mark.slow
def test_reports_of_best_and_last_live_side_by_side(run_dir, tmp_path) -> None:
    best = evaluate([f"ckpt={run_dir / 'checkpoints' / 'best.pt'}"], tmp_path)
    last = evaluate([f"ckpt={run_dir / 'checkpoints' / 'last.pt'}"], tmp_path)
    on_disk = {
        name: json.loads((run_dir / "eval" / name / "metrics.json").read_text())
        for name in ("best", "last")
    }
    assert on_disk["best"]["checkpoint"].endswith("best.pt") and on_disk["best"] == best
    assert on_disk["last"]["checkpoint"].endswith("last.pt") and on_disk["last"] == last
    assert best["report_dir"] == str(run_dir / "eval" / "best")


def test_report_pngs_reach_the_runs_tensorboard(run_dir, tmp_path) -> None:
    metrics = evaluate([f"ckpt={run_dir / 'checkpoints' / 'best.pt'}"], tmp_path)
    report = Path(metrics["report_dir"])
    for png in ("reliability.png", "confusion_matrix.png"):
        with Image.open(report / png) as image:
            assert image.size[0] >= 300 and image.size[1] >= 300, (png, image.size)
    # the run prints `tensorboard --logdir <run>/tb`: the evaluation is a sub-run there
    events = EventAccumulator(str(run_dir / "tb" / "eval-best")).Reload()
    assert {"eval/reliability", "eval/confusion_matrix"} <= set(events.Tags()["images"])
    assert "eval/top1" in events.Tags()["scalars"]
    assert events.Scalars("eval/top1")[0].value == pytest.approx(metrics["top1"], abs=1e-4)


def test_test_split_of_a_dataset_without_one_is_refused(run_dir, tmp_path) -> None:
    with pytest.raises(
        DataError, match=r"data\.split='test': digits has no test split.*val, train"
    ):
        evaluate([f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", "data.split=test"], tmp_path)
    assert not (run_dir / "eval" / "best-test").exists()


def test_flip_on_a_network_trained_with_flips_gives_no_warning(tmp_path) -> None:
    run = tmp_path / "run"
    overrides = [*TINY, "data=fake", "data.fake_size=64", "data.augment.hflip=true"]
    train(compose_train([*overrides, "trainer.epochs=1", "trainer.max_steps=1"]), run)
    metrics = evaluate([f"ckpt={run / 'checkpoints' / 'last.pt'}", "tta=flip"], tmp_path)
    assert metrics["warnings"] == [] and Path(metrics["report_dir"]).name == "last-flip"
