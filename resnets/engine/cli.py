"""evaluate.py's job: pick checkpoint, weights or sweep mode, and turn bad input into exit status 2."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from ..config import ConfigError
from ..data import DataError
from ..models import ModelError
from . import distributed as D
from .checkpoint import CheckpointError
from .evaluation import evaluate_run, format_table
from .leaderboard import leaderboard_rows, write_leaderboard

log = logging.getLogger(__name__)
USER_ERRORS = (CheckpointError, ConfigError, DataError, ModelError)


def run_evaluate(cfg: DictConfig) -> float | None:
    """Returns top-1 (checkpoint/weights mode) or the best top-1 of the sweep."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    root = Path(hydra_cfg.runtime.output_dir)
    try:
        if cfg.sweep:
            sweep = Path(cfg.sweep)
            rows = leaderboard_rows(
                sweep,
                bool(cfg.rescore),
                lambda best: evaluate_run(_for_checkpoint(cfg, best), overrides, root),
            )
            md, csv_path = write_leaderboard(rows, sweep)
            print(md.read_text())
            print(f"leaderboard: {md} and {csv_path}")
            return rows[0]["top1"] if rows else None
        metrics = evaluate_run(cfg, overrides, root)
    except USER_ERRORS as err:
        # one line, no traceback: the message names the file or field and what is wrong
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        D.cleanup()  # under torchrun: destroy the process group
    print(format_table(metrics))
    return metrics["top1"]


def _for_checkpoint(cfg: DictConfig, ckpt: Path) -> DictConfig:
    copy = cfg.copy()
    copy.ckpt, copy.sweep, copy.output_dir = str(ckpt), None, None
    return copy
