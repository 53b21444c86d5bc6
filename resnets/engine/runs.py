"""What one run directory of a sweep holds, read defensively: a damaged run is reported, never fatal.

A run directory has `.hydra/overrides.yaml` and `.hydra/config.yaml` (written by Hydra),
`metrics.json` (written by the trainer when it finishes, or by the sweep when the job fails) and
`history.jsonl`, the metrics history (resnets/engine/history.py). Runs written before the history
file existed are read from their TensorBoard events under `tb/`, with the old tag names.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointError
from .history import read_history, series

FINISHED, FAILED, UNFINISHED, BROKEN = "finished", "failed", "unfinished", "broken"


@dataclass
class Curve:
    """Validation top-1 (%) after each evaluation; x is in epochs when the run says how many
    steps an epoch has, else in steps."""

    x: list[float]
    top1: list[float]
    unit: str  # "epoch" or "step"


@dataclass
class Run:
    path: Path
    name: str
    overrides: list[str] = field(default_factory=list)
    status: str = UNFINISHED
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] | None = None  # the history, read on demand

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        return int(seed) if isinstance(seed, int) else None

    @property
    def expected(self) -> dict[str, Any] | None:
        expected = self.config.get("expected")
        return expected if isinstance(expected, dict) and expected.get("top1") is not None else None


def find_run_dirs(sweep: Path) -> list[Path]:
    """Every run directory under the sweep (each has the .hydra/overrides.yaml Hydra writes)."""
    if not sweep.is_dir():
        raise CheckpointError(sweep, "no such sweep directory")
    runs = sorted(
        (p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml")),
        key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep).parts],
    )
    if not runs:
        raise CheckpointError(sweep, "holds no Hydra runs (no */.hydra/overrides.yaml)")
    return runs


def read_run(path: Path, sweep: Path) -> Run:
    """The run's record; status `broken` with the reason when a file cannot be read."""
    run = Run(path=path, name=str(path.relative_to(sweep)) or ".")
    overrides_file = path / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(overrides_file.read_text())
    except (OSError, yaml.YAMLError) as err:
        return _broken(run, f"{overrides_file} is not valid YAML ({_first_line(err)})")
    if overrides is None:
        overrides = []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return _broken(run, f"{overrides_file} is not a list of overrides")
    run.overrides = overrides
    config_file = path / ".hydra" / "config.yaml"
    if config_file.exists():
        try:
            config = yaml.safe_load(config_file.read_text())
        except (OSError, yaml.YAMLError) as err:
            return _broken(run, f"{config_file} is not valid YAML ({_first_line(err)})")
        run.config = config if isinstance(config, dict) else {}
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        run.reason = "no metrics.json (still running, interrupted or killed)"
        return run
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as err:
        return _broken(run, f"{metrics_file} is not valid JSON ({_first_line(err)})")
    if not isinstance(metrics, dict):
        return _broken(run, f"{metrics_file} holds a {type(metrics).__name__}, not an object")
    run.metrics = metrics
    status = metrics.get("status", FINISHED if "best_val_top1" in metrics else None)
    if status == FAILED:
        run.status, run.reason = FAILED, str(metrics.get("reason"))
        return run
    if status != FINISHED:
        return _broken(run, f"{metrics_file} has status {status!r}")
    for key in ("best_val_top1", "val_top1"):
        if not _is_number(metrics.get(key)):
            return _broken(run, f"{metrics_file}: {key} is {metrics.get(key)!r}, not a number")
    run.status = FINISHED
    return run


def read_scalars(run: Run) -> dict[str, list[tuple[int, float]]]:
    """Every figure of the run's history, {tag: [(step, value), ...]}; empty when there is
    none or it cannot be read. Read once per run."""
    if run.scalars is not None:
        return run.scalars
    records = read_history(run.path)
    run.scalars = series(records) if records is not None else _tensorboard_scalars(run.path)
    return run.scalars


def _tensorboard_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A run from before history.jsonl: its TensorBoard events, tags renamed to today's."""
    tb = path / "tb"
    if not tb.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # one line per event file
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    try:
        events.Reload()
        return {
            tag.replace("/acc", "/top1"): [(p.step, p.value) for p in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]
        }
    except Exception:  # damaged event files: the run has no curves, nothing more
        return {}


def read_curve(run: Run, weights: str = "raw") -> Curve | None:
    """Validation top-1 of the raw (or "ema") weights after each evaluation, from the run's
    history."""
    points = read_scalars(run).get("val_ema/top1" if weights == "ema" else "val/top1")
    if not points:
        return None
    per_epoch = run.metrics.get("steps_per_epoch")
    if _is_number(per_epoch) and per_epoch > 0:
        return Curve([s / per_epoch for s, _ in points], [v for _, v in points], "epoch")
    return Curve([float(s) for s, _ in points], [v for _, v in points], "step")


def best_epoch_figures(run: Run) -> dict[str, float] | None:
    """Top-5 and loss of the evaluation that gave the best top-1, from the run's history:
    the weights (raw or EMA) whose best top-1 metrics.json reports."""
    best = run.metrics.get("best_val_top1")
    scalars = read_scalars(run)
    if not _is_number(best):
        return None
    candidates = []
    for prefix in ("val", "val_ema"):
        if all(f"{prefix}/{name}" in scalars for name in ("top1", "top5", "loss")):
            step, value = max(scalars[f"{prefix}/top1"], key=lambda p: p[1])  # first maximum
            candidates.append((abs(value - best), prefix, step))
    if not candidates:
        return None
    gap, prefix, step = min(candidates)
    if gap > 1e-3:  # the history does not hold the best that metrics.json reports
        return None
    at = {}
    for name in ("top5", "loss"):
        values = [v for s, v in scalars[f"{prefix}/{name}"] if s == step]
        if not values:
            return None
        at[name] = float(values[-1])
    return {"top1": float(best), **at}


def _broken(run: Run, reason: str) -> Run:
    run.status, run.reason = BROKEN, reason
    return run


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
