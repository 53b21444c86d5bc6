"""Process-group glue: who am I, which device, and the few collectives the loop needs.

One process (plain `python train.py`) needs none of it and every helper is a no-op then.
Under torchrun the rendezvous comes from its environment; inside a SLURM job of several tasks
(submitit), from SLURM's, through submitit's helper.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "trainer.device='cuda' but no CUDA device is visible; accepted here: auto, cpu"
        )
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _export_slurm_env() -> None:
    """Inside `srun` with several tasks and no torchrun, derive the torch env from SLURM's."""
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_distributed(trainer_cfg: Mapping[str, Any]) -> DistInfo:
    _export_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(str(trainer_cfg.get("device", "auto")), local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = str(trainer_cfg.get("dist_backend", "auto"))
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, info: DistInfo, sync_batchnorm: bool) -> nn.Module:
    if not info.distributed:
        return model
    if sync_batchnorm:
        if info.device.type != "cuda":
            raise ValueError(
                "trainer.sync_batchnorm=true needs CUDA (NCCL); accepted on CPU: false"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def no_sync_if(model: nn.Module, cond: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on accumulation micro-batches that do not step."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper has no no_sync
    if cond and isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics drift apart between DDP's
    forward-time broadcasts), so all ranks evaluate the weights that rank 0 checkpoints."""
    if dist.is_available() and dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=src)


def all_reduce_max(value: int, device: torch.device) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return int(box.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-item list for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
