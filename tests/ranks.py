"""Run the trainer on several gloo processes from a test, without torchrun: each rank is a spawned
process that joins a file-store process group and calls `train` as train.py would."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world_size: int, store: str, overrides: list[str], run_dir: str) -> None:
    from resnets.engine.trainer import train

    from .helpers import compose_train

    torch.set_num_threads(1)  # the same kernels, and so the same rounding, as the one process
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    dist.init_process_group(
        "gloo", store=dist.FileStore(store, world_size), rank=rank, world_size=world_size
    )
    try:
        train(compose_train(overrides), run_dir)
    finally:
        if dist.is_initialized():  # train() destroys the group itself when it ends
            dist.destroy_process_group()


def train_on_ranks(world_size: int, overrides: list[str], run_dir: Path) -> None:
    """`train(overrides)` on `world_size` gloo processes; an exception in any rank is raised."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store = run_dir.parent / f".store-{run_dir.name}-{os.getpid()}"
    store.unlink(missing_ok=True)
    try:
        mp.spawn(
            _rank_main,
            args=(world_size, str(store), list(overrides), str(run_dir)),
            nprocs=world_size,
            join=True,
        )
    finally:
        store.unlink(missing_ok=True)
