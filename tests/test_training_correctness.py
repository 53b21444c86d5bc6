"""Training stays correct off the convenient points: accumulation that does not divide the epoch,
resuming with other settings, step schedules with warm-up, max_steps at an epoch boundary,
image-folder label mapping, stops at awkward moments. Each test reproduces a reported failure."""

from __future__ import annotations

import hashlib
import logging
import os
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnets.engine import loop
from resnets.engine import resume as R
from resnets.engine.checkpoint import CheckpointError, load_checkpoint
from resnets.engine.trainer import NonFiniteLossError, TrainingInterrupted, train

from .helpers import compose_train, read_metrics

# 40 fake 8x8 images of 4 classes and a depth-8 ResNet: a whole run takes about a second
FAST = [
    "model=resnet",
    "model.depth=8",
    "model.stem=cifar",
    "model.base_channels=8",
    "data=fake",
    "data.fake_size=40",
    "data.num_classes=4",
    "data.image_size=8",
    "data.augment.crop_padding=1",
    "trainer.batch_size=4",
    "trainer.eval_batch_size=64",
    "trainer.progress=false",
    "trainer.workers=0",
    "trainer.label_smoothing=0",
    "trainer.log_every=5",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(tmp_path, *overrides: str) -> float:
    return train(compose_train([*FAST, *overrides]), tmp_path)


def last(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- 1. accumulation
@pytest.mark.parametrize("sched", ["onecycle", "cosine"])
def test_accumulation_that_does_not_divide_the_epoch_steps_the_schedule_it_built(
    tmp_path, sched
) -> None:
    """10 batches an epoch, accumulation 3: 3 steps of 12 images, the last 4 images left out
    (drop_last). The schedule spans exactly the 6 steps taken: one-cycle used to raise "Tried to
    step" and cosine to climb back up after reaching zero."""
    run(tmp_path, f"sched={sched}", "trainer.epochs=2", "trainer.accumulate_grad_batches=3")
    state = last(tmp_path)
    assert state["step"] == 6 and state["scheduler"]["last_epoch"] == 6
    lr = state["optimizer"]["param_groups"][0]["lr"]
    if sched == "cosine":
        assert lr == pytest.approx(0.0, abs=1e-12)  # min_lr, reached at the last step
    else:  # laid out for exactly the steps taken
        assert state["scheduler"]["total_steps"] == 6


def test_short_last_step_uses_equal_micro_batches(tmp_path) -> None:
    """drop_last=false, 40 images, batch 4 x accumulation 3: 3 whole steps, then the 4 left
    make one step of 3 micro-batches of 1 image (the 4th image left out), so the mean of the
    micro-batch losses is the step's mean loss."""
    from resnets.data.plan import EpochPlan

    epoch = EpochPlan(40, batch_size=4, accumulate=3, drop_last=False)
    plan = epoch.micro_batches()
    assert plan[-3:] == [(36, 1), (37, 1), (38, 1)] and len(plan) == 12
    assert epoch.steps() == 4
    run(
        tmp_path,
        "trainer.epochs=1",
        "trainer.accumulate_grad_batches=3",
        "data.drop_last=false",
        "sched=cosine",
    )
    state = last(tmp_path)
    assert state["step"] == 4 and state["scheduler"]["last_epoch"] == 4


# ----------------------------------------------------------------------------- 3. step + warm-up
def _lrs(cfg: dict, steps: int) -> list[float]:
    from omegaconf import OmegaConf

    from resnets.config import SchedConfig
    from resnets.optim import build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_scheduler(
        opt,
        OmegaConf.merge(OmegaConf.structured(SchedConfig), cfg),
        steps_per_epoch=1,
        epochs=steps,
        lr=1.0,
    )
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_counts_whole_periods_after_the_warmup() -> None:
    lrs = _lrs({"name": "step", "warmup_epochs": 5, "step_size": 30, "gamma": 0.1}, 100)
    drops = [k for k in range(1, 100) if lrs[k] < lrs[k - 1] * 0.5]
    assert drops == [35, 65, 95]  # used to be 30, 55, 80
    assert lrs[5] == pytest.approx(1.0) and lrs[34] == pytest.approx(1.0)
    lrs = _lrs({"name": "step", "warmup_epochs": 1, "step_size": 2, "gamma": 0.5}, 8)
    assert lrs == pytest.approx([0.1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125])  # not halving every step


# ----------------------------------------------------------------------------- 4. label mapping
def test_val_folder_missing_a_class_keeps_train_labels(tmp_path) -> None:
    from resnets.data import build_data

    from .conftest import write_image_folder
    from .test_data import data_cfg

    write_image_folder(tmp_path, splits=("train",))
    write_image_folder(tmp_path, classes=("cat", "eel"), splits=("val",), seed=1)
    cfg = data_cfg(name="imagefolder", root=str(tmp_path), image_size=32, val_crop=32)
    bundle = build_data(cfg, batch_size=4, eval_batch_size=64)
    assert bundle.class_names == ["cat", "dog", "eel"]
    labels = torch.cat([y for _, y in bundle.val])
    assert labels.tolist() == [0] * 6 + [2] * 6  # eel is 2 in train's mapping, not 1
    test_cfg = data_cfg(name="imagefolder", root=str(tmp_path), image_size=32, split="test")
    (tmp_path / "test" / "fox").mkdir(parents=True)
    (tmp_path / "val" / "cat" / "0.JPEG").rename(tmp_path / "test" / "fox" / "0.JPEG")
    from resnets.data import DataError

    with pytest.raises(DataError, match=r"test has class folder\(s\) 'fox' that .*train does not"):
        build_data(test_cfg, batch_size=4)


# ----------------------------------------------------------------------------- 5. max_steps
def test_max_steps_at_an_epoch_boundary_evaluates_and_saves(tmp_path) -> None:
    best = run(
        tmp_path,
        "trainer.epochs=5",
        "trainer.max_steps=10",  # the end of epoch 1 of 10 steps
        "trainer.eval_every=2",
        "trainer.save_every=2",
    )
    state = last(tmp_path)
    assert state["step"] == 10 and state["epoch"] == 1
    assert best >= 0 and best == read_metrics(tmp_path)["best_val_top1"] == state["best"]
    assert (tmp_path / "checkpoints" / "best.pt").exists()


# ----------------------------------------------------------------------------- 2. elastic resume
def test_resume_with_another_batch_size_continues_from_the_same_sample(tmp_path, caplog) -> None:
    run(tmp_path, "trainer.epochs=2", "trainer.max_steps=3")  # 12 images into epoch 1
    assert last(tmp_path)["samples_in_epoch"] == 12
    caplog.set_level(logging.INFO)
    run(tmp_path, "trainer.epochs=2", "trainer.batch_size=8", "trainer.max_steps=4")
    state = last(tmp_path)
    assert state["step"] == 4 and state["samples_in_epoch"] == 20  # 12 + one batch of 8
    assert (
        "resuming with other settings (trainer.batch_size 4 -> 8): continuing epoch 1 from "
        "sample 12 of 40 at step 3; the learning rate continues from epoch 0.3 of progress "
        "(5 steps per epoch now, 11 in all)" in caplog.text
    )
    run(tmp_path, "trainer.epochs=2", "trainer.batch_size=8")
    state = last(tmp_path)
    # 3 steps of 4, then (40 - 12) // 8 = 3 steps of 8, then 5 in epoch 2
    assert state["step"] == 11 and state["epoch"] == 2
    assert state["scheduler"]["last_epoch"] == 11


@pytest.mark.slow
def test_raising_epochs_of_a_finished_onecycle_run_continues(tmp_path, caplog) -> None:
    run(tmp_path, "sched=onecycle", "trainer.epochs=1")
    caplog.set_level(logging.INFO)
    run(tmp_path, "sched=onecycle", "trainer.epochs=2")  # used to raise "Tried to step"
    assert last(tmp_path)["step"] == 20
    assert "trainer.epochs 1 -> 2" in caplog.text
    run(tmp_path, "sched=onecycle", "trainer.epochs=2")  # and a rerun of the finished run
    assert last(tmp_path)["step"] == 20


@pytest.mark.slow
def test_changed_lr_and_optimizer_take_effect_from_the_current_step(tmp_path, caplog) -> None:
    run(tmp_path, "sched=constant", "trainer.epochs=2", "trainer.max_steps=3")
    caplog.set_level(logging.INFO)
    run(tmp_path, "sched=constant", "trainer.epochs=2", "optim.lr=0.05", "trainer.max_steps=5")
    state = last(tmp_path)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.05, 0.05]
    assert "optim.lr 0.1 -> 0.05: in effect from step 3" in caplog.text
    run(tmp_path, "sched=constant", "trainer.epochs=2", "optim=adamw", "optim.lr=0.01")
    state = last(tmp_path)
    assert state["step"] == 20
    moments = state["optimizer"]["state"][0]
    assert "exp_avg" in moments and int(moments["step"]) == 20 - 5  # fresh at step 5
    assert "optim.name changed from sgd to adamw: the optimizer state starts afresh" in caplog.text


def test_resume_on_other_data_is_refused_before_anything_is_touched(tmp_path) -> None:
    run(tmp_path, "trainer.epochs=2", "trainer.max_steps=3")
    before = digest(tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt: was trained on 40 training images and the data now has 48",
    ):
        run(tmp_path, "trainer.epochs=2", "data.fake_size=48")
    with pytest.raises(CheckpointError, match=r"stopped inside an epoch drawn with seed=0"):
        run(tmp_path, "trainer.epochs=2", "seed=1")
    assert digest(tmp_path / "checkpoints" / "last.pt") == before


@pytest.mark.slow
def test_mid_epoch_resume_refuses_another_repeated_augmentation_order(tmp_path) -> None:
    """The repeated-augmentation order depends on the number of copies and (dealing copies
    across ranks) on the world size: changing either inside an epoch would repeat or skip
    samples, so it is refused like a new seed; from an epoch boundary it is accepted."""
    run(tmp_path, "trainer.epochs=2", "trainer.max_steps=3", "data.repeated_aug=3")
    before = digest(tmp_path / "checkpoints" / "last.pt")
    for other in ("data.repeated_aug=0", "data.repeated_aug=2"):
        with pytest.raises(
            CheckpointError, match=r"stopped inside an epoch drawn with data\.repeated_aug=3"
        ):
            run(tmp_path, "trainer.epochs=2", other)
    assert digest(tmp_path / "checkpoints" / "last.pt") == before
    old = {"train_size": 40, "seed": 0, "repeated_aug": 3, "world_size": 1}
    with pytest.raises(CheckpointError, match=r"with data\.repeated_aug=3 on 1 process"):
        R.check_resumable(tmp_path / "last.pt", old, {**old, "world_size": 2}, 12)
    R.check_resumable(tmp_path / "last.pt", old, {**old, "world_size": 2}, 0)  # a boundary
    off = {**old, "repeated_aug": 1}  # without copies the order does not depend on ranks
    R.check_resumable(tmp_path / "last.pt", off, {**off, "world_size": 2}, 12)
    run(tmp_path, "trainer.epochs=2", "data.repeated_aug=3")  # the same order: it continues
    assert last(tmp_path)["step"] == 20


# ----------------------------------------------------------------------------- suspected items
@pytest.mark.slow
def test_stop_during_an_epochs_last_step_still_validates_that_epoch(tmp_path, monkeypatch) -> None:
    """A stop signal arriving in the last step of epoch 1 used to skip epoch 1's validation and
    best.pt for good: the resumed run started at epoch 2."""
    original = loop.optimizer_step

    def signal_in_step_10(self, log_now):
        if self.step == 9:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, log_now)

    monkeypatch.setattr(loop, "optimizer_step", signal_in_step_10)
    with pytest.raises(TrainingInterrupted):
        run(tmp_path, "trainer.epochs=2")
    assert last(tmp_path)["step"] == 10 and last(tmp_path)["val_pending"]
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
    monkeypatch.setattr(loop, "optimizer_step", original)
    run(tmp_path, "trainer.epochs=2")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/top1")] == [10, 20]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] in (10, 20)


def test_preemption_save_after_a_non_finite_loss_keeps_the_good_checkpoint(
    tmp_path, monkeypatch
) -> None:
    """Under submitit SIGTERM saves last.pt and training goes on. A loss that went NaN between
    two finite-checks (log_every) used to be saved over the good checkpoint."""
    run(tmp_path, "trainer.epochs=2", "trainer.max_steps=10")
    before = digest(tmp_path / "checkpoints" / "last.pt")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    original_loss = torch.nn.CrossEntropyLoss.forward
    original_step = loop.optimizer_step

    def nan_loss(self, x, y):
        return original_loss(self, x, y) * float("nan")

    def sigterm_at_12(self, log_now):
        if self.step == 11:
            os.kill(os.getpid(), signal.SIGTERM)
        return original_step(self, log_now)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_loss)
    monkeypatch.setattr(loop, "optimizer_step", sigterm_at_12)
    with pytest.raises(NonFiniteLossError, match=r"became nan by step 12"):
        run(tmp_path, "trainer.epochs=2")  # log_every=5: the next check would be at step 15
    assert digest(tmp_path / "checkpoints" / "last.pt") == before


def test_augmentation_seeds_do_not_repeat_across_epochs_past_9176_batches() -> None:
    """Per-batch seeds were seed*1000003 + epoch*9176 + batch: batch b of epoch 1 repeated
    batch b + 9176 of epoch 0. Now each sample's draw depends on (seed, epoch, position)."""
    from resnets.data.loaders import TensorLoader

    n = 9_200
    pattern = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) * 15
    images = pattern.expand(n, 1, 4, 4).contiguous()  # one image: outputs show the draws
    loader = TensorLoader(
        images,
        torch.zeros(n, dtype=torch.long),
        batch_size=1,
        mean=(0.0,),
        std=(1.0,),
        device=torch.device("cpu"),
        train=True,
        crop_padding=2,
        hflip=True,
        cutout=2,
    )
    loader.set_epoch(0, start_sample=9_176)  # batch 1, one process: batch 9,176
    late = torch.cat([x for x, _ in loader])
    assert len(late) == 24
    loader.set_epoch(1)
    early = torch.cat([x for (x, _), _ in zip(loader, range(24), strict=False)])
    same = [torch.equal(a, b) for a, b in zip(late, early, strict=True)]
    assert sum(same) < 12, same  # 24 of 24 used to be equal


@pytest.mark.slow
def test_no_sync_reaches_ddp_through_a_compiled_wrapper(tmp_path) -> None:
    """trainer.compile wraps the DDP module; no_sync was looked up on the wrapper, so every
    accumulation micro-batch all-reduced its gradients."""
    import torch.distributed as dist

    from resnets.engine import distributed as D

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        compiled = torch.compile(ddp)  # compiles lazily, on its first call
        with D.no_sync_if(compiled, True):
            assert ddp.require_backward_grad_sync is False
        assert ddp.require_backward_grad_sync is True
    finally:
        dist.destroy_process_group()
