"""LAMB and LARS (timm.optim, the `timm` extra): the update rules computed independently from the
papers' formulas with plain tensors, the no-decay groups, and the one-line refusal without timm."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from resnets.config import ConfigError, OptimConfig
from resnets.optim import OPTIMIZERS, build_optimizer, check_installed

from .helpers import compose_train


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))


def _grads(model: nn.Module, step: int) -> list[torch.Tensor]:
    """Fixed gradients per step; step 1's are large so that LAMB's global-norm clip acts."""
    g = torch.Generator().manual_seed(100 + step)
    scale = 5.0 if step == 1 else 0.3
    return [torch.randn(p.shape, generator=g) * scale for p in model.parameters()]


def _run(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        for p, g in zip(model.parameters(), _grads(model, step), strict=True):
            p.grad = g.clone()
        opt.step()


def _lamb_reference(model: nn.Module, steps: int, lr, wd, betas, eps, max_norm=1.0):
    """You et al. 2019, Algorithm 2 with Adam's bias correction, as timm states it: the gradients
    divided by max(1, global norm / max_norm); m, v the Adam moments; r = m_hat / (sqrt(v_hat) +
    eps) + wd w; w -= lr * (||w|| / ||r||) r, the trust ratio 1 where weight decay is 0."""
    b1, b2 = betas
    ws = [p.detach().clone() for p in model.parameters()]
    decays = [wd if p.ndim > 1 else 0.0 for p in ws]  # no decay on norm and bias
    m = [torch.zeros_like(w) for w in ws]
    v = [torch.zeros_like(w) for w in ws]
    for t in range(1, steps + 1):
        grads = _grads(model, t - 1)
        total = torch.sqrt(sum((g**2).sum() for g in grads))
        clip = max(1.0, float(total) / max_norm)
        for i, (w, g) in enumerate(zip(ws, grads, strict=True)):
            g = g / clip
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            r = m_hat / (v_hat.sqrt() + eps) + decays[i] * w
            ratio = 1.0
            if decays[i]:
                ratio = float(w.norm() / r.norm())
            ws[i] = w - lr * ratio * r
    return ws


def test_lamb_follows_the_reference_update_rule_for_three_steps() -> None:
    model = _model()
    cfg = OmegaConf.structured(
        OptimConfig(name="lamb", lr=5e-3, weight_decay=0.02, eps=1e-6, betas=[0.9, 0.999])
    )
    expected = _lamb_reference(model, 3, lr=5e-3, wd=0.02, betas=(0.9, 0.999), eps=1e-6)
    opt = build_optimizer(model, cfg)
    assert type(opt).__module__.startswith("timm.optim")
    _run(model, opt, 3)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-7)
    # the rule moved every tensor: a no-op optimizer would not pass the comparison above
    assert all(
        not torch.equal(p.detach(), w) for p, w in zip(_model().parameters(), expected, strict=True)
    )


def test_lars_follows_the_reference_update_rule_for_three_steps() -> None:
    """You et al. 2017 as timm/apex LARC state it: local lr = trust_coeff ||w|| / (||g|| +
    wd ||w|| + eps), the step (g + wd w) x local lr into SGD momentum; untouched where wd is 0."""
    model = _model()
    lr, wd, mom, coeff, eps = 0.5, 1e-4, 0.9, 0.001, 1e-8
    ws = [p.detach().clone() for p in model.parameters()]
    bufs: list[torch.Tensor | None] = [None] * len(ws)
    for t in range(3):
        for i, g in enumerate(_grads(model, t)):
            decay = wd if ws[i].ndim > 1 else 0.0
            if decay:
                w_norm, g_norm = ws[i].norm(), g.norm()
                g = (g + decay * ws[i]) * (coeff * w_norm / (g_norm + decay * w_norm + eps))
            bufs[i] = g.clone() if bufs[i] is None else mom * bufs[i] + g
            ws[i] = ws[i] - lr * bufs[i]
    cfg = OmegaConf.structured(
        OptimConfig(name="lars", lr=lr, momentum=mom, weight_decay=wd, trust_coeff=coeff, eps=eps)
    )
    opt = build_optimizer(model, cfg)
    _run(model, opt, 3)
    for got, want in zip(model.parameters(), ws, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_no_weight_decay_on_norms_and_biases(name) -> None:
    model = _model()
    opt = build_optimizer(model, OmegaConf.structured(OptimConfig(name=name, weight_decay=0.05)))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in model.parameters() if p.ndim == 1}


@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_the_optim_configs_compose_and_are_listed(name) -> None:
    cfg = compose_train([f"optim={name}"])
    assert cfg.optim.name == name and name in OPTIMIZERS
    assert cfg.optim.no_decay_norm_bias is True


def test_without_timm_one_line_names_the_extra(monkeypatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "timm" else 1)
    with pytest.raises(ConfigError) as err:
        check_installed("lamb")
    assert str(err.value) == (
        "optim.name='lamb' needs timm, which is not installed; run: pip install 'resnets[timm]'"
    )
    check_installed("sgd")  # the built-in optimizers need nothing


def test_train_without_timm_exits_2_before_any_work(monkeypatch, tmp_path, capsys) -> None:
    from resnets.engine.trainer import Trainer

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "timm" else 1)
    cfg = compose_train(["optim=lars"])
    with pytest.raises(ConfigError, match=r"resnets\[timm\]"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
