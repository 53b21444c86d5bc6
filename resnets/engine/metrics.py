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
