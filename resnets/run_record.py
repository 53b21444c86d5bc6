"""Where Hydra writes a run's record (.hydra/: config.yaml, overrides.yaml, hydra.yaml).

Hydra writes the record before any of our code runs, so a second attempt in the same run
directory (a resume, or one that fails because its settings do not fit the checkpoint) would
overwrite the record of the run it tried to continue. conf/train.yaml sets
`hydra.output_subdir: ${resnets.record_dir:${hydra.runtime.output_dir}}`: the first attempt
writes `.hydra/`, every later one `.hydra/attempts/<date>_<time>/`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

RECORD = ".hydra"


def record_dir(output_dir: str) -> str:
    """`.hydra` for a directory's first run; a fresh `.hydra/attempts/<time>` afterwards."""
    if not (Path(output_dir) / RECORD / "overrides.yaml").exists():
        return RECORD
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    candidate, n = f"{RECORD}/attempts/{stamp}", 1
    while (Path(output_dir) / candidate).exists():  # two attempts within one second
        n += 1
        candidate = f"{RECORD}/attempts/{stamp}_{n}"
    return candidate


def record_files(root: Path) -> dict[Path, list[Path]]:
    """Every run directory under `root` with its attempts' overrides.yaml files (first first)."""
    runs: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("overrides.yaml")):
        if path.parent.name == RECORD:
            run = path.parent.parent
        elif path.parent.parent.name == "attempts" and path.parents[2].name == RECORD:
            run = path.parents[3]
        else:
            continue
        runs.setdefault(run, []).append(path)
    return runs


def register_record_resolver() -> None:
    # cached: Hydra reads output_subdir twice and both reads must name the same folder
    if not OmegaConf.has_resolver("resnets.record_dir"):
        OmegaConf.register_new_resolver("resnets.record_dir", record_dir, use_cache=True)


class RecordResolver(Callback):
    """Listed in conf/train.yaml's hydra.callbacks: a launcher that runs jobs in other processes
    (submitit on SLURM) unpickles it there, which imports this module and registers the resolver
    before the job's output_subdir is read."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        register_record_resolver()


register_record_resolver()
