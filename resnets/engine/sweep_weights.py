"""Which weights of a sweep's run the leaderboard scores: by default the ones that chose best.pt
(`best_by`: the raw weights or their EMA), so its best top-1 is the run's own best_val_top1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import ConfigError
from .runs import Run

RAW, EMA = "raw", "ema"
WEIGHTS = (RAW, EMA)
LABEL = {RAW: "raw", EMA: "EMA"}


def best_by_of(run: Run, checkpoint: dict[str, Any] | None = None) -> str:
    """The weights that chose the run's best.pt: the checkpoint's own `best_by`; for a checkpoint
    written before it was stored (or none read), "ema" when the run had an EMA
    (trainer.ema_decay) and its metrics.json says best_by ema, else "raw"."""
    stored = checkpoint.get("best_by") if checkpoint is not None else None
    if stored in WEIGHTS:
        return stored
    trainer = run.config.get("trainer")
    ema_on = isinstance(trainer, dict) and bool(trainer.get("ema_decay"))
    return EMA if ema_on and run.metrics.get("best_by") == EMA else RAW


def forced_weights(use_ema: Any, overrides: Sequence[str]) -> str | None:
    """evaluate.py's `use_ema` for a sweep: None (each run's best_by) unless the command line
    sets it to true or false; `auto` (or no use_ema= at all) leaves the choice to each run."""
    given = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "use_ema"]
    if not given:
        return None
    text = str(use_ema).strip().lower()
    if text == "auto":
        return None
    if text in ("true", "false"):
        return EMA if text == "true" else RAW
    raise ConfigError(f"use_ema={use_ema!r} is not valid; accepted: auto, true, false")
