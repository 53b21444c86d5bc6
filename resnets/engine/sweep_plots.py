"""PNG figures of a sweep's leaderboard: top-1 against cost with the Pareto front, and the
validation curves of every setting (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .rounding import round_value
from .sweep_weights import LABEL

FIGSIZE, DPI = (7.0, 5.0), 100  # 700 x 500 pixels
COSTS = (
    # file stem, x label (with unit), how to get x (mean, std) from a row
    ("top1_vs_params", "parameters (millions)", "num_params", 1e-6),
    ("top1_vs_gflops", "GFLOPs per image (forward pass)", "gflops", 1.0),
    ("top1_vs_train_time", "training time (s)", "train_time_s", 1.0),
)


def label_of(g: dict[str, Any], varying: list[str]) -> str:
    values = dict((o.split("=", 1)[0].lstrip("+~"), o.split("=", 1)[-1]) for o in g["setting"])
    return " ".join(f"{k}={round_value(values.get(k))}" for k in varying) or f"#{g['rank']}"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower cost, higher top-1),
    ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def cost_plot(
    groups: list[dict[str, Any]],
    varying: list[str],
    stem: str,
    xlabel: str,
    key: str,
    scale: float,
    path: Path,
) -> dict[str, Any] | None:
    """One scatter of mean best top-1 (error bars: seed std) against a cost; returns its data."""
    rows = [g for g in groups if g["best_top1_mean"] is not None and _cost(g, key) is not None]
    if not rows:
        return None
    xs = [_cost(g, key)[0] * scale for g in rows]
    xerr = clipped_bars(xs, [(_cost(g, key)[1] or 0.0) * scale for g in rows], 0.0, None)
    ys = [g["best_top1_mean"] for g in rows]
    yerr = clipped_bars(ys, [g["best_top1_std"] or 0.0 for g in rows], 0.0, 100.0)
    front = pareto_front(list(zip(xs, ys, strict=True)))
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.errorbar(
        xs,
        ys,
        xerr=xerr,
        yerr=yerr,
        fmt="o",
        capsize=3,
        label="setting (± seed std, clipped to 0-100 % and costs ≥ 0)",
    )
    ax.plot(
        [xs[i] for i in front],
        [ys[i] for i in front],
        "--",
        color="tab:red",
        marker="s",
        markerfacecolor="none",
        markersize=10,
        label="Pareto front",
    )
    for g, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(
            label_of(g, varying), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    ax.set(
        xlabel=xlabel,
        ylabel=f"best validation top-1 (%), {weights_of(rows)} weights",
        title=f"Top-1 against {xlabel.split(' (')[0]}",
    )
    ax.margins(x=0.2, y=0.1)  # room for the labels beside the outermost points
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return {
        "x": xs,
        "y": ys,
        "yerr": yerr,
        "front": front,
        "labels": [label_of(g, varying) for g in rows],
    }


def curves_plot(
    groups: list[dict[str, Any]], varying: list[str], path: Path
) -> dict[str, Any] | None:
    """Validation top-1 against epoch, one line per setting: the mean over its seeds at the
    evaluations they share, with the seeds' range shaded. Returns {label: (x, y)}."""
    lines = {}
    fig, ax = plt.subplots(figsize=FIGSIZE)
    unit = "epoch"
    for g in groups:
        curves = [c for c in g["curves"] if c.x]
        if not curves:
            continue
        unit = curves[0].unit
        length = min(len(c.x) for c in curves)
        x = np.array(curves[0].x[:length])
        ys = np.array([c.top1[:length] for c in curves])
        label = label_of(g, varying)
        (line,) = ax.plot(x, ys.mean(0), marker=".", label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
        lines[label] = (x.tolist(), ys.mean(0).tolist())
    if not lines:
        plt.close(fig)
        return None
    ax.set(
        xlabel=unit,
        ylabel=f"validation top-1 (%), {weights_of(groups)} weights",
        title="Validation top-1 during training",
    )
    if unit == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epoch 1, 2, never 1.2, 1.4
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return lines


def clipped_bars(
    centres: list[float], spreads: list[float], low: float | None, high: float | None
) -> list[list[float]]:
    """Asymmetric error bars [below, above] of ± spread that stop at the bounds of the quantity
    (a top-1 below 0 % or a negative cost cannot happen)."""
    below = [
        s if low is None else max(0.0, min(s, c - low))
        for c, s in zip(centres, spreads, strict=True)
    ]
    above = [
        s if high is None else max(0.0, min(s, high - c))
        for c, s in zip(centres, spreads, strict=True)
    ]
    return [below, above]


def weights_of(groups: list[dict[str, Any]]) -> str:
    """raw, EMA or "raw and EMA": the weights the figure's rows scored."""
    return " and ".join(LABEL.get(k, k) for k in sorted({g["weights"] for g in groups}))


def sweep_plots(
    groups: list[dict[str, Any]], varying: list[str], out: Path
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write every figure into `out`; returns {title: path} for the leaderboard and the data plotted."""
    paths, data = {}, {}
    for stem, xlabel, key, scale in COSTS:
        path = out / f"{stem}.png"
        plotted = cost_plot(groups, varying, stem, xlabel, key, scale, path)
        if plotted is not None:
            paths[f"top-1 against {xlabel}"], data[stem] = path, plotted
    path = out / "val_top1_curves.png"
    plotted = curves_plot(groups, varying, path)
    if plotted is not None:
        paths["validation top-1 against epoch"], data["val_top1_curves"] = path, plotted
    return paths, data


def _cost(g: dict[str, Any], key: str) -> tuple[float, float | None] | None:
    if f"{key}_mean" in g:
        mean = g[f"{key}_mean"]
        return None if mean is None else (mean, g[f"{key}_std"])
    value = g.get(key)
    return None if value is None else (float(value), None)
