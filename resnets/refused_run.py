"""A refused run leaves nothing behind: no run directory of its own, no log line before the error.

Hydra creates the run directory (with `.hydra/` and the job's log file) before any of our code
runs, so a run refused for bad input would leave `outputs/<name>/<time>/` holding a record of a
run that never happened. `FreshRunDir` (a Hydra callback listed in the entry points' configs)
notes, before Hydra creates it, whether the run directory already existed; on refusal
`discard_fresh_run_dir` removes it only when this attempt created it and it holds nothing but
Hydra's record and log files, so a directory being resumed, or one where training wrote
anything, is never touched.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

HYDRA_ONLY = {".hydra"}  # besides the job's *.log files (and the run lock train.py took)
# run directory -> the outermost folder Hydra will create for it (outputs/<name>/ on a first run)
_created_by_this_attempt: dict[Path, Path] = {}


class FreshRunDir(Callback):
    """Notes whether a single run's directory is new (sweeps record their failures instead)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = OmegaConf.select(config, "hydra.run.dir")
        if run_dir is None or Path(str(run_dir)).exists():
            return
        new = Path(str(run_dir)).resolve()
        outermost = new
        while not outermost.parent.exists():
            outermost = outermost.parent
        _created_by_this_attempt[new] = outermost


def discard_fresh_run_dir(output_dir: str | Path) -> bool:
    """Remove `output_dir` if this attempt created it and it holds only Hydra's record and logs;
    returns whether it did."""
    run_dir = Path(output_dir).resolve()
    if run_dir not in _created_by_this_attempt or not run_dir.is_dir():
        return False
    # here, not at the top: predict.py's ONNX path runs without resnets.engine importable
    from .engine.run_lock import HEARTBEAT_NAME, LOCK_NAME

    ours = HYDRA_ONLY | {LOCK_NAME, HEARTBEAT_NAME}
    if any(p.name not in ours and p.suffix != ".log" for p in run_dir.iterdir()):
        return False
    for handler in logging.getLogger().handlers[:]:
        # the job's log file lives in the directory: close it first
        if Path(getattr(handler, "baseFilename", "/")).resolve().is_relative_to(run_dir):
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(run_dir, ignore_errors=True)
    outermost = _created_by_this_attempt.pop(run_dir)
    folder = run_dir.parent
    while folder != outermost.parent and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # the empty parents this attempt created (outputs/<name>/)
        folder = folder.parent
    return True


def check_before_start(cfg: DictConfig) -> None:
    """The config checks that need no data: bad values stop before the first log line."""
    from .models.registry import check_model_fields
    from .validation import validate

    validate(cfg)
    check_model_fields(cfg.model)
