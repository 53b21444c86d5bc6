"""The learning rate follows training progress in images: a run resumed with another batch size
continues the uninterrupted run's curve (issue 23's figures), and raising trainer.epochs at a
resume spreads what is left of the curve over what is left of the run."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_pre_hook

from resnets.config import SchedConfig
from resnets.engine.trainer import train
from resnets.optim import build_scheduler

from .helpers import compose_train
from .test_training_correctness import FAST

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rates_taken(run_dir, *overrides: str) -> list[float]:
    """The learning rate of every optimizer step the run takes, read as the step is taken."""
    rates: list[float] = []
    hook = register_optimizer_step_pre_hook(lambda opt, *a: rates.append(opt.param_groups[0]["lr"]))
    try:
        train(compose_train([*FAST, "optim.base_batch_size=null", *overrides]), run_dir)
    finally:
        hook.remove()
    return rates


def straight_rates(sched: dict, steps_per_epoch: int, epochs: int) -> list[float]:
    """An uninterrupted run's rates, step by step (lr 0.1, one group), and last the rate where
    the run ends (the next epoch's start of every image in the last epoch's dropped tail)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    cfg = OmegaConf.merge(OmegaConf.structured(SchedConfig), sched)
    scheduler = build_scheduler(opt, cfg, steps_per_epoch=steps_per_epoch, epochs=epochs, lr=0.1)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return [*out, opt.param_groups[0]["lr"]]


def test_step_decays_stay_at_their_epochs_when_resumed_with_another_batch(tmp_path) -> None:
    """Issue 23: step_size=1, 80 images, stopped at step 15 with batch 8 (half-way through
    epoch 2), resumed with batch 4. The rest of epoch 2 stays at 0.01 and epoch 3 is at 0.001
    (it went back to 0.1 and reached 0.001 only 60 images into epoch 3)."""
    common = ["data.fake_size=80", "sched=step", "sched.step_size=1", "trainer.epochs=3"]
    first = rates_taken(tmp_path, *common, "trainer.batch_size=8", "trainer.max_steps=15")
    assert first == pytest.approx([0.1] * 10 + [0.01] * 5)
    resumed = rates_taken(tmp_path, *common, "trainer.batch_size=4")
    # 40 images left of epoch 2 in steps of 4, then epoch 3's 80
    assert resumed == pytest.approx([0.01] * 10 + [0.001] * 20)


ISSUE_SCHEDULES = {
    # issue 23's figures at step 10 of 28 (7 steps of 128 an epoch): before -> after resuming
    "cosine": ({"name": "cosine"}, 0.0717),  # it jumped to 0.0901
    "linear warm-up": ({"name": "constant", "warmup_epochs": 2}, 0.0743),  # to 0.0574
    "one-cycle": ({"name": "onecycle", "pct_start": 0.3}, 0.0957),  # to 0.0837
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ISSUE_SCHEDULES))
def test_resume_with_half_the_batch_continues_the_curve(tmp_path, name) -> None:
    """1,000 images, 4 epochs, stopped at step 10 with batch 128 (3 steps into epoch 2),
    resumed with batch 64. The first resumed step has the uninterrupted run's rate at that
    image; every later one lies within one uninterrupted step's change of the rate at its image;
    each epoch starts at the uninterrupted run's rate for that epoch's start."""
    sched, figure = ISSUE_SCHEDULES[name]
    overrides = [f"sched.{k}={v}" for k, v in sched.items()]
    straight = straight_rates(sched, steps_per_epoch=7, epochs=4)  # 1000 // 128 = 7
    common = ["data.fake_size=1000", *overrides, "trainer.epochs=4"]
    first = rates_taken(tmp_path, *common, "trainer.batch_size=128", "trainer.max_steps=10")
    assert first == pytest.approx(straight[:10], rel=1e-12)
    resumed = rates_taken(tmp_path, *common, "trainer.batch_size=64")
    assert straight[10] == pytest.approx(figure, abs=5e-5)
    assert resumed[0] == pytest.approx(straight[10], rel=1e-12)
    # image positions of the resumed steps: 384 + 64 i in epoch 2 (9 steps), then 15 an epoch
    positions = [(1, 384 + 64 * i) for i in range(9)]
    positions += [(e, 64 * j) for e in (2, 3) for j in range(15)]
    assert len(resumed) == len(positions)
    for rate, (epoch, image) in zip(resumed, positions, strict=True):
        j = epoch * 7 + min(image // 128, 6)  # the uninterrupted step that takes this image
        near = straight[max(j - 1, 0) : j + 2]
        assert min(near) - 1e-12 <= rate <= max(near) + 1e-12, (epoch, image, rate, near)
        if image == 0:
            assert rate == pytest.approx(straight[epoch * 7], rel=1e-12)


def test_raising_epochs_at_a_resume_stretches_the_rest_of_the_curve(tmp_path, caplog) -> None:
    """Cosine over 2 epochs, stopped at step 3 of 20 (epoch 0.3), resumed with 4 epochs: the
    rate goes on from where it was, what was left of the cosine (0.3 to 2 of its epochs) is
    spread over epochs 0.3 to 4, it reaches 0 at the new end, and the log says so."""
    common = ["sched=cosine", "data.fake_size=40"]
    first = rates_taken(tmp_path, *common, "trainer.epochs=2", "trainer.max_steps=3")
    caplog.set_level(logging.INFO)
    resumed = rates_taken(tmp_path, *common, "trainer.epochs=4")
    assert (
        "trainer.epochs 2 -> 4 at epoch 0.3: the rest of the schedule (its epochs 0.3 to 2) "
        "is spread over epochs 0.3 to 4" in caplog.text
    )
    assert len(first) == 3 and len(resumed) == 37  # 40 images, batch 4: 10 steps an epoch

    def cosine(v: float) -> float:  # the 2-epoch curve at its epoch v
        return 0.05 * (1 + math.cos(math.pi * v / 2))

    assert first == pytest.approx([cosine(k / 10) for k in range(3)], rel=1e-12)
    for i, rate in enumerate(resumed):
        progress = 0.3 + i / 10
        assert rate == pytest.approx(cosine(0.3 + (progress - 0.3) * 1.7 / 3.7), rel=1e-9)
    assert all(b < a for a, b in itertools.pairwise(resumed))


@pytest.mark.parametrize(
    ("stop_epoch", "epochs", "decay_epoch"), [(2, 8, 5), (1, 7, 5), (2, 3, 2.5)]
)
def test_a_milestone_still_ahead_moves_with_the_stretch(stop_epoch, epochs, decay_epoch) -> None:
    """multistep, milestone at epoch 3 of 4, 10 steps an epoch: stopped at `stop_epoch` and
    resumed with `epochs`, the decay falls where the stretch puts epoch 3:
    stop + (3 - stop) x (epochs - stop) / (4 - stop)."""
    from resnets.engine import resume as R

    settings = {"train_size": 10, "batch_size": 1, "accumulate": 1, "world_size": 1}
    settings |= {"drop_last": True, "epochs": 4, "seed": 0, "repeated_aug": 1}
    state = {"schedule": R.fresh_layout(settings), "settings": settings, "config": "{}"}
    step = 10 * stop_epoch
    layout, notes = R.resumed_layout(
        state, {**settings, "epochs": epochs}, epoch=stop_epoch, samples=0, step=step
    )
    assert f"trainer.epochs 4 -> {epochs} at epoch {stop_epoch}" in notes[-1]
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    cfg = OmegaConf.structured(SchedConfig(name="multistep", milestones=[3], gamma=0.1))
    scheduler = build_scheduler(opt, cfg, lr=1.0, layout=layout, start_step=step)
    rates = []
    for _ in range(step, 10 * epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    first_decayed = step + next(i for i, r in enumerate(rates) if r < 0.5)
    assert first_decayed == round(10 * decay_epoch)
    assert rates[0] == 1.0 and rates[-1] == pytest.approx(0.1)
