"""Classification metrics: streaming top-k counts for the trainer, full-logit reports for evaluate.py."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def topk_correct(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> list[int]:
    """How many samples have their target among the k highest logits, for each k (clipped to C)."""
    return [int(c) for c in topk_correct_tensor(logits, targets, ks)]


def topk_correct_tensor(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> torch.Tensor:
    """Like topk_correct but stays on the device (no synchronisation), one count per k."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(targets[:, None])
    return torch.stack([hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


def nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return F.cross_entropy(logits.float(), targets).item()


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> list[dict]:
    """Per-bin mean confidence, accuracy and count over equal-width confidence bins (lo, hi]:
    the data of a reliability diagram, and the one binning ECE is computed from."""
    confidence, predicted = probs.max(dim=1)
    correct = predicted.eq(targets).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # a confidence of exactly 0 cannot occur for a softmax
    index = torch.bucketize(confidence.double(), edges[1:-1], right=False)
    rows = []
    for b in range(bins):
        in_bin = index == b
        count = int(in_bin.sum())
        rows.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[in_bin].double().mean()) if count else None,
                "accuracy": float(correct[in_bin].mean()) if count else None,
            }
        )
    return rows


def calibration_error(rows: Sequence[dict]) -> float:
    """ECE of reliability_bins' rows: each bin's confidence-vs-accuracy gap, weighted by the
    fraction of samples in it."""
    total = sum(row["count"] for row in rows)
    ece = 0.0
    for row in rows:
        if row["count"]:
            ece += row["count"] / total * abs(row["confidence"] - row["accuracy"])
    return ece


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017) over `bins` equal-width confidence bins."""
    return calibration_error(reliability_bins(probs, targets, bins))


def confusion_matrix(
    predicted: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Rows are true classes, columns predicted classes (scikit-learn's convention)."""
    flat = targets.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_report(matrix: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    matrix = matrix.double()
    true_pos = matrix.diag()
    predicted = matrix.sum(dim=0)
    support = matrix.sum(dim=1)
    precision = torch.where(predicted > 0, true_pos / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, true_pos / support.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
    return [
        {
            "class": name,
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    ]


def most_confused(matrix: torch.Tensor, class_names: Sequence[str], top: int = 20) -> list[dict]:
    off = matrix.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(top, off.numel()))
    c = matrix.shape[0]
    return [
        {"true": class_names[i // c], "predicted": class_names[i % c], "count": int(v)}
        for v, i in zip(values.tolist(), flat.tolist(), strict=True)
        if v > 0
    ]


def classification_report(
    logits: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], bins: int = 15
) -> dict:
    """Every figure evaluate.py reports, from the full logits of a split."""
    logits = logits.float()
    probs = logits.softmax(dim=1)
    top1, top5 = topk_correct(logits, targets, (1, 5))
    n = len(targets)
    matrix = confusion_matrix(logits.argmax(dim=1), targets, len(class_names))
    per_class = per_class_report(matrix, class_names)
    # scikit-learn's macro average: the classes among the split's labels or the predictions; a
    # class that is neither (absent from this split) is listed apart, not counted as F1 0
    counted = (matrix.sum(dim=1) + matrix.sum(dim=0)) > 0
    present = [row for row, keep in zip(per_class, counted.tolist(), strict=True) if keep]
    absent = [row for row, keep in zip(per_class, counted.tolist(), strict=True) if not keep]
    reliability = reliability_bins(probs, targets, bins)  # the diagram's bins and ECE's
    return {
        "samples": n,
        "top1": 100 * top1 / n,
        "top5": 100 * top5 / n,
        "nll": nll(logits, targets),
        "ece": calibration_error(reliability),
        "macro_f1": sum(r["f1"] for r in present) / max(len(present), 1),
        "macro_precision": sum(r["precision"] for r in present) / max(len(present), 1),
        "macro_recall": sum(r["recall"] for r in present) / max(len(present), 1),
        "macro_classes": len(present),
        "per_class": present,
        "absent_classes": [{"class": r["class"], "support": 0} for r in absent],
        "reliability": reliability,
        "most_confused": most_confused(matrix, class_names),
        "confusion_matrix": matrix,
    }
