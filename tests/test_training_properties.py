"""Properties over the configuration space (hypothesis, small fixed budgets): the schedule spans
the steps the loop takes, and a run stopped anywhere and resumed equals one that never stopped."""

from __future__ import annotations

import bisect
import itertools

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train

from .helpers import compose_train
from .test_training_correctness import FAST

QUICK = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: `make test` stays predictable
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expected_steps(n: int, batch: int, accumulate: int, drop_last: bool) -> int:
    """Steps per epoch, counted sample by sample (independently of resnets.data.plan)."""
    steps, left = 0, n
    while left >= batch * accumulate:
        steps, left = steps + 1, left - batch * accumulate
    if not drop_last and left // accumulate >= 1:
        steps += 1  # the short step: `accumulate` equal micro-batches of left // accumulate
    return steps


config = st.fixed_dictionaries(
    {
        "images": st.integers(8, 48),
        "batch": st.integers(1, 6),
        "accumulate": st.integers(1, 3),
        "drop_last": st.booleans(),
        "epochs": st.integers(1, 3),
        "sched": st.sampled_from(["cosine", "onecycle", "step", "multistep"]),
    }
).filter(lambda c: c["images"] >= c["batch"] * c["accumulate"])


def overrides(c: dict) -> list[str]:
    return [
        *FAST,
        f"data.fake_size={c['images']}",
        f"trainer.batch_size={c['batch']}",
        f"trainer.accumulate_grad_batches={c['accumulate']}",
        f"data.drop_last={str(c['drop_last']).lower()}",
        f"trainer.epochs={c['epochs']}",
        f"sched={c['sched']}",
        "sched.warmup_epochs=0.5" if c["sched"] != "onecycle" else "sched.pct_start=0.3",
        *(["sched.step_size=1"] if c["sched"] == "step" else []),
        *(["sched.milestones=[1,2]"] if c["sched"] == "multistep" else []),
    ]


@settings(QUICK, max_examples=8)
@given(c=config, cap=st.none() | st.integers(1, 20))
def test_scheduler_steps_equal_optimizer_steps_and_the_schedule_ends_at_the_end(
    tmp_path_factory, c, cap
) -> None:
    steps = []
    hook = register_optimizer_step_post_hook(lambda *a: steps.append(1))
    try:
        run_dir = tmp_path_factory.mktemp("sched")
        args = overrides(c) + ([f"trainer.max_steps={cap}"] if cap else [])
        train(compose_train(args), run_dir)
    finally:
        hook.remove()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    planned = c["epochs"] * expected_steps(c["images"], c["batch"], c["accumulate"], c["drop_last"])
    taken = min(planned, cap) if cap else planned
    assert len(steps) == state["step"] == state["scheduler"]["last_epoch"] == taken
    assert state["schedule"]["total_steps"] == planned  # max_steps stops; it does not re-plan
    if c["sched"] == "cosine" and taken == planned:  # cosine reaches min_lr (0) on the last step
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)


@settings(QUICK, max_examples=6)
@given(a=config, b=config, stop_at=st.integers(1, 60))
@pytest.mark.slow
def test_resume_with_other_settings_takes_exactly_the_steps_its_new_schedule_planned(
    tmp_path_factory, a, b, stop_at
) -> None:
    """Stop run `a` anywhere, resume it with another batch size, accumulation, drop_last and
    number of epochs (same data, same schedule kind): the resumed run continues from the image it
    stopped at, its schedule is laid out for exactly the steps it then takes, and it ends there."""
    b = {**b, "images": a["images"], "sched": a["sched"]}
    assume(b["images"] >= b["batch"] * b["accumulate"])
    run_dir = tmp_path_factory.mktemp("elastic")
    train(compose_train([*overrides(a), f"trainer.max_steps={stop_at}"]), run_dir)
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    epoch, position = stopped["epoch"], stopped["samples_in_epoch"]
    steps = []
    hook = register_optimizer_step_post_hook(lambda *args: steps.append(1))
    try:
        train(compose_train(overrides(b)), run_dir)
    finally:
        hook.remove()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    n, per_epoch = b["images"], (b["batch"], b["accumulate"], b["drop_last"])
    expected = 0
    if epoch < b["epochs"]:
        expected = expected_steps(n - position, *per_epoch)
        expected += (b["epochs"] - epoch - 1) * expected_steps(n, *per_epoch)
    assert len(steps) == state["step"] - stopped["step"] == expected
    assert state["scheduler"]["last_epoch"] == state["step"]
    assert state["schedule"]["total_steps"] == state["step"]  # the schedule ends where it stops
    if b["sched"] == "cosine" and expected:  # and reaches min_lr (0) on its last step
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)


def same_weights(a, b) -> None:
    wa = load_checkpoint(a / "checkpoints" / "last.pt")
    wb = load_checkpoint(b / "checkpoints" / "last.pt")
    assert wa["step"] == wb["step"]
    for name in wa["model"]:
        assert torch.equal(wa["model"][name], wb["model"][name]), name


def stop_then_resume(tmp_path_factory, args: list[str], stop_at: int) -> None:
    base = tmp_path_factory.mktemp("resume")
    train(compose_train(args), base / "straight")
    total = load_checkpoint(base / "straight/checkpoints/last.pt")["step"]
    stop_at = 1 + stop_at % max(total - 1, 1)
    train(compose_train([*args, f"trainer.max_steps={stop_at}"]), base / "resumed")
    assert load_checkpoint(base / "resumed/checkpoints/last.pt")["step"] == min(stop_at, total)
    train(compose_train(args), base / "resumed")
    same_weights(base / "straight", base / "resumed")


@settings(QUICK, max_examples=5)
@given(c=config, stop_at=st.integers(0, 100))
@pytest.mark.slow
def test_stop_at_any_step_then_resume_equals_an_uninterrupted_run(
    tmp_path_factory, c, stop_at
) -> None:
    args = [
        *overrides(c),
        "data.augment.hflip=true",
        "model.drop_path_rate=0.1",
        "trainer.mixup_alpha=0.3",
    ]
    stop_then_resume(tmp_path_factory, args, stop_at)


@pytest.mark.slow
@settings(QUICK, max_examples=3)
@given(c=config, stop_at=st.integers(0, 100), persistent=st.booleans())
def test_stop_then_resume_with_loader_workers_equals_an_uninterrupted_run(
    tmp_path_factory, c, stop_at, persistent
) -> None:
    """The torchvision DataLoader path (every image-folder run): per-sample seeds make the
    augmentation independent of which worker draws it, persistent workers or not."""
    args = [
        *overrides(c),
        "data.loader=torchvision",
        "trainer.workers=2",
        f"data.persistent_workers={str(persistent).lower()}",
        "data.augment.hflip=true",
        "model.drop_path_rate=0.1",
        "trainer.mixup_alpha=0.3",
    ]
    stop_then_resume(tmp_path_factory, args, stop_at)


# ----------------------------------------------------------------------------- rates follow images
def step_starts(n: int, per_step: int, parts: int, drop_last: bool, start: int = 0) -> list[int]:
    """Where each step of an epoch starts, in images (independently of resnets.data.plan)."""
    starts, at = [], start
    while n - at >= per_step:
        starts, at = [*starts, at], at + per_step
    if not drop_last and n - at >= parts:
        starts.append(at)  # the short step
    return starts


def rates_from(layout: dict, sched: dict, start_step: int, steps: int) -> list[float]:
    """The rate of each optimizer step from `start_step` on, then the rate after the last."""
    from omegaconf import OmegaConf

    from resnets.config import SchedConfig
    from resnets.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    cfg = OmegaConf.merge(OmegaConf.structured(SchedConfig), sched)
    scheduler = build_scheduler(opt, cfg, lr=1.0, layout=layout, start_step=start_step)
    out = []
    for _ in range(steps + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


cutting = st.fixed_dictionaries(
    {
        "batch_size": st.integers(1, 40),
        "accumulate": st.integers(1, 3),
        "world_size": st.integers(1, 4),
        "drop_last": st.booleans(),
    }
)
schedule = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["cosine", "step", "multistep", "onecycle", "constant"]),
        "warmup_method": st.sampled_from(["linear", "constant"]),
        "warmup_epochs": st.sampled_from([0, 0.5, 1, 2]),
        "step_size": st.sampled_from([1, 2]),
        "milestones": st.sampled_from([[1], [1, 2], [2, 3]]),
        "pct_start": st.sampled_from([0.25, 0.3]),
        "min_lr": st.sampled_from([0.0, 0.01]),
    }
)


@settings(QUICK, max_examples=25)
@given(
    sched=schedule,
    before=cutting,
    after=cutting,
    images=st.integers(8, 160),
    epochs=st.integers(1, 4),
    stop=st.floats(0.0, 1.0, exclude_max=True),
)
def test_resumed_rates_follow_the_images_seen(sched, before, after, images, epochs, stop) -> None:
    """Stop a run anywhere and resume it with another batch size, accumulation, number of
    processes and drop_last: at every image the resumed rate lies within one step (of the larger
    global batch) of the uninterrupted run's rate there, its first step has exactly the rate the
    uninterrupted run would have used next, and step decays and milestones (whole epochs here)
    fall in the same epochs. Plans and rates only: no training."""
    from resnets.engine import resume as R

    def settings_of(cut: dict) -> dict:
        return {"train_size": images, "epochs": epochs, **cut}

    old, new = settings_of(before), settings_of(after)
    per = {
        k: c["batch_size"] * c["accumulate"] * c["world_size"] for k, c in (("a", old), ("b", new))
    }
    parts = {k: c["accumulate"] * c["world_size"] for k, c in (("a", old), ("b", new))}
    starts_a = step_starts(images, per["a"], parts["a"], old["drop_last"])
    assume(starts_a and step_starts(images, per["b"], parts["b"], new["drop_last"]))
    # the uninterrupted run: its steps' image positions (epoch, image) and rates
    where_a = [(e, s) for e in range(epochs) for s in starts_a]
    layout_a = R.fresh_layout(old)
    straight = rates_from(layout_a, sched, 0, len(where_a))
    k = 1 + int(stop * (len(where_a) - 1)) if len(where_a) > 1 else 1
    epoch, image = where_a[k] if k < len(where_a) else (epochs, 0)
    if k < len(where_a) and image == 0:
        epoch, image = where_a[k]  # a stop after an epoch's last step: the next epoch, image 0
    state = {"schedule": layout_a, "settings": old, "config": "{}"}
    layout_b, _ = R.resumed_layout(state, new, epoch=epoch, samples=image, step=k)
    where_b = []
    if epoch < epochs:
        where_b = [
            (epoch, s) for s in step_starts(images, per["b"], parts["b"], new["drop_last"], image)
        ]
    where_b += [
        (e, s)
        for e in range(epoch + 1, epochs)
        for s in step_starts(images, per["b"], parts["b"], new["drop_last"])
    ]
    assert layout_b["total_steps"] == k + len(where_b)
    resumed = rates_from(layout_b, sched, k, len(where_b))
    if where_b and where_b[0] == (epoch, image):
        assert resumed[0] == straight[k]  # the very rate the uninterrupted run would use next
    # the uninterrupted run's steps as global image indices, the end last
    index_a = [e * images + s for e, s in where_a] + [epochs * images]
    reach = max(per["a"], per["b"])
    for rate, (e, s) in zip(resumed, where_b, strict=False):
        x = e * images + s
        # the uninterrupted steps whose images [y_j, y_j+1) come within `reach` of image x,
        # and the step after them: the rates the curve passes through there
        first = max(bisect.bisect_right(index_a, x - reach) - 1, 0)
        near = straight[first : bisect.bisect_right(index_a, x + reach) + 1]
        # where the curve turns (one-cycle's peak) finer steps may reach past the sampled
        # rates, by at most one step's change
        turns = near not in (sorted(near), sorted(near, reverse=True))
        change = max(abs(a - b) for a, b in itertools.pairwise(near)) if turns else 0.0
        assert min(near) - change - 1e-9 <= rate <= max(near) + change + 1e-9, (e, s, rate, near)
        if s == 0:  # every epoch starts exactly where the uninterrupted run's does
            assert rate == pytest.approx(straight[index_a.index(x)], rel=1e-12)
    # step decays and milestones at whole epochs: the same factor in the same epochs
    warm = sched["warmup_epochs"]
    if sched["name"] in ("step", "multistep") and warm == int(warm):
        if sched["name"] == "step":
            points = [warm + m * sched["step_size"] for m in range(1, epochs + 1)]
        else:
            points = [max(m, warm) for m in sched["milestones"]]
        for rate, (e, _) in zip(resumed, where_b, strict=False):
            if e >= warm:
                assert rate == pytest.approx(0.1 ** sum(p <= e for p in points), rel=1e-12)


@settings(QUICK, max_examples=15)
@given(
    sched=schedule,
    before=cutting,
    after=cutting,
    images=st.integers(8, 120),
    epochs=st.integers(1, 4),
    new_epochs=st.integers(1, 6),
    stop=st.floats(0.0, 1.0, exclude_max=True),
)
def test_another_number_of_epochs_at_a_resume_goes_on_and_ends_where_the_curve_ends(
    sched, before, after, images, epochs, new_epochs, stop
) -> None:
    """Resumed with other epochs (and other batching): the first step goes on at the rate the
    uninterrupted run would have used next, and the rate after the last step is the curve's
    end (cosine's min_lr, one-cycle's floor, the last decay), as in the uninterrupted run."""
    from resnets.engine import resume as R

    assume(new_epochs != epochs)
    old = {"train_size": images, "epochs": epochs, **before}
    new = {"train_size": images, "epochs": new_epochs, **after}
    per_a = before["batch_size"] * before["accumulate"] * before["world_size"]
    starts_a = step_starts(images, per_a, per_a // before["batch_size"], before["drop_last"])
    per_b = after["batch_size"] * after["accumulate"] * after["world_size"]
    starts_b = step_starts(images, per_b, per_b // after["batch_size"], after["drop_last"])
    assume(starts_a and starts_b)
    where_a = [(e, s) for e in range(epochs) for s in starts_a]
    layout_a = R.fresh_layout(old)
    straight = rates_from(layout_a, sched, 0, len(where_a))
    k = 1 + int(stop * (len(where_a) - 1))
    epoch, image = where_a[k] if k < len(where_a) else (epochs, 0)
    assume(epoch < new_epochs)  # something left to train
    state = {"schedule": layout_a, "settings": old, "config": "{}"}
    layout_b, notes = R.resumed_layout(state, new, epoch=epoch, samples=image, step=k)
    assert f"trainer.epochs {epochs} -> {new_epochs} at epoch " in notes[-1]
    steps = layout_b["total_steps"] - k
    resumed = rates_from(layout_b, sched, k, steps)
    first = step_starts(images, per_b, per_b // after["batch_size"], after["drop_last"], image)
    if first and first[0] == image:
        assert resumed[0] == pytest.approx(straight[k], rel=1e-12)
    assert resumed[-1] == pytest.approx(straight[-1], rel=1e-9, abs=1e-15)
