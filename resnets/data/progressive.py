"""Progressive resizing: a training image size that grows with the epoch (FFCV's schedule).

`data.progressive.min_size` up to epoch `start_epoch`, `data.image_size` from `end_epoch` on, and
in between the linear interpolation rounded to a multiple of `multiple` and kept within the two
ends (ffcv-imagenet's `get_resolution`, with epochs counted from 0 as there). The size is a pure function of the epoch,
so a run resumed mid-schedule trains each epoch at the size an uninterrupted run would.

Every loader yields `data.image_size` batches (in memory, image folders, decoded on the GPU);
`for_epoch` wraps the epoch's loader so that its batches are resized, on the device they are on,
to the epoch's size (bilinear with antialiasing: the RandomResizedCrop at the full size followed by
a downscale). Validation keeps its own geometry (data.val_resize / data.val_crop).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .errors import DataError

log = logging.getLogger(__name__)


def training_size(
    epoch: int, *, min_size: int, max_size: int, start_epoch: int, end_epoch: int, multiple: int
) -> int:
    """The training image size of `epoch` (0-based), ffcv-imagenet's rule."""
    if epoch <= start_epoch:
        return min_size
    if epoch >= end_epoch:
        return max_size
    size = min_size + (max_size - min_size) * (epoch - start_epoch) / (end_epoch - start_epoch)
    # round half to even, as np.round does there; kept within the ends, which FFCV's sizes (160,
    # 192, multiples of 32) never leave but others (8 to 8 in multiples of 16: 0) would
    return min(max(round(size / multiple) * multiple, min_size), max_size)


def schedule(data_cfg: Mapping[str, Any]) -> dict[str, int] | None:
    """The keyword arguments of `training_size` for this data config; None when off."""
    p = data_cfg.get("progressive") or {}
    if p.get("min_size") is None:
        return None
    return {
        "min_size": int(p["min_size"]),
        "max_size": int(data_cfg["image_size"]),
        "start_epoch": int(p["start_epoch"]),
        "end_epoch": int(p["end_epoch"]),
        "multiple": int(p["multiple"]),
    }


def check(data_cfg: Mapping[str, Any]) -> None:
    """Refuse a schedule that cannot be followed, in one line, before any work."""
    plan = schedule(data_cfg)
    if plan is None:
        return
    if not 0 < plan["min_size"] <= plan["max_size"]:
        raise DataError(
            f"data.progressive.min_size={plan['min_size']} is not valid; accepted: null (off) or "
            f"a size in 1..data.image_size ({plan['max_size']}), the size it grows to"
        )
    if not 0 <= plan["start_epoch"] <= plan["end_epoch"]:
        raise DataError(
            f"data.progressive.end_epoch={plan['end_epoch']} is not valid with "
            f"data.progressive.start_epoch={plan['start_epoch']}; accepted: 0 <= start_epoch "
            "<= end_epoch"
        )
    if plan["multiple"] < 1:
        raise DataError(
            f"data.progressive.multiple={plan['multiple']} is not valid; accepted: a positive "
            "integer (FFCV: 32)"
        )


def sizes(data_cfg: Mapping[str, Any], epochs: int) -> list[int]:
    """The training size of each epoch 0 .. epochs-1."""
    plan = schedule(data_cfg)
    full = int(data_cfg["image_size"])
    return [training_size(e, **plan) if plan else full for e in range(epochs)]


class ResizedBatches:
    """A training loader whose image batches are resized to `size` (square)."""

    def __init__(self, loader: Any, size: int) -> None:
        self.loader, self.size = loader, size

    def set_epoch(self, *args: Any, **kwargs: Any) -> None:
        self.loader.set_epoch(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            if images.shape[-2:] != (self.size, self.size):
                images = F.interpolate(
                    images.float(), size=(self.size, self.size), mode="bilinear", antialias=True
                )
            yield images, labels

    def __getattr__(self, name: str) -> Any:  # the rest of the loader's interface
        return getattr(self.loader, name)


def for_epoch(loader: Any, data_cfg: Mapping[str, Any], epoch: int, epochs: int) -> Any:
    """The trainer's call at the start of an epoch: `loader` as it is, or resized to the epoch's
    size. Logs each size the first time it is used; with torch.compile each size is one more
    compiled graph, so the recompile limit is raised to the number of sizes in the schedule."""
    plan = schedule(data_cfg)
    if plan is None:
        return loader
    planned = sizes(data_cfg, max(epochs, epoch + 1))
    size = planned[epoch]
    if epoch == 0 or planned[epoch - 1] != size:
        distinct = sorted(set(planned))
        graphs = _allow_recompiles(len(distinct))
        log.info(
            "progressive resizing: training at %d px from epoch %d (sizes %s over %d epochs; "
            "with torch.compile, one compilation per size: %d graph(s) compiled so far)",
            size,
            epoch + 1,
            "/".join(map(str, distinct)),
            len(planned),
            graphs,
        )
    return loader if size == plan["max_size"] else ResizedBatches(loader, size)


def _allow_recompiles(count: int) -> int:
    """torch.compile keeps up to `recompile_limit` graphs per function; one per size (and one
    for a short last batch) must fit, or it would fall back to eager silently. Returns the
    graphs dynamo has compiled in this process so far (what the log reports)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    config = torch._dynamo.config
    needed = count + 2
    if config.recompile_limit < needed:
        log.info("torch._dynamo recompile_limit %d -> %d", config.recompile_limit, needed)
        config.recompile_limit = needed
    return int(counters["stats"]["unique_graphs"])
