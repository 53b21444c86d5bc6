"""The training loop end to end: CLI, resume, signals, bad checkpoints, TensorBoard, precision."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from resnets.engine.checkpoint import CheckpointError, load_checkpoint
from resnets.engine.trainer import NonFiniteLossError, Trainer, train

from .helpers import REPO, TINY, compose_train, read_metrics, run_train_cli


@pytest.mark.slow
def test_used_by_command_on_real_format_cifar10(cifar10_root, tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_cli(
        [
            "model=resnext50_32x4d",
            "data=cifar10",
            f"data.root={cifar10_root}",
            "trainer.epochs=1",
            "trainer.batch_size=25",
            "trainer.eval_batch_size=20",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert (
        metrics["model"] == "resnext50_32x4d"
        and metrics["steps"] == 4
        and metrics["val_samples"] == 40
    )
    # torchvision's 25,028,904 with a 10-way head (-2,049,000 +20,490) and a 3x3 stem (-9,408 +1,728)
    assert metrics["num_params"] == 25_028_904 - 2_049_000 + 20_490 - 9_408 + 1_728
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert (
            ckpt["format_version"] == 2
            and ckpt["step"] == 4
            and "name: resnext50_32x4d" in ckpt["config"]
        )
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert "epoch 1/1 step 4: train loss" in (run_dir / "train.log").read_text()
    assert "stem=auto chose the cifar stem" in (run_dir / "train.log").read_text()


def _weights(path) -> dict:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_two_epochs_equal_one_plus_resumed_one_weight_for_weight(tmp_path) -> None:
    overrides = [
        *TINY,
        "data=digits",
        "trainer.epochs=2",
        "trainer.deterministic=true",
        "trainer.mixup_alpha=0.2",
        "trainer.ema_decay=0.9",
        "model.drop_path_rate=0.1",
        "sched=cosine",
        "sched.warmup_epochs=0.5",
    ]
    straight = tmp_path / "straight"
    train(compose_train(overrides), straight)
    resumed = tmp_path / "resumed"
    # stop mid-epoch 2 (22 steps per epoch), then run the same command again
    train(compose_train([*overrides, "trainer.max_steps=30"]), resumed)
    partial = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert partial["step"] == 30 and partial["epoch"] == 1 and partial["samples_in_epoch"] == 8 * 64
    train(compose_train(overrides), resumed)
    a, b = (
        load_checkpoint(straight / "checkpoints/last.pt"),
        load_checkpoint(resumed / "checkpoints/last.pt"),
    )
    assert a["step"] == b["step"] == 44
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert read_metrics(straight)["val_top1"] == read_metrics(resumed)["val_top1"]


@pytest.mark.slow
def test_sigterm_mid_epoch_writes_last_and_run_finishes(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = ["model=resnet20", "trainer.epochs=3", "trainer.log_every=1", f"hydra.run.dir={run_dir}"]
    env_cmd = [sys.executable, str(REPO / "train.py"), *args]
    proc = subprocess.Popen(
        env_cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = run_dir / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        log.exists() and "epoch 1/3 step 11: train" in log.read_text()
    ):
        time.sleep(0.1)
    time.sleep(0.8)  # well inside epoch 2
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and 0 < ckpt["samples_in_epoch"] < 11 * 128
    assert ckpt["step"] == 11 + ckpt["samples_in_epoch"] // 128
    assert "stopped by SIGTERM (signal 15)" in log.read_text()
    again = run_train_cli(args)
    assert again.returncode == 0, again.stderr[-2000:]
    metrics = read_metrics(run_dir)
    assert metrics["epochs"] == 3 and metrics["steps"] == 33
    # epochs count from 1 as in every other line: the checkpoint is inside epoch 2
    done = ckpt["samples_in_epoch"]
    assert (
        f"resumed from {run_dir / 'checkpoints' / 'last.pt'} inside epoch 2/3 ({done} of 1437 "
        f"images done), at step {ckpt['step']}" in log.read_text()
    )


@pytest.mark.slow
def test_truncated_last_checkpoint_is_reported_and_moved_aside(tmp_path) -> None:
    overrides = [*TINY, "data=digits", "trainer.epochs=1", "trainer.max_steps=2"]
    train(compose_train(overrides), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt: is truncated or corrupt.*Moved it to .*last\.pt\.corrupt-",
    ):
        train(compose_train(overrides), tmp_path)
    aside = list((tmp_path / "checkpoints").glob("last.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == data[: len(data) // 2]
    assert not last.exists()
    train(compose_train(overrides), tmp_path)  # the next run starts afresh
    assert load_checkpoint(last)["step"] == 2 and aside[0].exists()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_non_finite_loss_stops_without_touching_good_checkpoint(tmp_path, monkeypatch) -> None:
    overrides = [*TINY, "data=digits", "trainer.epochs=2", "trainer.log_every=5"]
    train(compose_train([*overrides, "trainer.max_steps=22"]), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    before = _digest(last)
    original = torch.nn.CrossEntropyLoss.forward
    monkeypatch.setattr(
        torch.nn.CrossEntropyLoss, "forward", lambda self, x, y: original(self, x, y) * float("nan")
    )
    with pytest.raises(
        NonFiniteLossError, match=r"training loss became nan by step 25 \(model resnet"
    ):
        train(compose_train(overrides), tmp_path)
    assert _digest(last) == before


@pytest.mark.slow
def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    overrides = [*TINY, "data=digits", "trainer.epochs=2", "trainer.max_steps=22"]
    train(compose_train(overrides), tmp_path)
    saved = [tmp_path / "checkpoints" / name for name in ("last.pt", "best.pt")]
    before = [_digest(p) for p in saved]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        CheckpointError,
        match=r"(best|last)\.pt: could not be written .*No space left.*previous file is intact",
    ):
        train(compose_train([*overrides[:-1], "trainer.max_steps=30"]), tmp_path)
    assert [_digest(p) for p in saved] == before
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


@pytest.mark.slow
def test_tensorboard_events_have_the_tags_and_steps(tmp_path) -> None:
    overrides = [
        *TINY,
        "data=digits",
        "trainer.epochs=2",
        "trainer.log_every=5",
        "trainer.ema_decay=0.9",
    ]
    train(compose_train(overrides), tmp_path)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in (
        "train/loss",
        "train/top1",
        "lr",
        "perf/images_per_s",
        "train/grad_norm",
        "val/loss",
        "val/top1",
        "val/top5",
        "val_ema/top1",
        "perf/epoch_time_s",
    ):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("val/top1")] == [22, 44]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(5, 45, 5))
    assert events.Tags()["images"] == ["inputs"]
    assert "config/text_summary" in events.Tags()["tensors"]
    # add_hparams writes its own event file: read every file for the hparams plugin's records
    tags = {
        value.tag
        for path in (tmp_path / "tb").glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    }
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "hparam/best_val_top1"} <= tags


@pytest.mark.slow
def test_bf16_and_channels_last_run_on_cpu(tmp_path) -> None:
    overrides = [
        *TINY,
        "data=digits",
        "trainer.epochs=1",
        "trainer.precision=bf16-mixed",
        "trainer.channels_last=true",
    ]
    best = train(compose_train(overrides), tmp_path)
    metrics = read_metrics(tmp_path)
    assert (
        metrics["steps"] == 22
        and 0 <= best <= 100
        and metrics["train_loss"] == metrics["train_loss"]
    )


def test_fp16_on_cpu_is_refused_with_accepted_values(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: 16-mixed is allowed")
    with pytest.raises(
        ValueError,
        match=r"trainer\.precision='16-mixed' needs CUDA.*accepted on CPU: 32, bf16-mixed",
    ):
        Trainer(compose_train([*TINY, "trainer.precision=16-mixed"]), tmp_path)


@pytest.mark.slow
def test_gradient_accumulation_steps_count(tmp_path) -> None:
    overrides = [
        *TINY,
        "data=digits",
        "trainer.epochs=1",
        "trainer.batch_size=32",
        "trainer.accumulate_grad_batches=4",
        "trainer.grad_clip=1.0",
    ]
    train(compose_train(overrides), tmp_path)
    assert read_metrics(tmp_path)["steps"] == 11  # 44 micro-batches / 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "extra",
    [["trainer.precision=16-mixed"], ["trainer.compile=true", "trainer.precision=bf16-mixed"]],
)
def test_cuda_paths(tmp_path, extra) -> None:
    overrides = [*TINY, "data=digits", "trainer.epochs=2", "trainer.device=cuda", *extra]
    best = train(compose_train(overrides), tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert best > 50 and ckpt["step"] == 44
    if "trainer.precision=16-mixed" in extra:
        assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 0


@pytest.mark.slow
def test_default_run_reaches_97_percent(tmp_path) -> None:
    result = run_train_cli([f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(tmp_path)
    assert (
        metrics["best_val_top1"] >= 97.0
        and metrics["model"] == "resnet20"
        and metrics["data"] == "digits"
    )


@pytest.mark.slow
def test_in_process_runs_do_not_log_into_each_other(tmp_path) -> None:
    """A finished run lets go of its train.log: the next in-process run (a sweep, a benchmark)
    neither writes into it nor fails once the first directory is gone."""
    import logging
    import shutil

    overrides = [*TINY, "trainer.epochs=1", "trainer.max_steps=2"]
    first, second = tmp_path / "first", tmp_path / "second"
    train(compose_train(overrides), first)
    size = (first / "train.log").stat().st_size
    assert not [
        h
        for h in logging.getLogger().handlers
        if getattr(h, "baseFilename", "").startswith(str(first))
    ]
    train(compose_train(overrides), second)
    assert (first / "train.log").stat().st_size == size
    assert "step 2: train loss" in (second / "train.log").read_text()
    shutil.rmtree(first)
    shutil.rmtree(second)
    train(compose_train(overrides), tmp_path / "third")
