"""What a training run reports is true and readable: EMA figures and best_by in metrics.json and
the log, epoch lines, partial epochs, Ctrl-C, whole-run training time, batch-job progress lines
and TensorBoard hparams. Every test reads the real output back."""

from __future__ import annotations

import os
import re
import signal

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from resnets.config import ConfigError
from resnets.engine import loop
from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.hparams import result_hparams
from resnets.engine.trainer import Trainer, train

from .helpers import TINY, compose_train, read_metrics

# 128 synthetic images: two steps an epoch, a second or two per run
FAKE = [*TINY, "data=fake", "data.fake_size=128", "trainer.log_every=1"]


def _log(run) -> str:
    return (run / "train.log").read_text()


@pytest.mark.parametrize("best_by", [None, "raw"])
@pytest.mark.slow
def test_ema_figures_and_best_by(tmp_path, best_by) -> None:
    extra = [] if best_by is None else [f"trainer.best_by={best_by}"]
    train(compose_train([*FAKE, "trainer.epochs=3", "trainer.ema_decay=0.5", *extra]), tmp_path)
    metrics = read_metrics(tmp_path)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    raw = [e.value for e in events.Scalars("val/top1")]
    ema = [e.value for e in events.Scalars("val_ema/top1")]
    chosen = ema if best_by is None else raw  # default: the EMA picks best.pt when it exists
    assert metrics["best_by"] == ("ema" if best_by is None else "raw")
    assert metrics["val_ema_top1"] == pytest.approx(ema[-1], abs=1e-4)
    assert metrics["val_top1"] == pytest.approx(raw[-1], abs=1e-4)
    assert metrics["val_ema_top5"] is not None and metrics["val_ema_loss"] > 0
    assert metrics["best_val_top1"] == pytest.approx(max(chosen), abs=1e-4)
    assert metrics["best_epoch"] == 1 + chosen.index(max(chosen))
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == metrics["best_epoch"]
    # the epoch lines (progress lines read "epoch 1/3 step 2 (batch 2/2)")
    lines = [
        line for line in _log(tmp_path).splitlines() if re.search(r"epoch \d/3 step \d+:", line)
    ]
    assert len(lines) == 3
    assert all("train loss" in x and "| val loss" in x and "| EMA val loss" in x for x in lines)


def test_without_ema_metrics_say_so_and_best_by_ema_is_refused(tmp_path) -> None:
    train(compose_train([*FAKE, "trainer.epochs=1"]), tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["best_by"] == "raw" and metrics["val_ema_top1"] is None
    assert "EMA" not in _log(tmp_path)
    with pytest.raises(ConfigError, match=r"trainer\.best_by='ema' needs an EMA"):
        Trainer(compose_train([*FAKE, "trainer.best_by=ema"]), tmp_path / "x")


def test_partial_epoch_is_named_by_the_epoch_it_ran_in(tmp_path) -> None:
    train(compose_train([*TINY, "data=digits", "trainer.max_steps=3"]), tmp_path)
    log = _log(tmp_path)
    # the position in the epoch is counted in images (3 steps of batch 64)
    assert "epoch 1/12 (partial, 192 images) step 3: train loss" in log
    assert "epoch 0" not in log
    assert read_metrics(tmp_path)["best_epoch"] == 1


def test_ctrl_c_says_so_and_how_to_resume(tmp_path, monkeypatch) -> None:
    original = loop.optimizer_step

    def step_then_ctrl_c(self, log_now):
        norm = original(self, log_now)
        if self.step == 0:  # the first step: the user presses Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return norm

    monkeypatch.setattr(loop, "optimizer_step", step_then_ctrl_c)
    with pytest.raises(SystemExit) as stopped:
        train(compose_train([*FAKE, "trainer.epochs=2"]), tmp_path)
    assert stopped.value.code == 128 + signal.SIGINT
    line = next(x for x in _log(tmp_path).splitlines() if "stopped by" in x)
    assert "stopped by Ctrl-C (SIGINT) at step 1; last.pt written" in line
    assert f"run the same command with hydra.run.dir={tmp_path}" in line


def test_ctrl_c_in_a_sweep_job_advises_the_sweep_command(tmp_path) -> None:
    from resnets.engine.continue_hint import in_sweep
    from resnets.engine.trainer import stop_message

    with in_sweep("multirun/zoo"):
        inside = stop_message(signal.SIGINT, 7, tmp_path / "multirun" / "zoo" / "2")
    assert inside == (
        "stopped by Ctrl-C (SIGINT) at step 7; last.pt written. To continue, run the same -m "
        "command with hydra.sweep.dir=multirun/zoo (finished jobs are skipped, this one resumes)"
    )
    # outside a sweep again: the run's own directory
    assert stop_message(signal.SIGINT, 7, tmp_path).endswith(f"hydra.run.dir={tmp_path}")


@pytest.mark.slow
def test_train_time_after_resume_counts_the_whole_run(tmp_path) -> None:
    train(compose_train([*FAKE, "trainer.epochs=4", "trainer.max_steps=4"]), tmp_path)
    first = read_metrics(tmp_path)
    assert first["steps"] == 4
    train(compose_train([*FAKE, "trainer.epochs=4"]), tmp_path)
    whole = read_metrics(tmp_path)
    assert whole["steps"] == 8
    # the second attempt trained as many steps again: the total is more than the first half
    assert whole["train_time_s"] > first["train_time_s"] > 0
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["train_time_s"] == pytest.approx(whole["train_time_s"], abs=1e-3)
    assert ckpt["images_seen"] == 8 * 64


def test_batch_jobs_get_a_progress_line_every_n_steps(tmp_path) -> None:
    # pytest's stdout is no terminal, so no bar is drawn: the log shows life instead
    train(compose_train([*FAKE, "trainer.epochs=2", "trainer.progress_every=1"]), tmp_path)
    lines = [x for x in _log(tmp_path).splitlines() if "(batch " in x]
    assert len(lines) == 4
    assert re.search(r"epoch 2/2 step 4 \(batch 2/2\): train loss [\d.]+ top-1 [\d.]+%", lines[-1])


def test_tensorboard_hparams_hold_only_what_changes_results(tmp_path) -> None:
    train(compose_train([*FAKE, "trainer.epochs=1"]), tmp_path)
    hparams = {}
    for path in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    hparams = dict(data.session_start_info.hparams)
    assert hparams, "no hparams written"
    assert "optim.lr" in hparams and "trainer.batch_size" in hparams and "seed" in hparams
    noise = ("trainer.workers", "trainer.progress", "trainer.log_every", "data.root")
    unused = ("trainer.ema_every", "model.pretrained_ema", "data.max_bad_images")  # EMA/weights off
    for field in (*noise, *unused):
        assert field not in hparams, field
    assert not [k for k, v in hparams.items() if v.string_value == "None"]
    assert "sched.step_size" not in hparams  # the default run's schedule is onecycle
    assert len(hparams) < 40
    # with EMA and published weights on, their companions do change the results
    used = result_hparams(
        compose_train([*FAKE, "trainer.ema_decay=0.99", "model.pretrained=weights.pt"])
    )
    assert used["trainer.ema_every"] == 1 and used["model.pretrained_ema"] is False
