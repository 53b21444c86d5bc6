"""A leaderboard over a Hydra multirun sweep: one row per run, best top-1 first."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointError

COLUMNS = (
    "rank",
    "run",
    "overrides",
    "top1",
    "top5",
    "loss",
    "num_params",
    "gflops",
    "train_time_s",
)


def find_runs(sweep: Path) -> list[Path]:
    """Every run directory under the sweep (each has the .hydra/overrides.yaml Hydra writes)."""
    if not sweep.is_dir():
        raise CheckpointError(sweep, "no such sweep directory")
    runs = sorted(p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml"))
    if not runs:
        raise CheckpointError(sweep, "holds no Hydra runs (no */.hydra/overrides.yaml)")
    return runs


def run_overrides(run: Path) -> list[str]:
    return list(yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or [])


def leaderboard_rows(
    sweep: Path, rescore: bool, score: Callable[[Path], dict[str, Any]]
) -> list[dict[str, Any]]:
    """`score(checkpoint)` evaluates a checkpoint (rescore=true); otherwise metrics.json is read."""
    rows = []
    for run in find_runs(sweep):
        trained = run / "metrics.json"
        train_metrics = json.loads(trained.read_text()) if trained.exists() else {}
        row: dict[str, Any] = {
            "run": str(run.relative_to(sweep)),
            "overrides": " ".join(run_overrides(run)),
            "train_time_s": train_metrics.get("train_time_s"),
        }
        best = run / "checkpoints" / "best.pt"
        if rescore and best.exists():
            m = score(best)
            row.update(
                top1=m["top1"],
                top5=m["top5"],
                loss=m["nll"],
                num_params=m["num_params"],
                gflops=m["gflops"],
            )
        elif train_metrics:
            row.update(
                top1=train_metrics.get("best_val_top1"),
                top5=train_metrics.get("val_top5"),
                loss=train_metrics.get("val_loss"),
                num_params=train_metrics.get("num_params"),
                gflops=train_metrics.get("gflops"),
            )
        else:
            row.update(
                top1=None, top5=None, loss=None, num_params=None, gflops=None
            )  # unfinished run
        rows.append(row)
    rows.sort(key=lambda r: -1.0 if r["top1"] is None else r["top1"], reverse=True)
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_leaderboard(rows: list[dict[str, Any]], sweep: Path) -> tuple[Path, Path]:
    md, csv_path = sweep / "leaderboard.md", sweep / "leaderboard.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    header = "| # | run | overrides | top-1 % | top-5 % | loss | params | GFLOPs | train s |"
    lines = [f"# Leaderboard: {sweep}", "", header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['run']} | `{r['overrides']}` | {_fmt(r['top1'])} | {_fmt(r['top5'])} | "
            f"{_fmt(r['loss'], 4)} | {_fmt(r['num_params'])} | {_fmt(r['gflops'], 3)} | {_fmt(r['train_time_s'], 1)} |"
        )
    md.write_text("\n".join(lines) + "\n")
    return md, csv_path
