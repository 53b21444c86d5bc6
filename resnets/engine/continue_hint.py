"""The command that continues a stopped run, as the stop message gives it.

A single run continues with the same command and its run directory; a sweep's job continues with
the same `-m` command and the sweep directory, so finished jobs are skipped and this one resumes
(a `hydra.run.dir=` of one job would rerun it alone, outside the sweep).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

_sweep_dir: contextvars.ContextVar[str | None] = contextvars.ContextVar("sweep_dir", default=None)


@contextlib.contextmanager
def in_sweep(sweep_dir: str | Path) -> Iterator[None]:
    """While a sweep's job trains: its stop message names the sweep directory."""
    token = _sweep_dir.set(str(sweep_dir))
    try:
        yield
    finally:
        _sweep_dir.reset(token)


def continue_command(run_dir: str | Path) -> str:
    sweep_dir = _sweep_dir.get()
    if sweep_dir is not None:
        return (
            f"run the same -m command with hydra.sweep.dir={sweep_dir} "
            "(finished jobs are skipped, this one resumes)"
        )
    return f"run the same command with hydra.run.dir={run_dir}"
