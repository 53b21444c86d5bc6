"""Exponential moving average of the weights, updated without host-device traffic.

`AveragedModel.update_parameters` reads its step counter (a CPU tensor) on the host and copies it
to the device every update: one synchronising copy a step on CUDA. This subclass keeps the same
state dict (`n_averaged` plus `module.*`, so checkpoints and evaluate.py read it unchanged) and
updates with `torch.optim.swa_utils.get_ema_multi_avg_fn`'s one foreach lerp, the counter staying
on the host.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay_per_update(decay: float, every: int) -> float:
    """The decay of one update made every `every` steps, for a per-step `decay`.

    torchvision's reference script updates every k steps with alpha = (1 - decay) * k, the first-
    order form of this; decay**k keeps the averaging horizon exactly (and never reaches 0)."""
    return decay**every


class EMA(AveragedModel):
    """EMA of parameters and floating-point buffers (batch-norm statistics); integer buffers
    (`num_batches_tracked`) are copied. Update with `update_parameters(model)` every `every` steps.
    """

    def __init__(self, model: nn.Module, decay: float, every: int = 1) -> None:
        super().__init__(model, use_buffers=True)  # n_averaged stays on the host
        self.decay, self.every = decay, every
        self._lerp = get_ema_multi_avg_fn(ema_decay_per_update(decay, every))

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ours = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        if int(self.n_averaged) == 0:  # a host read: no device sync
            for a, b in zip(ours, theirs, strict=True):
                a.copy_(b)
        else:
            floats = [(a, b) for a, b in zip(ours, theirs, strict=True) if a.is_floating_point()]
            if floats:
                self._lerp([a for a, _ in floats], [b for _, b in floats], None)
            for a, b in zip(ours, theirs, strict=True):
                if not a.is_floating_point():
                    a.copy_(b)
        self.n_averaged += 1
