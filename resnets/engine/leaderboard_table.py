"""leaderboard.md and leaderboard.csv from the grouped rows: the markdown shows what differs
between rows, rounded for reading; the CSV keeps everything."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..csv_cells import safe_row
from .rounding import round_value
from .runs import Run
from .stats import LEVEL
from .sweep_weights import LABEL

# per-run figures that are averaged over seeds; final_raw/final_ema: both weights, labelled
FIGURES = (
    "best_top1",
    "best_top5",
    "best_loss",
    "final_top1",
    "final_top5",
    "final_loss",
    "final_raw_top1",
    "final_ema_top1",
    "train_time_s",
    "images_per_s",
)
CSV_COLUMNS = (
    "rank",
    "setting",
    "overrides",
    "runs",
    "seeds",
    "n",
    "weights",
    *(f"{name}_{stat}" for name in FIGURES for stat in ("mean", "std")),
    "num_params",
    "gflops",
    "lead",
    "lead_ci_low",
    "lead_ci_high",
    "lead_p_value",
    "lead_n",
    "expected_top1",
    "expected_weights",
    "achieved_top1",
    "tolerance",
    "difference",
    "verdict",
    "source",
    "optuna_best",
)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def varying_keys(groups: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Override keys whose value differs between rows (shown as columns), and the overrides
    common to every row (shown once, as written: `+experiment=...` keeps its `+`)."""
    values: dict[str, set[str | None]] = {}
    written: dict[str, str] = {}
    for g in groups:
        for o in g["setting"]:
            written.setdefault(override_key(o), o)
    order = list(written)
    settings = [dict((override_key(o), o.split("=", 1)[-1]) for o in g["setting"]) for g in groups]
    for k in order:
        values[k] = {s.get(k) for s in settings}
    varying = [k for k in order if len(values[k]) > 1]
    common = [written[k] for k in order if len(values[k]) == 1]
    return varying, common


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def significant_digits(value: float, figures: int = 3) -> int:
    """Decimals that show `figures` significant figures (at least one decimal): 0.4213 -> 3,
    307.2 -> 1; a rate of 0.4 images/s is never printed as 0."""
    if value == 0 or not math.isfinite(value):
        return 1
    return max(1, figures - 1 - math.floor(math.log10(abs(value))))


def _mean_std(g: dict[str, Any], name: str, digits: int | None = 2) -> str:
    """mean ± std; digits None: three significant figures of the mean."""
    mean, std = g[f"{name}_mean"], g[f"{name}_std"]
    if mean is None:
        return "-"
    digits = significant_digits(mean) if digits is None else digits
    return _fmt(mean, digits) + (f" ± {_fmt(std, digits)}" if std is not None else "")


def _write_csv(groups: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for g in groups:
            row = {k: g.get(k) for k in CSV_COLUMNS}
            for k in ("setting", "runs", "seeds"):
                row[k] = " ".join(str(v) for v in g[k])
            # every run's overrides (seeds included), runs separated by "; "
            row["overrides"] = "; ".join(" ".join(o) for o in g["overrides"])
            welch = g.get("welch")
            if welch is not None:
                row.update(
                    lead_ci_low=welch.low,
                    lead_ci_high=welch.high,
                    lead_p_value=welch.p_value,
                    lead_n=f"{welch.n_a} vs {welch.n_b}",
                )
            row["optuna_best"] = bool(g.get("optuna_best"))
            writer.writerow(safe_row(row))


def weights_sentence(groups: list[dict[str, Any]], forced: str | None) -> str:
    kinds = sorted({g["weights"] for g in groups})
    named = " and ".join(LABEL.get(k, k) for k in kinds)
    why = (
        f"forced by use_ema={'true' if forced == 'ema' else 'false'}"
        if forced
        else "the weights that chose each run's best.pt, its `best_by`"
    )
    return (
        f"Weights scored: {named} ({why}); every `best`, `final` and curve figure is of those "
        "weights. The CSV also has `final_raw_top1` and `final_ema_top1`."
    )


def write_leaderboard(
    groups: list[dict[str, Any]],
    sweep: Path,
    left_out: Sequence[Run] = (),
    *,
    grouped: bool = True,
    rescored: bool = True,
    forced: str | None = None,
    plots: dict[str, Path] | None = None,
    optuna: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """leaderboard.md (what differs between rows, rounded) and leaderboard.csv (everything)."""
    md, csv_path = sweep / "leaderboard.md", sweep / "leaderboard.csv"
    _write_csv(groups, csv_path)
    varying, common = varying_keys(groups)
    n_runs = sum(g["n"] for g in groups)
    best_from = "re-scored best.pt" if rescored else "metrics.json and the metrics history"
    lines = [
        f"# Leaderboard: {sweep}",
        "",
        f"{n_runs} finished runs in {len(groups)} rows"
        + (
            " (runs of the same overrides, in any order, but `seed` share a row: mean ± std)"
            if grouped
            else ""
        )
        + f"; {len(left_out)} left out (below). Ranked by mean best top-1.",
        "",
        f"`best`: the evaluation with the highest top-1 (from {best_from}); "
        "`final`: the last evaluation (metrics.json). Each is one evaluation's figures.",
        "",
        weights_sentence(groups, forced),
        "",
        f"`lead`: this row's mean best top-1 minus the next row's, with the {LEVEL:.0%} "
        "confidence interval of the difference and the two-sided p-value of Welch's t-test over "
        "their seeds (n vs n); fewer than two seeds a row: no test.",
    ]
    if common:
        lines += ["", "Common to every row: `" + " ".join(common) + "`"]
    if optuna:
        lines += [
            "",
            f"Optuna's best trial (value {_fmt(optuna['value'])}): row {optuna['rank']}, marked ★.",
        ]
    lines += _table(groups, varying)
    lines += _expected_section(groups, varying)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({path.name})" for title, path in plots.items()]
    if left_out:
        lines += ["", "## Runs left out", ""]
        lines += [f"- `{r.name}` ({r.status}): {r.reason}" for r in left_out]
    md.write_text("\n".join(lines) + "\n")
    return md, csv_path


def _table(groups: list[dict[str, Any]], varying: list[str]) -> list[str]:
    header = ["#", *varying, "n", "weights", "best top-1 %", "best top-5 %", "best loss"]
    header += ["final top-1 %", "final loss", "train s", "images/s", "params", "GFLOPs", "lead"]
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        values = dict((override_key(o), o.split("=", 1)[-1]) for o in g["setting"])
        mark = " ★" if g.get("optuna_best") else ""
        cells = [f"{g['rank']}{mark}", *(round_value(values.get(k)) for k in varying)]
        cells += [
            str(g["n"]),
            LABEL.get(g["weights"], g["weights"]),
            _mean_std(g, "best_top1"),
            _mean_std(g, "best_top5"),
            _mean_std(g, "best_loss", 4),
            _mean_std(g, "final_top1"),
            _mean_std(g, "final_loss", 4),
            _mean_std(g, "train_time_s", 1),
            _mean_std(g, "images_per_s", None),
            _fmt(g["num_params"]),
            _fmt(g["gflops"], 3),
            lead_cell(g),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def lead_cell(g: dict[str, Any]) -> str:
    """+1.25 (95% CI -0.40 to 2.90, p=0.12, n=3 vs 2); one seed: no test."""
    if g["lead"] is None:
        return "-"
    welch = g.get("welch")
    if welch is None:
        return f"+{g['lead']:.2f} (no test: needs 2+ seeds a row and some spread)"
    return (
        f"+{g['lead']:.2f} ({LEVEL:.0%} CI {welch.low:.2f} to {welch.high:.2f}, "
        f"p={welch.p_value:.2g}, n={welch.n_a} vs {welch.n_b})"
    )


def _expected_section(groups: list[dict[str, Any]], varying: list[str]) -> list[str]:
    rows = [g for g in groups if g["verdict"] is not None]
    if not rows:
        return []
    lines = [
        "",
        "## Expected versus achieved",
        "",
        "Achieved: the final validation top-1 of the weights the published figure is for, "
        "mean ± std over seeds; a figure applies only to the data it was published for.",
        "",
        "| # | setting | weights | expected top-1 % | achieved top-1 % | difference | tolerance "
        "| verdict | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in rows:
        values = dict((override_key(o), o.split("=", 1)[-1]) for o in g["setting"])
        setting = " ".join(f"{k}={round_value(values.get(k))}" for k in varying) or "all"
        achieved = "-"
        if g["achieved_top1"] is not None:
            std = g["achieved_std"]
            achieved = f"{g['achieved_top1']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
        difference = "-" if g["difference"] is None else f"{g['difference']:+.2f}"
        lines.append(
            f"| {g['rank']} | {setting} | {LABEL.get(g['expected_weights'])} "
            f"| {g['expected_top1']:.2f} | {achieved} | {difference} | ±{g['tolerance']:.2f} "
            f"| **{g['verdict']}** | {g['source'] or '-'} |"
        )
    return lines
