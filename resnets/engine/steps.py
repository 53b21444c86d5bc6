"""What the trainer and evaluate.py both do to a batch: one training step, one evaluation loop.

`Inference` is the one evaluation loop: the trainer sums loss and top-k over it
(`evaluate_model`), evaluate.py keeps every logit for its report (`collect_logits`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..runtime import autocast
from . import distributed as D
from .metrics import topk_correct_tensor


# ----------------------------------------------------------------------------- training
def forward_backward(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    precision: str,
    scaler: torch.amp.GradScaler | None,
    accumulate: int,
    sync: contextlib.AbstractContextManager,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss and backward of one micro-batch; returns (logits, mean loss).

    The gradient is that of loss / `accumulate`, so `accumulate` equal micro-batches add up to
    the step's mean; `sync` is DDP's no_sync when this is not the step's last micro-batch."""
    with sync, autocast(images.device, precision):
        logits = forward(images)
        loss = criterion(logits.float(), targets)
    (scaler.scale(loss / accumulate) if scaler else loss / accumulate).backward()
    return logits, loss


class TrainTally:
    """An epoch's running train figures, kept on the device so no batch waits for a sync, and
    the image counts the log and the position in the epoch need."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, n
        self.start = self.window_start = time.perf_counter()
        self.batches = self.seen = self.window_images = self.step_images = 0

    def add(
        self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, skip_non_finite: bool
    ) -> None:
        """One micro-batch. `skip_non_finite`: under the fp16 scaler a non-finite loss is a
        skipped step, not a failure, so it counts as 0."""
        loss = loss.detach()
        batch_loss = torch.where(torch.isfinite(loss), loss, 0.0) if skip_non_finite else loss
        n = labels.numel()
        self.sums[0] += batch_loss * n
        self.sums[1] += (logits.detach().argmax(1) == labels).sum()
        self.sums[2] += n
        self.batches += 1
        self.seen += n
        self.window_images += n
        self.step_images += n

    def end_step(self) -> int:
        """The images of the step just taken (this rank's)."""
        images, self.step_images = self.step_images, 0
        return images

    def means(self) -> tuple[float, float]:
        """(mean loss, top-1 %) so far this epoch on this rank; synchronises with the device."""
        n = max(self.sums[2].item(), 1)
        return self.sums[0].item() / n, 100 * self.sums[1].item() / n

    def window(self) -> tuple[int, float]:
        """Images and seconds since the last new_window(): the throughput of the log interval."""
        return self.window_images, time.perf_counter() - self.window_start

    def new_window(self) -> None:
        self.window_start, self.window_images = time.perf_counter(), 0

    def reduced(self) -> dict[str, float]:
        """The epoch's loss and top-1 over every rank's samples."""
        totals = D.all_reduce_sum(self.sums.clone())
        samples = max(totals[2].item(), 1)
        return {"loss": totals[0].item() / samples, "top1": 100 * totals[1].item() / samples}


# ----------------------------------------------------------------------------- evaluation
class Inference:
    """The one evaluation loop: iterating yields (float32 logits, labels) of each batch on
    `device`, the model in eval mode without gradients. `tta="flip"` averages the logits with
    those of the mirrored images. `seconds` adds up the forward passes' time (synchronised on
    CUDA), loading excluded."""

    def __init__(
        self,
        model: nn.Module,
        loader: Iterable,
        device: torch.device,
        precision: str,
        *,
        channels_last: bool = False,
        tta: str = "none",
    ) -> None:
        self.model, self.loader, self.device, self.precision = model, loader, device, precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.tta, self.seconds = tta, 0.0

    @torch.no_grad()
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.model.eval()
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True).contiguous(
                memory_format=self.memory_format
            )
            labels = labels.to(self.device, non_blocking=True)
            start = time.perf_counter()
            with autocast(self.device, self.precision):
                logits = self.model(images).float()
                if self.tta == "flip":  # average with the mirror image's logits
                    logits = (logits + self.model(images.flip(3)).float()) / 2
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - start
            yield logits, labels


@torch.no_grad()
def evaluate_model(
    model: nn.Module, loader, device: torch.device, precision: str, channels_last: bool = False
) -> dict[str, float]:
    """Loss, top-1 and top-5 over the loader; sums are all-reduced so each sample counts once."""
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, n
    for logits, labels in Inference(model, loader, device, precision, channels_last=channels_last):
        totals[0] += F.cross_entropy(logits, labels, reduction="sum")
        totals[1:3] += topk_correct_tensor(logits, labels, (1, 5)).double()
        totals[3] += labels.numel()
    loss_sum, top1, top5, n = D.all_reduce_sum(totals).tolist()
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n, "n": int(n)}


@torch.no_grad()
def collect_logits(
    model: nn.Module, loader, device: torch.device, precision: str, tta: str, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """All logits and labels of the loader (every rank's shard, gathered), and images/s."""
    batches = Inference(model, loader, device, precision, channels_last=channels_last, tta=tta)
    logits, labels = [], []
    for out, targets in batches:
        logits.append(out.cpu())
        labels.append(targets.cpu())
    local = (torch.cat(logits), torch.cat(labels))
    n_local = len(local[1])
    if dist.is_available() and dist.is_initialized():
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        local = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    return local[0], local[1], n_local / max(batches.seconds, 1e-9)
