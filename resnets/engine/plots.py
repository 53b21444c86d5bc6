"""PNG figures of an evaluation: reliability diagram and confusion matrix (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

MAX_CLASSES_SHOWN = 30


def reliability_diagram(bins: list[dict], ece: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    ax.bar(centers, accuracy, width=width, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability (ECE {100 * ece:.2f}%)",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_figure(matrix: torch.Tensor, class_names: Sequence[str], path: Path) -> list[str]:
    """The whole matrix for up to 30 classes; otherwise the 30 classes with the most errors.

    Returns the class names shown, so the report can say what the picture covers.
    """
    matrix = matrix.double()
    shown = list(range(len(class_names)))
    if len(shown) > MAX_CLASSES_SHOWN:
        errors = matrix.sum(1) + matrix.sum(0) - 2 * matrix.diag()
        shown = sorted(errors.topk(MAX_CLASSES_SHOWN).indices.tolist())
    sub = matrix[shown][:, shown]
    rates = sub / sub.sum(1, keepdim=True).clamp(min=1)  # row-normalised: recall on the diagonal
    size = max(5, 0.35 * len(shown) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    names = [class_names[i] for i in shown]
    ax.set_xticks(range(len(shown)), names, rotation=90)
    ax.set_yticks(range(len(shown)), names)
    if len(shown) <= 12:
        for i in range(len(shown)):
            for j in range(len(shown)):
                ax.text(
                    j,
                    i,
                    int(sub[i, j]),
                    ha="center",
                    va="center",
                    color="white" if rates[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    title = (
        "Confusion matrix (rows: true)"
        if len(shown) == len(class_names)
        else f"Confusion among the {len(shown)} most-confused of {len(class_names)} classes"
    )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return names
