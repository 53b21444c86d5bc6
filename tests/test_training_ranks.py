"""Several gloo processes against one process: the shared remainder rule, and each rank's own
random stream across a resume."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train

from .helpers import compose_train
from .ranks import train_on_ranks
from .test_training_correctness import FAST

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def train_here(overrides: list[str], run_dir) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: the same kernels, the same rounding
    try:
        train(compose_train(overrides), run_dir)
    finally:
        torch.set_num_threads(threads)


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    images=st.integers(17, 61),
    batch=st.integers(2, 5),
    accumulate=st.sampled_from([1, 2]),
    drop_last=st.booleans(),
)
def test_accumulation_n_equals_n_ranks_for_any_number_of_images(
    tmp_path_factory, images, batch, accumulate, drop_last
) -> None:
    """2 ranks each accumulating `accumulate` give the weights of 1 process accumulating
    2 x `accumulate`, whatever the remainder of the epoch (dropped, or one short step)."""
    per_step = batch * accumulate * 2
    if images < per_step or (not drop_last and images < 2 * per_step):
        drop_last = True  # (too few images for a step is refused; tested elsewhere)
    common = [
        *FAST,
        f"data.fake_size={images}",
        f"trainer.batch_size={batch}",
        f"data.drop_last={str(drop_last).lower()}",
        "trainer.epochs=2",
        "trainer.log_every=1",
    ]
    base = tmp_path_factory.mktemp("equal")
    train_on_ranks(2, [*common, f"trainer.accumulate_grad_batches={accumulate}"], base / "ranks")
    train_here([*common, f"trainer.accumulate_grad_batches={2 * accumulate}"], base / "one")
    ranks, one = load_checkpoint(base / "ranks/checkpoints/last.pt"), weights(base / "one")
    assert ranks["step"] == load_checkpoint(base / "one/checkpoints/last.pt")["step"] > 0
    worst = 0.0
    for name, value in one.items():
        if "running_" in name or "num_batches_tracked" in name:
            continue  # DDP keeps rank 0's batch-norm statistics
        worst = max(worst, (ranks["model"][name] - value).abs().max().item())
    assert worst < 1e-5, worst
    print(
        f"images={images} batch={batch} accumulate={accumulate} drop_last={drop_last}: "
        f"{ranks['step']} steps, max |difference| {worst:.2e}"
    )


def test_each_rank_keeps_its_own_random_stream_across_a_resume(tmp_path, caplog) -> None:
    """Mixup draws from each rank's generator. Only rank 0's generators used to be saved and
    every rank restored them, so after a resume both ranks drew the same numbers."""
    common = [*FAST, "trainer.epochs=2", "trainer.mixup_alpha=0.4", "trainer.log_every=1"]
    train_on_ranks(2, common, tmp_path / "straight")
    train_on_ranks(2, [*common, "trainer.max_steps=7"], tmp_path / "resumed")
    partial = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert partial["step"] == 7 and len(partial["rank_rng"]) == 2
    assert not torch.equal(partial["rank_rng"][0]["torch"], partial["rank_rng"][1]["torch"])
    train_on_ranks(2, common, tmp_path / "resumed")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for name in a:
        assert torch.equal(a[name], b[name]), name

    # the same checkpoint on one process: every setting but the world size continues
    single = tmp_path / "single"
    (single / "checkpoints").mkdir(parents=True)
    (single / "checkpoints/last.pt").write_bytes(
        (tmp_path / "resumed/checkpoints/last.pt").read_bytes()
    )
    caplog.set_level(logging.INFO)
    train_here([*common, "trainer.epochs=3"], single)
    assert (
        "checkpoint holds random generators of 2 process(es), this run has 1: each rank "
        "reseeded from (seed, step, rank)" in caplog.text
    )
    assert "processes (world size) 2 -> 1, trainer.epochs 2 -> 3" in caplog.text
    assert load_checkpoint(single / "checkpoints/last.pt")["step"] == 10 + 10  # 5 + 5, then 10
