"""The engine's events: a logger added by one class and one YAML file, callback state that
resumes exactly, the history file, progress lines, wall and train time."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from resnets.config import ConfigError
from resnets.engine.callbacks import Callback
from resnets.engine.history import read_history
from resnets.engine.progress import rate
from resnets.engine.trainer import train

from .helpers import TINY, compose_train, read_metrics

DIGITS = [*TINY, "data=digits", "trainer.epochs=2", "trainer.log_every=4"]  # 22 steps an epoch


class Recorder(Callback):
    """A logger a user adds: it writes every event it sees to `<run dir>/<file>`, and counts the
    logged steps in its state."""

    def __init__(self, file: str) -> None:
        self.file, self.logged = file, 0

    def _note(self, trainer: Any, *event: Any) -> None:
        with (trainer.out / self.file).open("a") as f:
            f.write(json.dumps([*event, trainer.step, self.logged]) + "\n")

    def on_fit_start(self, trainer: Any) -> None:
        self._note(trainer, "fit_start")

    def on_step_end(self, trainer: Any, record: Any) -> None:
        if record is not None:
            self.logged += 1
            self._note(trainer, "step", record["train/top1"])

    def on_validation_end(self, trainer: Any, record: Any) -> None:
        self._note(trainer, "val", record["val/top1"])

    def on_save(self, trainer: Any, path: Path) -> None:
        self._note(trainer, "save", path.name)

    def on_fit_end(self, trainer: Any, metrics: Any) -> None:
        self._note(trainer, "fit_end", None if metrics is None else metrics["val_top1"])

    def state_dict(self) -> dict[str, Any]:
        return {"logged": self.logged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.logged = state["logged"]


def _with_recorder(tmp_path: Path, overrides: list[str]):
    """A config dir of the test's own, holding conf/logger/recorder.yaml, on Hydra's search path."""
    logger_dir = tmp_path / "extra" / "logger"
    logger_dir.mkdir(parents=True, exist_ok=True)
    (logger_dir / "recorder.yaml").write_text(
        f"recorder:\n  _target_: {__name__}.Recorder\n  file: recorder.jsonl\n"
    )
    return compose_train(
        [
            f"hydra.searchpath=[file://{tmp_path / 'extra'}]",
            "logger=[tensorboard,recorder]",
            *overrides,
        ]
    )


def _events(run: Path) -> list[list]:
    return [json.loads(line) for line in (run / "recorder.jsonl").read_text().splitlines()]


def test_a_logger_is_one_class_and_one_yaml_file(tmp_path) -> None:
    run = tmp_path / "run"
    train(_with_recorder(tmp_path, DIGITS), run)
    events = _events(run)
    metrics = read_metrics(run)
    history = read_history(run)
    assert events[0] == ["fit_start", 0, 0]
    # every logged step, with the figures the history holds, in order
    logged = [r for r in history if r["kind"] == "train"]
    assert [e[1:3] for e in events if e[0] == "step"] == [
        [r["train/top1"], r["step"]] for r in logged
    ]
    assert [e[2] for e in events if e[0] == "step"] == list(range(4, 45, 4))
    assert [(e[1], e[2]) for e in events if e[0] == "val"] == [
        (r["val/top1"], r["step"]) for r in history if r["kind"] == "val"
    ]
    # each validation is followed by its checkpoints, the run by its metrics
    assert [e[1] for e in events if e[0] == "save"][-1] == "last.pt"
    assert events[-1] == ["fit_end", metrics["val_top1"], 44, 11]
    assert (run / "tb").is_dir()  # the default logger is still there


def test_logger_state_resumes_exactly_from_last_pt(tmp_path) -> None:
    run = tmp_path / "run"
    train(_with_recorder(tmp_path, [*DIGITS, "trainer.max_steps=22"]), run)
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["callbacks"]["recorder"] == {"logged": 5}  # steps 4, 8, ..., 20
    assert saved["callbacks"]["history"] == {"records": 6}  # 5 logged steps and 1 evaluation
    train(_with_recorder(tmp_path, DIGITS), run)
    events = _events(run)
    second = [i for i, e in enumerate(events) if e[0] == "fit_start"][1]
    resumed = events[second:]
    assert resumed[0] == ["fit_start", 22, 5]
    # the count goes on from the checkpoint's: logged steps 24, 28, ..., 44 are the 6th to 11th
    assert [e[3] for e in resumed if e[0] == "step"] == list(range(6, 12))


def test_an_empty_logger_list_writes_no_events_and_a_non_callback_is_refused(tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_train([*TINY, "trainer.max_steps=2", "logger=[]"]), run)
    assert not (run / "tb").exists() and (run / "history.jsonl").is_file()
    bad = compose_train([*TINY, "+logger.bad._target_=collections.OrderedDict"])
    with pytest.raises(ConfigError, match=r"^logger\.bad\._target_='collections.OrderedDict'"):
        train(bad, tmp_path / "bad")


def _comparable(records: list[dict]) -> list[dict]:
    """A record without what the clock decides."""
    return [
        {k: v for k, v in r.items() if k != "wall_time_s" and not k.startswith("perf/")}
        for r in records
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")  # bit-identical runs need one thread
def test_history_of_a_resumed_run_is_the_history_of_an_uninterrupted_one(tmp_path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_train(DIGITS), whole)
    train(compose_train([*DIGITS, "trainer.max_steps=22"]), parts)
    # a killed attempt wrote past its last checkpoint: the resume drops those records
    with (parts / "history.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "train", "step": 24, "epoch": 2, "train/loss": 9.0}) + "\n")
    train(compose_train(DIGITS), parts)
    assert _comparable(read_history(parts)) == _comparable(read_history(whole))
    history, metrics = read_history(whole), read_metrics(whole)
    vals = [r for r in history if r["kind"] == "val"]
    assert [(r["step"], r["epoch"]) for r in vals] == [(22, 1), (44, 2)]
    assert vals[-1]["val/top1"] == metrics["val_top1"]
    assert (
        vals[-1]["val/top5"] == metrics["val_top5"] and vals[-1]["val/loss"] == metrics["val_loss"]
    )
    # every image trained on so far: 22 whole steps of 64 an epoch (data.drop_last)
    assert [r["images_seen"] for r in vals] == [22 * 64, 2 * 22 * 64]
    assert all(a["wall_time_s"] <= b["wall_time_s"] for a, b in itertools.pairwise(history))
    assert {"lr", "train/loss", "train/top1", "train/grad_norm"} <= set(history[0])


def test_wall_time_covers_every_attempt_and_train_time(tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_train([*TINY, "trainer.epochs=2", "trainer.max_steps=3"]), run)
    first = read_metrics(run)
    assert 0 < first["train_time_s"] <= first["wall_time_s"]
    train(compose_train([*TINY, "trainer.epochs=2", "trainer.max_steps=6"]), run)
    second = read_metrics(run)
    assert second["train_time_s"] > first["train_time_s"]
    assert second["wall_time_s"] >= first["wall_time_s"] + (
        second["train_time_s"] - first["train_time_s"]
    )
    assert second["train_time_s"] <= second["wall_time_s"]


def test_progress_lines_without_a_terminal(tmp_path, caplog) -> None:
    """progress_every beyond an epoch still gives a line at each pass's end; a resumed run's
    line reads its true place in the epoch."""
    run = tmp_path / "run"
    fake = ["data=fake", "data.fake_size=512"]  # 16 steps of 32 images
    base = [*TINY, *fake, "trainer.batch_size=32", "trainer.epochs=2"]
    with caplog.at_level(logging.INFO):
        train(compose_train([*base, "trainer.progress_every=100", "trainer.max_steps=20"]), run)
    lines = [r.getMessage() for r in caplog.records if "images/s, time left" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == [
        "epoch 1/2 step 16 (batch 16/16)",
        "epoch 2/2 step 20 (batch 4/16)",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(compose_train([*base, "trainer.progress_every=1"]), run)
    lines = [r.getMessage() for r in caplog.records if "images/s, time left" in r.getMessage()]
    assert lines[0].startswith("epoch 2/2 step 21 (batch 5/16)")
    assert lines[-1].startswith("epoch 2/2 step 32 (batch 16/16)")
    assert lines[-1].endswith("time left 0:00:00 (epoch), 0:00:00 (run)")


@pytest.mark.parametrize(
    ("value", "text"), [(0.4242, "0.42"), (1.0, "1.00"), (12.34, "12.3"), (306.6, "307")]
)
def test_rates_keep_three_figures_below_a_hundred(value, text) -> None:
    assert rate(value) == text
