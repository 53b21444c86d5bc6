"""Values that used to end in tracebacks or be silently replaced: one line naming the field, and
train.py maps the error to exit status 2 before any training."""

from __future__ import annotations

import pytest
import torch

from resnets.engine.checkpoint import CheckpointError, load_checkpoint
from resnets.engine.cli import USER_ERRORS
from resnets.engine.trainer import train

from .helpers import TINY, compose_train

DIGITS = [*TINY, "data=digits", "trainer.epochs=2", "trainer.max_steps=1"]
FAKE = [*TINY, "data=fake", "trainer.epochs=2", "trainer.max_steps=1"]

# (overrides, what the one-line message must contain)
REFUSED = {
    "workers": (["trainer.workers=-1"], "trainer.workers=-1"),
    "eval_batch_size": (["trainer.eval_batch_size=-5"], "trainer.eval_batch_size=-5"),
    "crop_padding": (["data.augment.crop_padding=-3"], "data.augment.crop_padding=-3"),
    "cutout": (["data.augment.cutout=-1"], "data.augment.cutout=-1"),
    "momentum": (["optim.momentum=-1"], "optim.momentum=-1"),
    "nesterov without momentum": (
        ["optim.nesterov=true", "optim.momentum=0"],
        "optim.nesterov=true is not valid with optim.momentum=0",
    ),
    "betas": (["optim=adamw", "optim.betas=[2,3]"], "optim.betas=[2.0, 3.0]"),
    "betas length": (["optim=adamw", "optim.betas=[0.9]"], "optim.betas=[0.9]"),
    "eps": (["optim.eps=0"], "optim.eps=0"),
    "weight_decay": (["optim.weight_decay=-1"], "optim.weight_decay=-1"),
    "mean length": (["data.mean=[0.5,0.5,0.5]"], "data.mean=[0.5, 0.5, 0.5] has 3 values"),
    "std length": (["data.std=[0.2,0.2]"], "data.std=[0.2, 0.2] has 2 values"),
    "std zero": (["data.std=[0]"], "data.std=[0"),
    "val_fraction": (["data.val_fraction=0"], "data.val_fraction=0"),
    "out_indices": (["model.out_indices=[1,2]"], "model.out_indices=[1, 2]"),
    "include_top": (["model.include_top=false"], "model.include_top=false"),
    "in_chans": (["model.in_chans=3"], "model.in_chans=3"),
    "groups on basic": (["model.groups=4"], "model.groups=4"),
    "width on basic": (["model.width_per_group=128"], "model.width_per_group=128"),
    "base_channels": (["model.base_channels=0"], "model.base_channels=0"),
    "warm-up longer": (["sched=cosine", "sched.warmup_epochs=5"], "sched.warmup_epochs=5"),
    "prefetch_factor": (["data.prefetch_factor=0"], "data.prefetch_factor=0"),
    "max_bad_images": (["data.max_bad_images=2"], "data.max_bad_images=2"),
    "repeated_aug": (["data.repeated_aug=-1"], "data.repeated_aug=-1 is not valid; accepted: 0"),
    "batch > data": (["trainer.batch_size=100000"], "trainer.batch_size=100000"),
}
REFUSED_FAKE = {
    "fake_size": (["data.fake_size=0"], "data.fake_size=0"),
    "num_classes": (["data.num_classes=0"], "data.num_classes=0"),
    "in_chans fake": (["model.in_chans=1"], "model.in_chans=1"),
}


@pytest.mark.parametrize(
    "case", [*(("digits", k) for k in REFUSED), *(("fake", k) for k in REFUSED_FAKE)]
)
def test_bad_value_refused_in_one_line_before_training(tmp_path, case) -> None:
    base, key = case
    overrides, needle = (REFUSED if base == "digits" else REFUSED_FAKE)[key]
    cfg = compose_train([*(DIGITS if base == "digits" else FAKE), *overrides])
    with pytest.raises(USER_ERRORS) as err:
        train(cfg, tmp_path)
    message = str(err.value)
    assert needle in message and "\n" not in message, message
    assert not (tmp_path / "checkpoints").exists()  # refused before any step or save


def _checkpoint(tmp_path, **changes) -> tuple:
    train(compose_train(DIGITS), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state.update(changes)
    torch.save(state, last)
    return last, state


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(config="model: [unclosed"), r"its stored config is not valid YAML"),
        (dict(config="{}"), r"its stored config has no model\.name and data\.name"),
        (dict(config="just text"), r"its stored config has no model\.name"),
        (dict(config=7), r"its stored config has no model\.name"),
        (dict(model=[1, 2]), r"'model' is not a state dict of tensors \(found list\)"),
        (dict(model={}), r"'model' is not a state dict of tensors \(found an empty dict\)"),
        (dict(model={"w": 3}), r"'model' is not a state dict of tensors \(found dict\)"),
    ],
)
def test_damaged_checkpoint_contents_are_one_line(tmp_path, changes, message) -> None:
    last, _ = _checkpoint(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=rf"{last}: {message}"):
        load_checkpoint(last)
    # a resuming run reports the same and moves the file aside
    with pytest.raises(CheckpointError, match=message):
        train(compose_train(DIGITS), tmp_path)


def test_damaged_checkpoint_config_through_evaluate(tmp_path) -> None:
    from resnets.engine.evaluation import state_from_file

    last, _ = _checkpoint(tmp_path, config="{}")
    with pytest.raises(CheckpointError, match=r"its stored config has no model\.name"):
        state_from_file(last, use_ema=False)
