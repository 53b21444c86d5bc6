"""Each ImageNet recipe's pipeline, shrunk to 32 fake 16-px images and one epoch, trains on the
CPU: LAMB with BCE and RandAugment (RSB), BlurPool with progressive resizing (FFCV), EMA with
TrivialAugment and erasing (torchvision V2)."""

from __future__ import annotations

import math

import pytest

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train

from .helpers import compose_train, read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# recipe -> (extra overrides, a key of the optimizer's per-parameter state); the stored config
# says which components ran
# (the warm-up recipes' 5 epochs shrunk into the one epoch; one-cycle has no separate warm-up)
WARM = ["sched.warmup_epochs=0.5"]
RECIPES = {
    "imagenet_resnet50": (WARM, "momentum_buffer"),
    "imagenet_resnet50_v2": (WARM, "momentum_buffer"),
    "imagenet_resnet50_rsb_a1": (WARM, "exp_avg"),
    "imagenet_resnet50_rsb_a2": (WARM, "exp_avg"),
    "imagenet_resnet50_rsb_a3": (WARM, "exp_avg"),
    # the ramp within the one epoch: trained at 8 px, validated at 16
    "imagenet_resnet50_ffcv": (
        [
            "data.progressive.min_size=8",
            "data.progressive.start_epoch=0",
            "data.progressive.end_epoch=1",
            "data.progressive.multiple=8",
        ],
        "momentum_buffer",
    ),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_pipeline_trains_one_tiny_epoch(recipe, recipe_smoke, tmp_path) -> None:
    extra, state_key = RECIPES[recipe]
    cfg = compose_train([f"+experiment={recipe}", *recipe_smoke, *extra])
    best = train(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "finished" and metrics["steps"] == 32 // 8
    assert math.isfinite(metrics["train_loss"]) and 0.0 <= best <= 100.0
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(state_key in s for s in state["optimizer"]["state"].values())
    assert cfg.trainer.batch_size == 8  # derived from the global batch on one process
    stored = state["config"]
    if "rsb" in recipe:
        assert "loss: bce" in stored and "name: lamb" in stored
    if "ffcv" in recipe:
        assert "blurpool: true" in stored and "min_size: 8" in stored
