"""Names from strangers' folders never become spreadsheet formulas in the CSVs the package writes
(OWASP CSV injection: a text cell starting with = + - @ tab or CR gets a leading quote)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from resnets.csv_cells import FORMULA_STARTS, safe_cell, safe_row
from resnets.deploy.predict import write_predictions
from resnets.engine.evaluation import _write_report
from resnets.engine.leaderboard_table import CSV_COLUMNS, write_leaderboard

HOSTILE = ["=1+1", "+SUM(A1)", "@cmd", "-2+3", "\tx", "\rx", "=cmd|' /C calc'!A0"]


def _cells(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [cell for row in list(csv.reader(f))[1:] for cell in row]


def _dangerous(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS)


def test_safe_cell_rule() -> None:
    for text in HOSTILE:
        assert safe_cell(text) == "'" + text
    for kept in ("cat", "a=b", "", "'=x", -1.5, 0, None):
        assert safe_cell(kept) == kept  # numbers stay numbers; only leading characters count
    assert safe_row({"a": "=x", "b": -2}) == {"a": "'=x", "b": -2}


def test_predictions_csv_neutralises_file_and_class_names(tmp_path) -> None:
    rows = [
        {"file": Path(f"{name}.png"), "top": [("=cmd|calc", 0.9), ("@x", 0.1)]} for name in HOSTILE
    ]
    path = write_predictions(tmp_path, rows, [(Path("+bad.png"), "-unreadable")], topk=2)
    cells = _cells(path) + _cells(tmp_path / "skipped.csv")
    assert not [c for c in cells if _dangerous(c)]
    assert "'=1+1.png" in cells and "'=cmd|calc" in cells and "'+bad.png" in cells


def test_per_class_csv_neutralises_class_names(tmp_path) -> None:
    per_class = [
        {"class": name, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1}
        for name in HOSTILE
    ]
    metrics = {"per_class": per_class, "step": 0}
    metrics |= dict.fromkeys(("top1", "top5", "nll", "ece", "macro_f1", "images_per_s"), 0.0)
    _write_report(tmp_path, metrics, torch.zeros(2, 2), HOSTILE, False, tmp_path / "tb")
    cells = _cells(tmp_path / "per_class.csv")
    assert not [c for c in cells if _dangerous(c)]
    assert [c for c in cells if c.startswith("'")] == ["'" + name for name in HOSTILE]


@pytest.mark.parametrize("name", HOSTILE[:3])
def test_leaderboard_csv_neutralises_settings(tmp_path, name) -> None:
    group = dict.fromkeys(CSV_COLUMNS)
    group |= {
        "rank": 1,
        "setting": [f"run_name={name}"],
        "overrides": [name],
        "runs": [name],
        "seeds": [0],
        "n": 1,
        "lead": None,
        "lead_exceeds_spread": None,
        "verdict": None,
        "source": name,
        "weights": "raw",
    }
    csv_path = tmp_path / "leaderboard.csv"
    write_leaderboard([group], tmp_path, grouped=False)
    cells = _cells(csv_path)
    assert not [c for c in cells if _dangerous(c)]
    assert "'" + name in cells
