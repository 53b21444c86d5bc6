"""What stops a run: stop signals agreed between ranks, and non-finite losses or weights.

Every rank calls these at the same step, so all ranks stop together with the same message."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as D
from .continue_hint import continue_command
from .signals import StopRequest

log = logging.getLogger("resnets.engine.trainer")


class NonFiniteLossError(RuntimeError):
    pass


class TrainingInterrupted(SystemExit):
    """Raised after last.pt is written on SIGINT/SIGTERM; the exit status is 128 + signal."""


def agree_to_stop(trainer: Any, at_sync_point: bool) -> bool:
    """One process stops when signalled; ranks all-reduce the signal numbers at sync points,
    so a stop or save signal that reached any rank acts on every rank at the same step."""
    stop: StopRequest = trainer.stop
    if not trainer.dist.distributed:
        return stop.requested
    if not at_sync_point:
        return False
    # one collective for both: a stop (which saves anyway) outranks a save-only signal
    both = D.all_reduce_max(
        int(stop.signum or 0) * 256 + int(stop.save_signum or 0), trainer.dist.device
    )
    signum, save_signum = divmod(both, 256)
    if signum:
        stop.signum = stop.signum or signum
    elif save_signum:
        stop.save_signum = stop.save_signum or save_signum
    return bool(signum)


def save_if_signalled(trainer: Any, stopping: bool, at_sync_point: bool, loss_sum) -> None:
    """Under submitit, SIGTERM announces a preemption: save last.pt, and go on."""
    stop: StopRequest = trainer.stop
    agreed = at_sync_point or not trainer.dist.distributed  # the ranks just compared notes
    if stop.save_signum is None or stopping or not agreed:
        return
    check_finite(trainer, loss_sum, f"by step {trainer.step}")  # never save a diverged run
    trainer.save("last.pt")
    log.warning(
        "signal %d: last.pt written at step %d; training goes on until the preemption signal",
        stop.save_signum,
        trainer.step,
    )
    stop.save_signum = None


def stop_and_exit(trainer: Any) -> None:
    """After a stop signal: save last.pt, say how to continue, and exit with 128 + signal."""
    stop: StopRequest = trainer.stop
    trainer.save("last.pt")
    log.warning(stop_message(int(stop.signum), trainer.step, trainer.out))
    stop.hand_over()  # under submitit: requeue the job (exits here on rank 0)
    raise TrainingInterrupted(128 + int(stop.signum))


def check_finite(trainer: Any, loss_sum: torch.Tensor, where: str) -> None:
    """The sum over ranks is non-finite when any rank's is. Under the fp16 scaler a non-finite
    loss is a skipped step, not a failure."""
    if trainer.scaler is not None:
        return
    loss_sum = D.all_reduce_sum(loss_sum.detach().clone())
    if not torch.isfinite(loss_sum).item():
        raise NonFiniteLossError(
            non_finite_message(trainer, "training loss became", loss_sum.item(), where)
        )


def check_finite_state(trainer: Any, module: nn.Module, what: str) -> None:
    """Weights and buffers are finite, or the run stops before saving them."""
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = tensor[~torch.isfinite(tensor)].flatten()[0].item()
            raise NonFiniteLossError(
                non_finite_message(
                    trainer, f"{what} ({key}) became", bad, f"by step {trainer.step}"
                )
            )


def non_finite_message(trainer: Any, what: str, value: float, where: str) -> str:
    return (
        f"{what} {value} {where} (model {trainer.cfg.model.name}, "
        f"lr {trainer.optimizer.param_groups[0]['lr']:.3g}); stopping without saving. "
        "Lower optim.lr, set trainer.grad_clip, or use trainer.precision=32."
    )


def stop_message(signum: int, step: int, out: Path) -> str:
    """What stopped the run and the command that continues it."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    what = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else f"{name} (signal {signum})"
    return (
        f"stopped by {what} at step {step}; last.pt written. To continue, {continue_command(out)}"
    )
