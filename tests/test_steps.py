"""The shared step and evaluation loop (resnets/engine/steps.py) against plain PyTorch."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets.engine.loop import optimizer_step
from resnets.engine.steps import (
    Inference,
    TrainTally,
    collect_logits,
    evaluate_model,
    forward_backward,
)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # BatchNorm: eval mode must be used (running statistics), or the figures change per batch
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 6, 7)
    )


def batches(n: int, batch: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 6, 8, generator=gen)
    labels = torch.randint(0, 7, (n,), generator=gen)
    return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("batch", [1, 7, 50, 64])  # one image, not dividing, all, more than all
def test_one_loop_gives_the_trainers_and_the_reports_figures(batch: int) -> None:
    net, loader, cpu = tiny_net(), batches(50, batch), torch.device("cpu")
    net.train()
    images = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    with torch.no_grad():
        expected = net.eval()(images)
    net.train()
    logits, got_labels, per_s = collect_logits(net, loader, cpu, "32", "none", False)
    assert not net.training and per_s > 0
    assert torch.equal(got_labels, labels) and torch.allclose(logits, expected, atol=1e-6)
    figures = evaluate_model(net, loader, cpu, "32", channels_last=True)
    assert figures["n"] == 50
    assert figures["loss"] == pytest.approx(F.cross_entropy(expected, labels).item(), rel=1e-5)
    top5 = expected.topk(5, 1).indices.eq(labels[:, None]).any(1).float().mean().item()
    assert figures["top1"] == pytest.approx(100 * (expected.argmax(1) == labels).float().mean())
    assert figures["top5"] == pytest.approx(100 * top5)


def test_flip_averages_the_mirror_images_logits() -> None:
    net, loader = tiny_net(), batches(9, 4)
    flipped = list(Inference(net, loader, torch.device("cpu"), "32", tta="flip"))
    with torch.no_grad():
        for (images, _), (logits, _) in zip(loader, flipped, strict=True):
            mean = (net(images) + net(images.flip(3))) / 2
            assert torch.allclose(logits, mean, atol=1e-6)
    assert not torch.allclose(flipped[0][0], net(loader[0][0]).detach(), atol=1e-3)


def test_bf16_inference_gives_float32_logits_close_to_fp32() -> None:
    net, loader, cpu = tiny_net(), batches(16, 8), torch.device("cpu")
    exact, _, _ = collect_logits(net, loader, cpu, "32", "none", False)
    half, _, _ = collect_logits(net, loader, cpu, "bf16-mixed", "none", False)
    assert half.dtype == torch.float32 and not torch.equal(half, exact)
    assert torch.allclose(half, exact, atol=0.1)


def test_accumulated_micro_batches_give_the_whole_batchs_gradient() -> None:
    def net() -> nn.Module:  # no BatchNorm: its statistics would differ per micro-batch
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(96, 7))

    images, labels = batches(12, 12)[0]
    criterion, parts, whole = nn.CrossEntropyLoss(), net(), net()
    tally = TrainTally(torch.device("cpu"))
    for i in range(0, 12, 4):  # three equal micro-batches of one step
        logits, loss = forward_backward(
            parts, images[i : i + 4], labels[i : i + 4], criterion,
            precision="32", scaler=None, accumulate=3, sync=contextlib.nullcontext(),
        )  # fmt: skip
        tally.add(loss, logits, labels[i : i + 4], skip_non_finite=False)
    out = whole(images)
    criterion(out, labels).backward()
    for p, q in zip(parts.parameters(), whole.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    assert tally.end_step() == 12 and tally.end_step() == 0 and tally.seen == 12
    loss, top1 = tally.means()
    assert loss == pytest.approx(F.cross_entropy(out, labels).item(), rel=1e-5)
    assert top1 == pytest.approx(100 * (out.argmax(1) == labels).float().mean().item())


def test_a_non_finite_loss_counts_as_zero_only_under_the_scaler() -> None:
    logits, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    skipped, counted = TrainTally(torch.device("cpu")), TrainTally(torch.device("cpu"))
    skipped.add(torch.tensor(float("nan")), logits, labels, skip_non_finite=True)
    counted.add(torch.tensor(float("nan")), logits, labels, skip_non_finite=False)
    assert skipped.means() == (0.0, 100.0)
    assert torch.isnan(counted.sums[0])


def test_optimizer_step_reports_the_norm_before_clipping_and_clips() -> None:
    net = nn.Linear(3, 1, bias=False)
    net.weight.grad = torch.tensor([[3.0, 4.0, 0.0]])  # norm 5
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    trainer = SimpleNamespace(
        model=net,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=None,
        ema=None,
        step=0,
        cfg=SimpleNamespace(trainer=SimpleNamespace(grad_clip=1.0)),
    )
    before = net.weight.detach().clone()
    norm = optimizer_step(trainer, log_now=False)
    assert norm == pytest.approx(5.0)
    # the step used the clipped gradient (norm 1), then the schedule halved the rate
    assert torch.allclose(before - net.weight.detach(), torch.tensor([[0.6, 0.8, 0.0]]))
    assert net.weight.grad is None and optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    trainer.cfg.trainer.grad_clip = None
    net.weight.grad = torch.tensor([[0.0, 0.0, 2.0]])
    assert optimizer_step(trainer, log_now=True) == pytest.approx(2.0)
    net.weight.grad = torch.tensor([[0.0, 0.0, 2.0]])
    assert optimizer_step(trainer, log_now=False) is None
