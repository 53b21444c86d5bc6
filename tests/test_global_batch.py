"""trainer.global_batch_size: a recipe keeps its global batch on any number of processes."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from resnets.config import ConfigError, TrainerConfig
from resnets.engine.batching import derive_batch_size

from .helpers import compose_train


@pytest.mark.parametrize(
    ("recipe", "total"),
    [
        ("imagenet_resnet50", 256),
        ("imagenet_resnet50_v2", 1024),
        ("imagenet_resnet50_rsb_a1", 2048),
        ("imagenet_resnet50_rsb_a2", 2048),
        ("imagenet_resnet50_rsb_a3", 2048),
        ("imagenet_resnet50_ffcv", 4096),
    ],
)
def test_a_recipe_is_the_same_global_batch_on_1_4_or_8_gpus(recipe, total, caplog) -> None:
    for world in (1, 4, 8):
        cfg = compose_train([f"+experiment={recipe}"])
        assert cfg.optim.base_batch_size == total  # lr stated for the global batch
        with caplog.at_level(logging.INFO, logger="resnets.engine.batching"):
            per_rank = derive_batch_size(cfg.trainer, world)
        assert per_rank * world == total and cfg.trainer.batch_size == per_rank
        assert f"trainer.global_batch_size {total}: {per_rank} images a process x {world}" in (
            caplog.records[-1].getMessage()
        )


def test_accumulation_splits_the_per_process_batch() -> None:
    t = OmegaConf.structured(TrainerConfig(global_batch_size=2048, accumulate_grad_batches=4))
    assert derive_batch_size(t, 2) == 256


def test_a_global_batch_that_does_not_divide_is_refused_in_one_line() -> None:
    t = OmegaConf.structured(TrainerConfig(global_batch_size=256, accumulate_grad_batches=1))
    with pytest.raises(ConfigError) as err:
        derive_batch_size(t, 3)
    assert str(err.value) == (
        "trainer.global_batch_size=256 is not valid with 3 process(es) x "
        "trainer.accumulate_grad_batches=1; accepted: a multiple of 3 (e.g. 255), or another "
        "world size or accumulation"
    )


def test_without_a_global_batch_the_batch_is_per_process() -> None:
    t = OmegaConf.structured(TrainerConfig(batch_size=96))
    assert derive_batch_size(t, 8) == 96 and t.batch_size == 96


def test_the_trainer_logs_the_global_batch_and_lr_it_derived(tmp_path, caplog) -> None:
    from resnets.engine.trainer import train

    from .test_training_correctness import FAST

    args = [*FAST, "trainer.global_batch_size=8", "trainer.accumulate_grad_batches=2"]
    args += ["trainer.max_steps=1", "optim.base_batch_size=16", "optim.lr=0.1"]
    with caplog.at_level(logging.INFO):
        train(compose_train(args), tmp_path)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "trainer.global_batch_size 8: 4 images a process x 1 process(es) x 2 accumulated" in text
    assert "global batch 8 (trainer.batch_size 4 x 1 ranks x 2 accumulated), lr 0.05" in text
