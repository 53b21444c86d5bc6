"""The training criterion named by `trainer.loss`: cross-entropy, or binary cross-entropy as in
"ResNet strikes back" (Wightman et al. 2021), both with label smoothing and MixUp/CutMix targets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class BinaryCrossEntropy(nn.Module):
    """One sigmoid per class (timm.loss.BinaryCrossEntropy's semantics).

    Targets are class indices or mixed one-hot rows (MixUp/CutMix). Smoothing maps a target row
    y to y (1 - s) + s / C (timm: 1 - s + s/C on the class, s/C elsewhere, mixed linearly); with
    `target_threshold` every entry above it becomes 1 and the rest 0 (RSB's option). The loss is
    the mean over images and classes, or with `sum_classes` the sum over classes, mean over images.
    """

    def __init__(
        self,
        smoothing: float = 0.0,
        target_threshold: float | None = None,
        sum_classes: bool = False,
    ) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.target_threshold = target_threshold
        self.sum_classes = sum_classes

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[-1]
        if targets.shape != logits.shape:  # class indices
            targets = F.one_hot(targets.long(), num_classes)
        targets = targets.to(logits.dtype)
        if self.smoothing:
            targets = targets * (1 - self.smoothing) + self.smoothing / num_classes
        if self.target_threshold is not None:
            targets = (targets > self.target_threshold).to(logits.dtype)
        if self.sum_classes:
            losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            return losses.sum(-1).mean()
        return F.binary_cross_entropy_with_logits(logits, targets)


def _cross_entropy(t: Mapping[str, Any]) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=t["label_smoothing"])


def _binary_cross_entropy(t: Mapping[str, Any]) -> nn.Module:
    return BinaryCrossEntropy(
        smoothing=t["label_smoothing"],
        target_threshold=t.get("bce_target_threshold"),
        sum_classes=bool(t.get("bce_sum_classes", False)),
    )


# trainer.loss -> factory(trainer config); the one list: validation and messages read its keys
LOSSES: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "ce": _cross_entropy,
    "bce": _binary_cross_entropy,
}


def build_criterion(t: Mapping[str, Any]) -> nn.Module:
    """The training loss of a `trainer` config node."""
    return LOSSES[t.get("loss", "ce")](t)
