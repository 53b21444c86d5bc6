"""The leaderboard of a Hydra multirun sweep: runs of one setting (the same overrides, in any
order, but `seed`) grouped into one row (n, mean, standard deviation), ranked by mean best top-1,
each row's lead over the next tested with Welch's t-test, expected-versus-achieved verdicts,
Optuna's best trial marked, and the runs that failed or cannot be read listed apart.

Every figure of a run comes from one set of weights, the ones that chose its best.pt (`best_by`:
raw or EMA) unless evaluate.py's use_ema forces the other: `best_*` from the evaluation that
best.pt holds, `final_*` from the last one, the curve from every evaluation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointError, load_checkpoint
from .leaderboard_table import FIGURES, override_key, varying_keys, write_leaderboard
from .runs import BROKEN, FINISHED, Run, best_epoch_figures, find_run_dirs, read_curve, read_run
from .stats import welch_test
from .sweep_weights import EMA, RAW, best_by_of

__all__ = ["collect", "group_rows", "optuna_best", "sweep_leaderboard", "varying_keys"]

# score(best.pt, use_ema) -> evaluate.py's metrics of those weights
Score = Callable[[Path, bool], dict[str, Any]]


def setting_of(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that define a setting: all but the seed."""
    return tuple(o for o in overrides if override_key(o) != "seed")


def setting_key(overrides: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The setting as resolved key=value pairs: the same overrides in any order (or with `+`
    or `++`) are one setting."""
    return tuple(sorted((override_key(o), o.split("=", 1)[-1]) for o in setting_of(overrides)))


def _final(metrics: dict[str, Any], weights: str) -> dict[str, Any]:
    prefix = "val_ema" if weights == EMA else "val"
    return {f"final_{k}": metrics.get(f"{prefix}_{k}") for k in ("top1", "top5", "loss")}


def run_figures(
    run: Run, rescore: bool, score: Score, weights: str | None = None
) -> dict[str, Any]:
    """One finished run's figures, of `weights` (None: the ones that chose best.pt). rescore:
    best_* from evaluating best.pt (else metrics.json and the metrics history of the best evaluation);
    final_* from metrics.json."""
    m = run.metrics
    best_pt = run.path / "checkpoints" / "best.pt"
    rescoring = rescore and best_pt.exists()
    # a damaged best.pt fails here, with its name; only its best_by is needed from it
    chosen = weights or best_by_of(run, load_checkpoint(best_pt) if rescoring else None)
    data = run.config.get("data")
    row: dict[str, Any] = {
        "run": run.name,
        "overrides": list(run.overrides),
        "seed": run.seed,
        "weights": chosen,
        "data": data.get("name") if isinstance(data, dict) else None,
        **_final(m, chosen),
        "final_raw_top1": m.get("val_top1"),
        "final_ema_top1": m.get("val_ema_top1"),
        "best_epoch": m.get("best_epoch"),
        "train_time_s": m.get("train_time_s"),
        "images_per_s": m.get("images_per_s"),
        "num_params": m.get("num_params"),
        "gflops": m.get("gflops"),
        "expected": run.expected,
    }
    if rescoring:
        scored = score(best_pt, chosen == EMA)
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
    row["curve"] = read_curve(run, chosen)
    return row


def collect(
    sweep: Path,
    rescore: bool,
    score: Score,
    user_errors: tuple[type[Exception], ...] = (CheckpointError,),
    weights: str | None = None,
) -> tuple[list[dict[str, Any]], list[Run]]:
    """Figures of every finished run, and the runs left out (failed, unfinished, unreadable)."""
    rows, left_out = [], []
    for path in find_run_dirs(sweep):
        run = read_run(path, sweep)
        if run.status != FINISHED:
            left_out.append(run)
            continue
        try:
            rows.append(run_figures(run, rescore, score, weights))
        except user_errors as err:  # a damaged best.pt: list the run, score the others
            run.status, run.reason = BROKEN, " ".join(str(err).split())
            left_out.append(run)
    return rows, left_out


def _stats(values: list[Any]) -> tuple[float | None, float | None]:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(numbers) != len(values) or not numbers:
        return None, None  # a figure missing in one run has no honest mean
    return statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else None


def _group(members: list[dict[str, Any]], group_seeds: bool) -> dict[str, Any]:
    first = members[0]
    kinds = {r["weights"] for r in members}
    g: dict[str, Any] = {
        "setting": list(setting_of(first["overrides"]) if group_seeds else first["overrides"]),
        "overrides": [list(r["overrides"]) for r in members],  # every run's, in its own order
        "runs": [r["run"] for r in members],
        "seeds": [r["seed"] for r in members],
        "n": len(members),
        "weights": kinds.pop() if len(kinds) == 1 else "mixed",
        "data": sorted({str(r["data"]) for r in members}),
        "num_params": first["num_params"],
        "gflops": first["gflops"],
        "expected": first["expected"],
        "curves": [r["curve"] for r in members if r.get("curve")],
        "best_top1_values": [r["best_top1"] for r in members],
    }
    for name in FIGURES:
        g[f"{name}_mean"], g[f"{name}_std"] = _stats([r[name] for r in members])
    return g


def group_rows(rows: list[dict[str, Any]], group_seeds: bool = True) -> list[dict[str, Any]]:
    """One row per setting (or per run), ranked by mean best top-1; each row's lead over the
    next with Welch's t-test over their seeds."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        key = setting_key(row["overrides"]) if group_seeds else (row["run"],)
        groups.setdefault(key, []).append(row)
    out = [_group(members, group_seeds) for members in groups.values()]
    out.sort(key=lambda g: -math.inf if g["best_top1_mean"] is None else g["best_top1_mean"])
    out.reverse()
    for i, g in enumerate(out):
        g["rank"] = i + 1
        g["lead"], g["welch"] = None, None
        if i + 1 < len(out) and None not in (g["best_top1_mean"], out[i + 1]["best_top1_mean"]):
            nxt = out[i + 1]
            g["lead"] = g["best_top1_mean"] - nxt["best_top1_mean"]
            g["welch"] = welch_test(g["best_top1_values"], nxt["best_top1_values"])
        _verdict(g)
    return out


def _verdict(g: dict[str, Any]) -> None:
    """Expected versus achieved: the mean final top-1 of the weights the published figure is
    for (papers report the model at the end of training) within the tolerance passes; a run on
    other data than the figure's, or without those weights, is not compared (n/a)."""
    for k in ("expected_top1", "expected_weights", "achieved_top1", "achieved_std"):
        g[k] = None
    g["tolerance"] = g["difference"] = g["verdict"] = g["source"] = None
    expected = g["expected"]
    if not expected:
        return
    g["expected_top1"] = float(expected["top1"])
    g["tolerance"] = float(expected.get("tolerance") or 0.0)
    g["source"] = expected.get("source")
    weights = g["expected_weights"] = expected.get("weights") or RAW
    published_data = expected.get("data")
    if published_data and g["data"] != [str(published_data)]:
        g["verdict"] = f"n/a: data changed ({', '.join(g['data'])}; figure for {published_data})"
        return
    g["achieved_top1"] = g[f"final_{weights}_top1_mean"]
    g["achieved_std"] = g[f"final_{weights}_top1_std"]
    if g["achieved_top1"] is None:
        g["verdict"] = f"n/a: no final top-1 of the {weights} weights"
        return
    g["difference"] = g["achieved_top1"] - g["expected_top1"]
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
        values = dict(o.lstrip("+~").split("=", 1) for o in g["setting"] if "=" in o)
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


def sweep_leaderboard(
    sweep: Path,
    *,
    rescore: bool,
    score: Score,
    group_seeds: bool = True,
    plots: bool = True,
    user_errors: tuple[type[Exception], ...] = (CheckpointError,),
    weights: str | None = None,
) -> dict[str, Any]:
    """Everything `evaluate.py sweep=DIR` writes into DIR: leaderboard.md/.csv and the PNGs.
    weights: "raw" or "ema" for every run (None: each run's best_by). Returns the rows, the
    runs left out, the files and the data each figure plots."""
    from .sweep_plots import sweep_plots

    rows, left_out = collect(sweep, rescore, score, user_errors, weights)
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
        forced=weights,
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
