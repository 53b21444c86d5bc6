"""Does this machine have what the config asks for? The one place that answers it.

The trainer and evaluate.py call `check_runtime` before any data or model is built, so a CUDA-only
setting on a machine without CUDA ends with one line (ConfigError, exit status 2), never a
traceback from deep inside torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch

from .config import ConfigError

log = logging.getLogger(__name__)

GPU_PRESETS = "trainer=gpu and the GPU experiments (cifar10_fast, imagenet_*) set it"


@dataclass(frozen=True)
class Precision:
    """How a precision runs: the autocast dtype (None: plain fp32) and what it needs."""

    autocast_dtype: torch.dtype | None
    needs_cuda: bool = False
    grad_scaler: bool = False  # fp16 gradients underflow without loss scaling


# trainer.precision / evaluate.py's precision -> how it runs. The one list of precisions: config
# validation, the CPU check, autocast and the trainer's gradient scaler all read it.
PRECISIONS: dict[str, Precision] = {
    "32": Precision(None),
    "bf16-mixed": Precision(torch.bfloat16),
    "16-mixed": Precision(torch.float16, needs_cuda=True, grad_scaler=True),
}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context for `precision` (a PRECISIONS key)."""
    dtype = PRECISIONS[precision].autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_device(requested: str, cuda_available: bool) -> str:
    """The device type a run will use: 'cuda' or 'cpu'."""
    return "cuda" if requested in ("cuda", "auto") and cuda_available else "cpu"


def check_runtime(
    trainer: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    *,
    precision: str | None = None,
    precision_field: str = "trainer.precision",
    cuda_available: bool | None = None,
    world_size: int | None = None,
    model: Mapping[str, Any] | None = None,
    upsamples: bool = False,
) -> str:
    """Refuse what needs CUDA on a machine without it; returns the device type the run will use.

    `precision` overrides `trainer.precision` (evaluate.py has its own top-level field);
    `cuda_available` and `world_size` default to this process's view. `model` (a training run's
    model node) and `upsamples` (whether that network upsamples bilinearly: the caller asks
    resnets.models.presets.upsamples, so this module imports no model) add the checks of what
    CUDA cannot do with it.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    requested = str(trainer.get("device", "auto"))
    if requested == "cuda" and not cuda:
        raise ConfigError(
            f"trainer.device='cuda' but this machine has no CUDA device ({GPU_PRESETS}); "
            "accepted here: auto, cpu (e.g. add trainer=cpu or trainer.device=auto)"
        )
    device = resolve_device(requested, cuda)
    if device == "cuda":
        _check_cuda_training(trainer, model, upsamples)
        return device
    precision = str(trainer.get("precision", "32")) if precision is None else str(precision)
    if precision in PRECISIONS and PRECISIONS[precision].needs_cuda:
        on_cpu = [name for name, p in PRECISIONS.items() if not p.needs_cuda]
        raise ConfigError(
            f"{precision_field}={precision!r} needs CUDA; accepted on CPU: {', '.join(on_cpu)}"
        )
    if trainer.get("compile") and str(trainer.get("compile_mode", "default")) == "reduce-overhead":
        raise ConfigError(
            "trainer.compile_mode='reduce-overhead' replays CUDA graphs and needs CUDA; "
            "accepted on CPU: default, max-autotune"
        )
    if trainer.get("sync_batchnorm") and world_size > 1:
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA (NCCL); accepted on CPU: false")
    if data is not None and data.get("gpu_decode"):
        raise ConfigError("data.gpu_decode=true needs a CUDA device; accepted on CPU: false")
    return device


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def _check_cuda_training(
    trainer: Mapping[str, Any], model: Mapping[str, Any] | None, upsamples: bool
) -> None:
    """Combinations that fail only on CUDA, refused before any work with the choice to make."""
    mode = str(trainer.get("compile_mode", "default"))
    accumulate = int(trainer.get("accumulate_grad_batches", 1))
    # compile null means the device default, which is on for CUDA
    if trainer.get("compile") is not False and mode in CUDA_GRAPH_MODES and accumulate > 1:
        # CUDA graph replays reuse their output memory: the next micro-batch's backward
        # overwrites the .grad being accumulated (a known torch.compile limitation)
        raise ConfigError(
            f"trainer.compile_mode={mode!r} replays CUDA graphs, which overwrite the gradients "
            f"that trainer.accumulate_grad_batches={accumulate} accumulates; accepted together: "
            "compile_mode=default, or accumulate_grad_batches=1 (a larger trainer.batch_size)"
        )
    if upsamples and trainer.get("deterministic"):
        name = str(model.get("name")) if model is not None else "(this network)"
        raise ConfigError(
            f"trainer.deterministic=true cannot train model={name} on CUDA: its bilinear "
            "upsampling has no deterministic CUDA backward; accepted: "
            "trainer.deterministic=false (fast, not bit-reproducible) or trainer.device=cpu"
        )


# The settings a run leaves to its device (precision `auto`, channels_last / compile null).
# CPU: fp32 (bf16 autocast is slower than fp32 on these CPUs), channels_last (about 1.3x faster
# convolutions here). CUDA: bf16 autocast (fp16 with a scaler before Ampere), channels_last for
# the tensor cores, torch.compile.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"precision": "32", "channels_last": True, "compile": False},
    "cuda": {"precision": "bf16-mixed", "channels_last": True, "compile": True},
}


def apply_device_defaults(
    trainer: MutableMapping[str, Any], device: str, *, bf16_supported: bool | None = None
) -> dict[str, Any]:
    """Fill the settings left to the device in place; returns what was chosen (logged once)."""
    defaults = dict(DEVICE_DEFAULTS[device])
    if device == "cuda":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        if not bf16_supported:
            defaults["precision"] = "16-mixed"
    chosen = {k: v for k, v in defaults.items() if trainer.get(k) in (None, "auto")}
    for field, value in chosen.items():
        trainer[field] = value
    if chosen:
        settings = ", ".join(f"{k}={v}" for k, v in chosen.items())
        log.info(
            "device %s: %s (the defaults for %s; set trainer.<field> to choose)",
            device,
            settings,
            device,
        )
    return chosen


def cpu_channels_last_hazard(model: torch.nn.Module) -> str | None:
    """The first layer that torch's CPU kernels cannot train in channels_last, or None.

    On torch 2.14 (CPU) the backward pass of a strided 1x1 convolution with 2 to 6 input channels
    in channels_last corrupts the heap (the process dies with "corrupted double-linked list");
    NCHW is fine, and so are 1 or 7+ channels. Only toy widths (model.base_channels < 7) have one.
    """
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Conv2d)
            and module.kernel_size == (1, 1)
            and module.stride != (1, 1)
            and 2 <= module.in_channels <= 6
        ):
            return name
    return None


def check_channels_last(
    trainer: MutableMapping[str, Any], model: torch.nn.Module, device: str, defaulted: bool
) -> None:
    """Keep a CPU run out of the channels_last kernel bug above: a default falls back to NCHW
    (logged and recorded), an explicit trainer.channels_last=true is refused in one line."""
    if device != "cpu" or not trainer.get("channels_last"):
        return
    layer = cpu_channels_last_hazard(model)
    if layer is None:
        return
    reason = (
        f"torch's CPU backward of {layer} (a strided 1x1 convolution with 2-6 input channels) "
        "corrupts memory in channels_last"
    )
    if not defaulted:
        raise ConfigError(f"trainer.channels_last=true: {reason}; accepted here: false")
    trainer["channels_last"] = False
    log.warning("channels_last off: %s", reason)
