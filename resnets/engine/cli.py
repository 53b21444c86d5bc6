"""evaluate.py's job: pick checkpoint, weights or sweep mode, and turn bad input into exit status 2."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from ..config import ConfigError
from ..data import DataError
from ..models import ModelError
from ..refused_run import check_before_start, discard_fresh_run_dir
from . import distributed as D
from .checkpoint import CheckpointError
from .continue_hint import in_sweep
from .run_lock import RunDirBusy, hold_run_dir

log = logging.getLogger(__name__)
USER_ERRORS = (CheckpointError, ConfigError, DataError, ModelError)
SEARCH_GROUPS = ("hparams_search", "reproduce")  # config groups that only make sense with -m


def run_train(cfg: DictConfig) -> float | None:
    """train.py's job: one run (bad input: one line, exit 2), or one job of a multirun sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .sweep import run_job
    from .trainer import NonFiniteLossError

    hydra_cfg = HydraConfig.get()
    # the engine never reads Hydra's global state: the run directory and overrides go in here
    output_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # a job's failure is recorded in its run directory and the sweep goes on
        with in_sweep(hydra_cfg.sweep.dir):  # Ctrl-C's advice: the -m command, this sweep dir
            return run_job(
                cfg,
                functools.partial(_locked_train, output_dir=output_dir, overrides=overrides),
                output_dir,
                overrides,
                raise_on_failure=hydra_cfg.runtime.choices.get("hydra/sweeper") != "basic",
            )
    try:
        for group in SEARCH_GROUPS:
            if hydra_cfg.runtime.choices.get(group):
                choice = hydra_cfg.runtime.choices[group]
                raise ConfigError(
                    f"{group}={choice} is a sweep and needs -m: python train.py -m {group}={choice} "
                    "(without -m it would train once with the defaults)"
                )
        check_before_start(cfg)
        return _locked_train(cfg, output_dir, overrides)
    except (*USER_ERRORS, NonFiniteLossError, RunDirBusy) as err:
        # bad input or a diverged run: one line naming the field or file, no traceback
        print(f"error: {err}", file=sys.stderr)
        discard_fresh_run_dir(output_dir)  # a refused run leaves no folder (a diverged one does)
        sys.exit(2)


def _locked_train(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> float | None:
    from .trainer import train

    with hold_run_dir(output_dir):  # one live run per run directory (run_lock.py)
        return train(cfg, output_dir, overrides)


def run_evaluate(cfg: DictConfig) -> float | None:
    """Returns top-1 (checkpoint/weights mode) or the best top-1 of the sweep."""
    from hydra.core.hydra_config import HydraConfig

    from .evaluation import check_eval_precision, evaluate_run, format_table

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    root = Path(hydra_cfg.runtime.output_dir)
    try:
        check_eval_precision(cfg, overrides)
        if cfg.sweep:
            return _sweep_leaderboard(cfg, overrides, root)
        metrics = evaluate_run(cfg, overrides, root)
    except USER_ERRORS as err:
        # one line, no traceback: the message names the file or field and what is wrong
        print(f"error: {err}", file=sys.stderr)
        discard_fresh_run_dir(root)
        sys.exit(2)
    finally:
        D.cleanup()  # under torchrun: destroy the process group
    print(format_table(metrics))
    return metrics["top1"]


def _sweep_leaderboard(cfg: DictConfig, overrides: list[str], root: Path) -> float | None:
    """sweep=DIR: leaderboard.md/.csv and plots in DIR; unreadable runs are listed, not fatal."""
    from .evaluation import evaluate_run
    from .leaderboard import sweep_leaderboard
    from .sweep_weights import forced_weights

    weights = forced_weights(cfg.use_ema, overrides)
    if weights is not None and not cfg.rescore:
        raise ConfigError(
            f"use_ema={cfg.use_ema} with sweep= needs rescore=true: without re-scoring, each "
            "run's figures are those of the weights its best_by names (leave use_ema out)"
        )
    board = sweep_leaderboard(
        Path(cfg.sweep),
        rescore=bool(cfg.rescore),
        score=lambda best, ema: evaluate_run(_for_checkpoint(cfg, best, ema), overrides, root),
        group_seeds=bool(cfg.group_seeds),
        plots=bool(cfg.plots),
        user_errors=USER_ERRORS,
        weights=weights,
    )
    for run in board["left_out"]:
        print(f"warning: run {run.name} left out ({run.status}): {run.reason}", file=sys.stderr)
    print(board["md"].read_text())
    print(f"leaderboard: {board['md']} and {board['csv']}")
    return board["groups"][0]["best_top1_mean"]


def _for_checkpoint(cfg: DictConfig, ckpt: Path, ema: bool) -> DictConfig:
    """evaluate.py's settings for one run's best.pt; use_ema as text, which both a boolean
    and an auto|true|false field accept."""
    copy = cfg.copy()
    copy.ckpt, copy.sweep, copy.output_dir = str(ckpt), None, None
    copy.use_ema = "true" if ema else "false"
    return copy
