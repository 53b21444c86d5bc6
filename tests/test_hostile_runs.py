"""Runs that meet hostile settings, damaged checkpoints, full or read-only disks: one line, exit 2,
and nothing a user had is lost or overwritten."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from resnets.engine import loop
from resnets.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from resnets.engine.cli import USER_ERRORS
from resnets.engine.trainer import NonFiniteLossError, train

from .helpers import TINY, compose_train, read_metrics

DIGITS = [*TINY, "data=digits", "trainer.epochs=1", "trainer.max_steps=2"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- never overwrite
def test_fresh_start_after_corrupt_last_keeps_old_best_byte_for_byte(tmp_path, caplog) -> None:
    train(compose_train(DIGITS), tmp_path)
    ckpts = tmp_path / "checkpoints"
    best_bytes = (ckpts / "best.pt").read_bytes()
    last = ckpts / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"run again to start afresh \(the other checkpoints"):
        train(compose_train(DIGITS), tmp_path)
    train(compose_train([*DIGITS[:-1], "trainer.max_steps=1"]), tmp_path)  # starts afresh
    previous = list(ckpts.glob("previous-*"))
    assert len(previous) == 1 and (previous[0] / "best.pt").read_bytes() == best_bytes
    assert load_checkpoint(last)["step"] == 1
    assert (
        "moved checkpoints this run did not write (best.pt)" in (tmp_path / "train.log").read_text()
    )
    assert len(list(ckpts.glob("last.pt.corrupt-*"))) == 1


@pytest.mark.slow
def test_resume_false_moves_the_old_checkpoints_aside(tmp_path) -> None:
    train(compose_train(DIGITS), tmp_path)
    ckpts = tmp_path / "checkpoints"
    before = {name: _digest(ckpts / name) for name in ("last.pt", "best.pt")}
    train(compose_train([*DIGITS[:-1], "trainer.max_steps=1", "resume=false"]), tmp_path)
    (previous,) = ckpts.glob("previous-*")
    assert {name: _digest(previous / name) for name in before} == before
    assert load_checkpoint(ckpts / "last.pt")["step"] == 1
    # a second fresh start in the same second gets its own folder
    train(compose_train([*DIGITS[:-1], "trainer.max_steps=1", "resume=false"]), tmp_path)
    assert len(list(ckpts.glob("previous-*"))) == 2


def test_resuming_own_run_moves_nothing(tmp_path) -> None:
    train(compose_train(DIGITS), tmp_path)
    train(compose_train([*DIGITS[:-1], "trainer.max_steps=3"]), tmp_path)
    ckpts = tmp_path / "checkpoints"
    assert not list(ckpts.glob("previous-*"))
    assert load_checkpoint(ckpts / "last.pt")["step"] == 3


def test_stale_temporary_from_killed_save_is_removed(tmp_path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    stale = ckpts / ".last.pt.tmp-4242"
    stale.write_bytes(b"PK\x03\x04half written")
    train(compose_train(DIGITS), tmp_path)
    assert not stale.exists()
    assert (
        f"removed {stale}, a checkpoint left half-written" in (tmp_path / "train.log").read_text()
    )


# --------------------------------------------------------------------------- non-finite
FAKE_ONE_STEP = [
    *TINY,
    "data=fake",
    "data.fake_size=64",
    "trainer.batch_size=64",
    "sched=constant",
]


def test_huge_lr_nan_weights_never_saved(tmp_path, monkeypatch) -> None:
    # one step an epoch: the step's loss is finite, the weights after it are not. optim.lr=1e38
    # is refused by validation (limits.py) since; the guard behind it is checked here without it
    import resnets.engine.trainer

    monkeypatch.setattr(resnets.engine.trainer, "validate", lambda cfg: None)
    cfg = compose_train([*FAKE_ONE_STEP, "trainer.epochs=2", "optim.lr=1e38"])
    with pytest.raises(
        NonFiniteLossError, match=r"validation loss became nan at step 1 .*stopping without saving"
    ):
        train(cfg, tmp_path)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


@pytest.mark.parametrize("kind", ["weight", "buffer"])
def test_non_finite_weights_without_validation_are_not_saved(tmp_path, monkeypatch, kind) -> None:
    good = [*FAKE_ONE_STEP, "trainer.epochs=4", "trainer.eval_every=2", "trainer.max_steps=2"]
    train(compose_train(good), tmp_path)
    before = {p.name: _digest(p) for p in (tmp_path / "checkpoints").glob("*.pt")}
    original = loop.optimizer_step

    def step_then_poison(self, log_now):
        out = original(self, log_now)
        if self.step == 2:  # step 3: epoch 3 saves last.pt without evaluating (eval_every=2)
            tensors = self.model.parameters() if kind == "weight" else self.model.buffers()
            target = next(t for t in tensors if t.is_floating_point())
            with torch.no_grad():
                target.fill_(float("inf"))
        return out

    monkeypatch.setattr(loop, "optimizer_step", step_then_poison)
    with pytest.raises(
        NonFiniteLossError, match=r"^weights \(.*\) became inf by step 3 .*stopping without saving"
    ):
        train(compose_train(good[:-1]), tmp_path)
    assert {p.name: _digest(p) for p in (tmp_path / "checkpoints").glob("*.pt")} == before


# --------------------------------------------------------------------------- disks
@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield False
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_one_line_with_free_space_and_no_leftover(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    with _tmpfs(ckpts, "4m") as real:
        train(compose_train(DIGITS), run)
        saved = {name: _digest(ckpts / name) for name in ("last.pt", "best.pt")}
        if real:  # fill the disk but for 64 KiB: the next checkpoint cannot fit
            free = shutil.disk_usage(ckpts).free
            (ckpts / "filler").write_bytes(b"\0" * (free - 64 * 1024))
            free_before = shutil.disk_usage(ckpts).free
        else:  # what torch.save raises on a full disk

            def full(*args, **kwargs):
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 12"
                )

            monkeypatch.setattr(torch, "save", full)
        with pytest.raises(CheckpointError) as err:
            train(compose_train([*DIGITS[:-1], "trainer.max_steps=3"]), run)
        message = str(err.value)
        assert "\n" not in message and message.startswith(str(ckpts))
        assert "could not be written" in message and "MiB free in" in message
        assert "previous file is intact" in message
        assert not list(ckpts.glob(".*tmp*"))
        if real:
            assert shutil.disk_usage(ckpts).free == free_before  # the half-written file is gone
        for name, digest in saved.items():
            assert _digest(ckpts / name) == digest
            assert torch.load(ckpts / name, weights_only=True)["step"] == 2


@pytest.mark.slow
def test_read_only_checkpoint_folder_names_path(tmp_path) -> None:
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    with _tmpfs(ckpts, "8m") as real:
        train(compose_train(DIGITS), run)
        if real:
            subprocess.run(["mount", "-o", "remount,ro", str(ckpts)], check=True)
        elif os.geteuid() != 0:
            ckpts.chmod(0o555)
        else:
            pytest.skip("root without mount: no way to make a read-only folder")
        try:
            with pytest.raises(
                CheckpointError,
                match=r"could not be written \(.*(Read-only|Permission denied).*MiB free in",
            ):
                train(compose_train([*DIGITS[:-1], "trainer.max_steps=3"]), run)
        finally:
            ckpts.chmod(0o755) if not real else None
        assert load_checkpoint(ckpts / "last.pt")["step"] == 2


def test_save_removes_temporary_whatever_fails(tmp_path, monkeypatch) -> None:
    def interrupted(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", {"x": 1})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- nothing trained
def test_batch_larger_than_training_set_refused_before_training(tmp_path) -> None:
    cfg = compose_train([*TINY, "data=digits", "trainer.batch_size=100000"])
    with pytest.raises(
        USER_ERRORS,
        match=r"trainer\.batch_size=100000 is larger than the training set \(1437 images.*at most 1437",
    ):
        train(cfg, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_batch_larger_than_training_set_takes_partial_batch_without_drop_last(tmp_path) -> None:
    cfg = compose_train(
        [
            *TINY,
            "data=digits",
            "trainer.batch_size=100000",
            "data.drop_last=false",
            "trainer.epochs=2",
        ]
    )
    train(cfg, tmp_path)
    assert read_metrics(tmp_path)["steps"] == 2
