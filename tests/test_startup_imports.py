"""train.py starts without the evaluation stack: no matplotlib at start (a faster start for every
sweep job, and a Ctrl-C in the first seconds never lands inside matplotlib's import)."""

from __future__ import annotations

import os
import subprocess
import sys

from .helpers import REPO

HEAVY = (
    "matplotlib",
    "resnets.engine.plots",
    "resnets.engine.evaluation",
    "resnets.engine.leaderboard",
)


def test_train_entry_path_does_not_import_matplotlib() -> None:
    # train.py's top level, then every module its main() imports before training starts
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='train_module')\n"
        "import resnets.engine.cli, resnets.engine.sweep, resnets.engine.trainer\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print('resnets.engine.trainer' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["[]", "True"], proc.stdout
