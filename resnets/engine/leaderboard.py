"""The leaderboard of a Hydra multirun sweep: runs that differ only in `seed` grouped into one
row (n, mean, standard deviation), ranked by mean best top-1, with expected-versus-achieved
verdicts, Optuna's best trial marked, and the runs that failed or cannot be read listed apart.

Every figure in a row comes from one evaluation and its column says which: `best_*` from the
evaluation with the highest top-1 (the one best.pt holds), `final_*` from the last one.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointError
from .rounding import round_value
from .runs import BROKEN, FINISHED, Run, best_epoch_figures, find_run_dirs, read_curve, read_run

# per-run figures that are averaged over seeds
FIGURES = (
    "best_top1",
    "best_top5",
    "best_loss",
    "final_top1",
    "final_top5",
    "final_loss",
    "train_time_s",
    "images_per_s",
)
SEED_KEYS = ("seed", "+seed", "++seed")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def setting_of(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that define a setting: all but the seed."""
    return tuple(o for o in overrides if override_key(o) != "seed")


def run_figures(run: Run, rescore: bool, score: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """One finished run's figures. rescore: best_* from evaluating best.pt (else metrics.json and
    the metrics history of the best evaluation); final_* always from metrics.json."""
    m = run.metrics
    row: dict[str, Any] = {
        "run": run.name,
        "overrides": list(run.overrides),
        "seed": run.seed,
        "final_top1": m.get("val_top1"),
        "final_top5": m.get("val_top5"),
        "final_loss": m.get("val_loss"),
        "best_epoch": m.get("best_epoch"),
        "train_time_s": m.get("train_time_s"),
        "images_per_s": m.get("images_per_s"),
        "num_params": m.get("num_params"),
        "gflops": m.get("gflops"),
        "expected": run.expected,
    }
    best_pt = run.path / "checkpoints" / "best.pt"
    if rescore and best_pt.exists():
        scored = score(best_pt)
        row.update(
            best_top1=scored["top1"],
            best_top5=scored["top5"],
            best_loss=scored["nll"],
            num_params=scored["num_params"],
            gflops=scored["gflops"],
        )
    else:
        best = best_epoch_figures(run) or {"top1": m.get("best_val_top1")}
        # never a top-5 or loss of another epoch beside the best top-1: unknown stays empty
        row.update(best_top1=best["top1"], best_top5=best.get("top5"), best_loss=best.get("loss"))
    row["curve"] = read_curve(run)
    return row


def collect(
    sweep: Path,
    rescore: bool,
    score: Callable[[Path], dict[str, Any]],
    user_errors: tuple[type[Exception], ...] = (CheckpointError,),
) -> tuple[list[dict[str, Any]], list[Run]]:
    """Figures of every finished run, and the runs left out (failed, unfinished, unreadable)."""
    rows, left_out = [], []
    for path in find_run_dirs(sweep):
        run = read_run(path, sweep)
        if run.status != FINISHED:
            left_out.append(run)
            continue
        try:
            rows.append(run_figures(run, rescore, score))
        except user_errors as err:  # a damaged best.pt: list the run, score the others
            run.status, run.reason = BROKEN, " ".join(str(err).split())
            left_out.append(run)
    return rows, left_out


def _stats(values: list[Any]) -> tuple[float | None, float | None]:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(numbers) != len(values) or not numbers:
        return None, None  # a figure missing in one run has no honest mean
    return statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else None


def group_rows(rows: list[dict[str, Any]], group_seeds: bool = True) -> list[dict[str, Any]]:
    """One row per setting (or per run), ranked by mean best top-1, with the lead column."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = setting_of(row["overrides"]) if group_seeds else (row["run"],)
        groups.setdefault(key, []).append(row)
    out = []
    for members in groups.values():
        g: dict[str, Any] = {
            "setting": list(setting_of(members[0]["overrides"]))
            if group_seeds
            else list(members[0]["overrides"]),
            "overrides": list(members[0]["overrides"]),
            "runs": [r["run"] for r in members],
            "seeds": [r["seed"] for r in members],
            "n": len(members),
            "num_params": members[0]["num_params"],
            "gflops": members[0]["gflops"],
            "expected": members[0]["expected"],
            "curves": [r["curve"] for r in members if r.get("curve")],
        }
        for name in FIGURES:
            g[f"{name}_mean"], g[f"{name}_std"] = _stats([r[name] for r in members])
        out.append(g)
    out.sort(key=lambda g: -math.inf if g["best_top1_mean"] is None else g["best_top1_mean"])
    out.reverse()
    for i, g in enumerate(out):
        g["rank"] = i + 1
        g["lead"], g["lead_exceeds_spread"] = None, None
        if i + 1 < len(out) and None not in (g["best_top1_mean"], out[i + 1]["best_top1_mean"]):
            nxt = out[i + 1]
            g["lead"] = g["best_top1_mean"] - nxt["best_top1_mean"]
            if g["best_top1_std"] is not None and nxt["best_top1_std"] is not None:
                # the lead counts as real when it exceeds both rows' seed spreads added
                g["lead_exceeds_spread"] = g["lead"] > g["best_top1_std"] + nxt["best_top1_std"]
        _verdict(g)
    return out


def _verdict(g: dict[str, Any]) -> None:
    """Expected versus achieved: the mean final top-1 (papers report the model at the end of
    training) within the expected value's tolerance passes."""
    g["expected_top1"] = g["tolerance"] = g["difference"] = g["verdict"] = g["source"] = None
    expected = g["expected"]
    if not expected or g["final_top1_mean"] is None:
        return
    g["expected_top1"] = float(expected["top1"])
    g["tolerance"] = float(expected.get("tolerance") or 0.0)
    g["source"] = expected.get("source")
    g["difference"] = g["final_top1_mean"] - g["expected_top1"]
    g["verdict"] = "pass" if abs(g["difference"]) <= g["tolerance"] else "fail"


def optuna_best(sweep: Path, groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mark the group whose overrides are Optuna's best_params (optimization_results.yaml)."""
    results = sweep / "optimization_results.yaml"
    if not results.exists():
        return None
    try:
        best = yaml.safe_load(results.read_text())
        params = dict(best["best_params"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None
    for g in groups:
        values = dict(o.lstrip("+~").split("=", 1) for o in g["overrides"] if "=" in o)
        if all(_same(values.get(k), v) for k, v in params.items()):
            g["optuna_best"] = True
            return {"params": params, "value": best.get("best_value"), "rank": g["rank"]}
    return None


def _same(text: str | None, value: Any) -> bool:
    if text is None:
        return False
    try:
        return math.isclose(float(text), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(text) == str(value)


def varying_keys(groups: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Override keys whose value differs between rows (shown as columns), and the overrides
    common to every row (shown once)."""
    values: dict[str, set[str | None]] = {}
    order: list[str] = []
    settings = [dict((override_key(o), o.split("=", 1)[-1]) for o in g["setting"]) for g in groups]
    for s in settings:
        for k in s:
            if k not in values:
                order.append(k)
                values[k] = set()
    for s in settings:
        for k in order:
            values[k].add(s.get(k))
    varying = [k for k in order if len(values[k]) > 1]
    common = [f"{k}={next(iter(values[k]))}" for k in order if len(values[k]) == 1]
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


def _mean_std(g: dict[str, Any], name: str, digits: int = 2) -> str:
    mean, std = g[f"{name}_mean"], g[f"{name}_std"]
    if mean is None:
        return "-"
    return _fmt(mean, digits) + (f" ± {_fmt(std, digits)}" if std is not None else "")


CSV_COLUMNS = (
    "rank",
    "setting",
    "overrides",
    "runs",
    "seeds",
    "n",
    *(f"{name}_{stat}" for name in FIGURES for stat in ("mean", "std")),
    "num_params",
    "gflops",
    "lead",
    "lead_exceeds_spread",
    "expected_top1",
    "tolerance",
    "difference",
    "verdict",
    "source",
    "optuna_best",
)


def write_leaderboard(
    groups: list[dict[str, Any]],
    sweep: Path,
    left_out: Sequence[Run] = (),
    *,
    grouped: bool = True,
    rescored: bool = True,
    plots: dict[str, Path] | None = None,
    optuna: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """leaderboard.md (what differs between rows, rounded) and leaderboard.csv (everything)."""
    md, csv_path = sweep / "leaderboard.md", sweep / "leaderboard.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for g in groups:
            row = {k: g.get(k) for k in CSV_COLUMNS}
            for k in ("setting", "overrides", "runs", "seeds"):
                row[k] = " ".join(str(v) for v in g[k])
            row["optuna_best"] = bool(g.get("optuna_best"))
            writer.writerow(row)
    varying, common = varying_keys(groups)
    n_runs = sum(g["n"] for g in groups)
    best_from = "re-scored best.pt" if rescored else "metrics.json and the metrics history"
    lines = [
        f"# Leaderboard: {sweep}",
        "",
        f"{n_runs} finished runs in {len(groups)} rows"
        + (" (runs that differ only in `seed` share a row: mean ± std)" if grouped else "")
        + f"; {len(left_out)} left out (below). Ranked by mean best top-1.",
        "",
        f"`best`: the evaluation with the highest top-1 (from {best_from}); "
        "`final`: the last evaluation (metrics.json). Each is one evaluation's figures.",
    ]
    if common:
        lines += ["", "Common to every row: `" + " ".join(common) + "`"]
    if optuna:
        lines += [
            "",
            f"Optuna's best trial (value {_fmt(optuna['value'])}): row {optuna['rank']}, marked ★.",
        ]
    header = ["#", *varying, "n", "best top-1 %", "best top-5 %", "best loss", "final top-1 %"]
    header += ["final loss", "train s", "images/s", "params", "GFLOPs", "lead > seed spread"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        values = dict((override_key(o), o.split("=", 1)[-1]) for o in g["setting"])
        mark = " ★" if g.get("optuna_best") else ""
        cells = [f"{g['rank']}{mark}", *(round_value(values.get(k)) for k in varying)]
        cells += [
            str(g["n"]),
            _mean_std(g, "best_top1"),
            _mean_std(g, "best_top5"),
            _mean_std(g, "best_loss", 4),
            _mean_std(g, "final_top1"),
            _mean_std(g, "final_loss", 4),
            _mean_std(g, "train_time_s", 1),
            _mean_std(g, "images_per_s", 0),
            _fmt(g["num_params"]),
            _fmt(g["gflops"], 3),
            _lead_cell(g),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _expected_section(groups, varying)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({path.name})" for title, path in plots.items()]
    if left_out:
        lines += ["", "## Runs left out", ""]
        lines += [f"- `{r.name}` ({r.status}): {r.reason}" for r in left_out]
    md.write_text("\n".join(lines) + "\n")
    return md, csv_path


def sweep_leaderboard(
    sweep: Path,
    *,
    rescore: bool,
    score: Callable[[Path], dict[str, Any]],
    group_seeds: bool = True,
    plots: bool = True,
    user_errors: tuple[type[Exception], ...] = (CheckpointError,),
) -> dict[str, Any]:
    """Everything `evaluate.py sweep=DIR` writes into DIR: leaderboard.md/.csv and the PNGs.
    Returns the rows, the runs left out, the files and the data each figure plots."""
    from .sweep_plots import sweep_plots

    rows, left_out = collect(sweep, rescore, score, user_errors)
    if not rows:
        first = left_out[0]
        raise CheckpointError(
            sweep,
            f"none of its {len(left_out)} runs has finished figures "
            f"(run {first.name}: {first.status}: {first.reason})",
        )
    groups = group_rows(rows, group_seeds)
    optuna = optuna_best(sweep, groups)
    figures, plotted = sweep_plots(groups, varying_keys(groups)[0], sweep) if plots else ({}, {})
    md, csv_path = write_leaderboard(
        groups,
        sweep,
        left_out,
        grouped=group_seeds,
        rescored=rescore,
        plots=figures,
        optuna=optuna,
    )
    return {
        "groups": groups,
        "left_out": left_out,
        "md": md,
        "csv": csv_path,
        "figures": figures,
        "plotted": plotted,
    }


def _lead_cell(g: dict[str, Any]) -> str:
    if g["lead"] is None:
        return "-"
    if g["lead_exceeds_spread"] is None:
        return f"+{g['lead']:.2f} (one seed: unknown)"
    return f"+{g['lead']:.2f} ({'yes' if g['lead_exceeds_spread'] else 'no'})"


def _expected_section(groups: list[dict[str, Any]], varying: list[str]) -> list[str]:
    rows = [g for g in groups if g["verdict"] is not None]
    if not rows:
        return []
    lines = [
        "",
        "## Expected versus achieved",
        "",
        "Achieved: the final validation top-1, mean ± std over seeds.",
        "",
        "| # | setting | expected top-1 % | achieved top-1 % | difference | tolerance | verdict | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in rows:
        values = dict((override_key(o), o.split("=", 1)[-1]) for o in g["setting"])
        setting = " ".join(f"{k}={round_value(values.get(k))}" for k in varying) or "all"
        lines.append(
            f"| {g['rank']} | {setting} | {g['expected_top1']:.2f} | {_mean_std(g, 'final_top1')} "
            f"| {g['difference']:+.2f} | ±{g['tolerance']:.2f} | **{g['verdict']}** | {g['source'] or '-'} |"
        )
    return lines
