"""Which weights choose best.pt ("raw" or "ema"), and what a resume does when that changes.

A best top-1 is only ever compared with top-1s of the same weights. Every checkpoint records
`best_by`, the weights whose validation top-1 chose best.pt. On a resume:
- `trainer.best_by` set explicitly: those weights choose;
- otherwise the stored choice is kept while this run still evaluates those weights (raw always,
  the EMA while trainer.ema_decay is set), so switching the EMA on keeps choosing by the raw
  weights; switching it off under `ema` falls back to raw;
- when the choosing weights change, the stored best (a top-1 of the other weights) is not
  compared with: the best starts afresh and the next validation writes best.pt.
Each case is logged; metrics.json's best_by is then true to best.pt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

NAMES = {"raw": "raw", "ema": "EMA"}


def default_best_by(configured: str | None, has_ema: bool) -> str:
    """A new run's choice: trainer.best_by, or the EMA's weights when there is an EMA."""
    return configured or ("ema" if has_ema else "raw")


def stored_best_by(state: Mapping[str, Any]) -> str:
    """The weights that chose the checkpoint's best; for checkpoints written before it was
    recorded, what their own config chose by."""
    if state.get("best_by") in NAMES:
        return state["best_by"]
    cfg = OmegaConf.create(state.get("config") or "{}")
    has_ema = bool(OmegaConf.select(cfg, "trainer.ema_decay", default=None))
    return default_best_by(OmegaConf.select(cfg, "trainer.best_by", default=None), has_ema)


def resume_best(
    state: Mapping[str, Any], configured: str | None, has_ema: bool
) -> tuple[str, float, int]:
    """(best_by, best top-1, best epoch) for a run resuming from `state`, logged."""
    before = stored_best_by(state)
    best, epoch = float(state.get("best", -1.0)), int(state.get("best_epoch", -1))
    had_ema = state.get("ema") is not None
    if configured:
        chosen, why = configured, f"trainer.best_by={configured}"
    elif before == "ema" and not has_ema:
        chosen, why = "raw", "trainer.ema_decay is off now"
    else:
        chosen, why = before, ""
    if chosen != before:
        if best >= 0:
            log.warning(
                "best.pt was chosen by the %s weights' top-1 (%.2f%%, epoch %d); this run "
                "chooses by the %s weights' (%s), which are not compared with it: the best "
                "starts afresh and the next validation writes best.pt",
                NAMES[before],
                best,
                epoch,
                NAMES[chosen],
                why,
            )
        return chosen, -1.0, -1
    if has_ema != had_ema:
        log.warning(
            "the EMA is switched %s at this resume; best.pt is still chosen by the %s weights' top-1, as "
            "before%s",
            "on" if has_ema else "off",
            NAMES[chosen],
            " (trainer.best_by=ema chooses by the EMA's; the best then starts afresh)"
            if has_ema and chosen == "raw"
            else "",
        )
    return chosen, best, epoch
