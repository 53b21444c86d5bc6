"""The life of one job in a Hydra multirun: skip it if it finished, resume it, or record its failure.

Hydra's sweepers stop a whole sweep when a job raises (the basic sweeper after its batch, Optuna
unless `max_failure_rate` allows it) and a `sys.exit` inside a job ends the process at once. So
every job of a sweep goes through `run_job`: a failure is written to the job's `metrics.json`
(`status: failed` and the reason) and the sweep goes on. `SweepReport`, a Hydra callback, counts
the jobs of this invocation that did not finish; train.py exits with that count.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

FINISHED, FAILED = "finished", "failed"
MAX_EXIT_STATUS = 100  # exit statuses are one byte; 126+ mean "not run" to shells
_last_sweep_failures = 0


class SweepJobFailed(RuntimeError):
    """Raised to sweepers that keep score (Optuna): the trial is marked failed, never scored."""


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json as a dict, or None when there is none or it cannot be read."""
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def is_finished(metrics: dict[str, Any] | None) -> bool:
    # metrics.json written before `status` existed is only ever written by a finished run
    if not metrics:
        return False
    return metrics.get("status", FINISHED if "best_val_top1" in metrics else None) == FINISHED


def run_job(
    cfg: DictConfig,
    train_fn: Callable[[DictConfig], float],
    output_dir: Path,
    overrides: Sequence[str],
    raise_on_failure: bool = False,
) -> float | None:
    """Run one sweep job; returns the best top-1, the stored one for a finished run, or None.

    `raise_on_failure`: raise SweepJobFailed after recording (for sweepers that score trials);
    otherwise a failed job returns None, which the basic sweeper ignores.
    """
    overrides = list(overrides)
    name = f"job {output_dir.name} ({' '.join(overrides) or 'no overrides'})"
    stored = read_status(output_dir)
    if is_finished(stored):
        if list(stored.get("overrides", overrides)) != overrides:
            reason = (
                f"{output_dir} holds a finished run with other overrides "
                f"({' '.join(stored['overrides'])}); refusing to touch it: "
                "use another hydra.sweep.dir for a different sweep"
            )
            log.error("%s failed: %s", name, reason)
            if raise_on_failure:
                raise SweepJobFailed(reason)
            return None
        log.info(
            "%s: skipped, finished before (best val top-1 %.2f%%); checkpoints untouched",
            name,
            stored["best_val_top1"],
        )
        return float(stored["best_val_top1"])
    last = output_dir / "checkpoints" / "last.pt"
    if last.exists() and cfg.get("resume", True):
        log.info("%s: resuming from %s", name, last)
    else:
        log.info("%s: starting", name)
    try:
        return train_fn(cfg)
    except Exception as err:  # any job's failure is recorded, the sweep goes on
        reason = " ".join(str(err).split()) or type(err).__name__
        record_failure(output_dir, overrides, err)
        log.error("%s failed: %s: %s (recorded in metrics.json)", name, type(err).__name__, reason)
        if raise_on_failure:
            raise SweepJobFailed(reason) from err
        return None


def record_failure(output_dir: Path, overrides: Sequence[str], err: BaseException) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "status": FAILED,
        "reason": " ".join(str(err).split()) or type(err).__name__,
        "error": type(err).__name__,
        "overrides": list(overrides),
        "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    # the traceback helps whoever debugs it; the record above stays one line
    with open(output_dir / "failure.log", "w") as f:
        f.write("".join(traceback.format_exception(err)))


def jobs_since(sweep_dir: Path, started: float) -> list[Path]:
    """Run directories Hydra set up at or after `started`: a job's first attempt writes
    .hydra/overrides.yaml, a later one (a resumed job) .hydra/attempts/<time>/overrides.yaml."""
    from ..run_record import record_files

    return sorted(
        run
        for run, files in record_files(sweep_dir).items()
        if any(p.stat().st_mtime >= started for p in files)
    )


def unfinished(run_dir: Path) -> str | None:
    """Why this job did not finish, or None when it did (a finished metrics.json for its overrides)."""
    import yaml

    metrics = read_status(run_dir)
    if metrics is None:
        return "no metrics.json (the job died before recording anything)"
    if metrics.get("status") == FAILED:
        return str(metrics.get("reason"))
    if not is_finished(metrics):
        return f"metrics.json has status {metrics.get('status')!r}"
    try:
        ours = list(yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or [])
    except (OSError, yaml.YAMLError):
        return None
    if "overrides" in metrics and list(metrics["overrides"]) != ours:
        return "holds a finished run with other overrides (refused)"
    return None


class SweepReport(Callback):
    """Hydra callback (conf/train.yaml hydra.callbacks): after a multirun, log which jobs failed
    and remember how many, for train.py's exit status. Works for any launcher: it reads the
    run directories, not the launcher's return values."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _last_sweep_failures
        _last_sweep_failures = 0
        self.started = time.time() - 1.0  # file times may be rounded down to the second

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last_sweep_failures
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = jobs_since(sweep_dir, self.started)
        failed = [(job, why) for job in jobs if (why := unfinished(job)) is not None]
        _last_sweep_failures = len(failed)
        if failed:
            log.error("sweep %s: %d of %d jobs failed:", sweep_dir, len(failed), len(jobs))
            for job, why in failed:
                log.error("  %s: %s", job, why)
        else:
            log.info("sweep %s: all %d jobs finished", sweep_dir, len(jobs))


def exit_status() -> int:
    """The number of failed jobs of the multirun that just ended (0 after a single run)."""
    return min(_last_sweep_failures, MAX_EXIT_STATUS)
