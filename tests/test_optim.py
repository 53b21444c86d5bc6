"""Parameter groups and per-iteration schedules, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from resnets.config import OptimConfig, SchedConfig
from resnets.models import build_model
from resnets.optim import build_optimizer, build_scheduler


def test_no_weight_decay_on_norms_and_biases() -> None:
    model = build_model("resnet20", num_classes=10)
    opt = build_optimizer(model, OmegaConf.structured(OptimConfig(weight_decay=5e-4)))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    bn_and_bias = {id(p) for n, p in model.named_parameters() if "bn" in n or n.endswith("bias")}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _lrs(sched_cfg, steps_per_epoch=10, epochs=10, lr=0.1) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = build_scheduler(
        opt, OmegaConf.structured(sched_cfg), steps_per_epoch=steps_per_epoch, epochs=epochs, lr=lr
    )
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_linear_warmup() -> None:
    lrs = _lrs(SchedConfig(name="cosine", warmup_epochs=1, warmup_start_factor=0.1))
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[5] == pytest.approx(0.01 + 0.09 * 5 / 10)
    # after 10 warm-up steps, cosine over the remaining 90
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.1 * (1 + math.cos(math.pi * 45 / 90)) / 2)


def test_multistep_milestones_in_epochs() -> None:
    lrs = _lrs(SchedConfig(name="multistep", milestones=[3, 6], gamma=0.1))
    assert (
        lrs[29] == pytest.approx(0.1)
        and lrs[30] == pytest.approx(0.01)
        and lrs[60] == pytest.approx(0.001)
    )


def test_onecycle_peaks_at_pct_start() -> None:
    lrs = _lrs(SchedConfig(name="onecycle", pct_start=0.25))
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) in (24, 25)
    assert lrs[0] == pytest.approx(0.1 / 25)
