"""The run's metrics history: `history.jsonl` in the run directory, one JSON object a line.

Every logged step (`"kind": "train"`) and every evaluation (`"kind": "val"`) is one record:
`step`, `epoch` (the 1-based epoch it belongs to), `images_seen` (all ranks), `wall_time_s`
(the run's, over every attempt) and every figure by its tag (`train/loss`, `train/top1`, `lr`,
`val/top1`, `val_ema/loss`, ...). A resume cuts the file back to what the checkpoint had seen,
so the history of a resumed run is the history of an uninterrupted one. The sweep leaderboard,
its curves and expected-vs-achieved read this file (resnets/engine/runs.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .callbacks import RECORD_KEYS, Callback

FILE = "history.jsonl"


class History(Callback):
    """Writes `history.jsonl` on rank 0; its state is the number of records written."""

    def __init__(self) -> None:
        self.records = 0
        self.path: Path | None = None

    def on_fit_start(self, trainer: Any) -> None:
        if not trainer.dist.is_main:
            return
        self.path = trainer.out / FILE
        if trainer.step == 0:
            self.records = 0
        keep = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        # records past the checkpoint belong to the interrupted attempt
        self.path.write_text("".join(keep[: self.records]))

    def on_step_end(self, trainer: Any, record: Mapping[str, Any] | None) -> None:
        if record is not None:
            self._write(record)

    def on_validation_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        self._write(record)

    def _write(self, record: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")
        self.records += 1

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.records = int(state.get("records", 0))


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_history(run_dir: Path) -> list[dict[str, Any]] | None:
    """The records of `run_dir/history.jsonl`, None when there is none; a damaged line (a run
    killed while writing) ends the history there."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if isinstance(record, dict):
            records.append(record)
    return records


def series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every figure, in the order written."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for tag, value in record.items():
            if tag not in RECORD_KEYS and isinstance(value, (int, float)):
                out.setdefault(tag, []).append((int(record["step"]), float(value)))
    return out
