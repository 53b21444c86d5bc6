"""Which weights of a checkpoint a report scores: `use_ema=auto|true|false`.

`auto` (the default of evaluate.py, export.py and predict.py) scores the weights whose validation
top-1 chose best.pt: the checkpoint's `best_by`. Checkpoints written before `best_by` was stored
are read as the trainer ran them: `ema` when the run kept an EMA (trainer.ema_decay set and an
`ema` state saved) unless its config said trainer.best_by=raw, `raw` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config import ConfigError

USE_EMA = ("auto", "true", "false")


@dataclass(frozen=True)
class ScoredWeights:
    ema: bool  # score the checkpoint's EMA weights
    why: str  # "use_ema=auto: the checkpoint's best_by=ema", ...

    @property
    def label(self) -> str:
        return "ema" if self.ema else "raw"

    def describe(self) -> str:
        """'EMA weights (use_ema=auto: ...)': the line every report prints."""
        return f"{'EMA' if self.ema else 'raw'} weights ({self.why})"


def parse_use_ema(value: Any) -> str:
    """auto | true | false (Hydra gives true/false as booleans)."""
    text = str(value).lower()
    if text not in USE_EMA:
        raise ConfigError(f"use_ema={value!r} is not valid; accepted: {', '.join(USE_EMA)}")
    return text


def stored_best_by(state: dict[str, Any]) -> str:
    """The checkpoint's `best_by`, or for an older checkpoint what its trainer used."""
    if state.get("best_by") in ("raw", "ema"):
        return str(state["best_by"])
    config = OmegaConf.create(state["config"])
    has_ema = state.get("ema") is not None and bool(
        OmegaConf.select(config, "trainer.ema_decay", default=None)
    )
    configured = OmegaConf.select(config, "trainer.best_by", default=None)
    if configured == "raw" or not has_ema:
        return "raw"
    return "ema"


def choose_weights(use_ema: Any, state: dict[str, Any] | None, path: Path | str) -> ScoredWeights:
    """The weights to score; `true` where the file has no EMA is a one-line ConfigError."""
    wanted = parse_use_ema(use_ema)
    has_ema = state is not None and state.get("ema") is not None
    if wanted == "true":
        if not has_ema:
            what = "has no EMA weights (trainer.ema_decay was off)" if state else "is no checkpoint"
            raise ConfigError(
                f"use_ema=true but {path} {what}; accepted here: use_ema=auto or use_ema=false"
            )
        return ScoredWeights(True, "use_ema=true")
    if wanted == "false" or state is None:
        return ScoredWeights(False, f"use_ema={wanted}")
    best_by = stored_best_by(state)
    return ScoredWeights(best_by == "ema", f"use_ema=auto: the checkpoint's best_by={best_by}")
