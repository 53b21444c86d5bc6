"""Repeated augmentation (`data.repeated_aug`): torchvision's RASampler rule inside our epoch plan.

The reference per-rank lists are torchvision's RASampler (references/classification/sampler.py)
written out here from its definition: the permutation with each index `repeats` times in a row,
padded from its start to a multiple of the world size, rank r taking elements r, r+W, ...
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from resnets.config import DataConfig
from resnets.data import DataError, build_data
from resnets.data.loaders import PlannedBatches, TensorLoader, epoch_generator
from resnets.data.plan import EpochPlan
from resnets.data.repeated import rank_streams, repeated_order

from .helpers import TINY, compose_train, read_metrics, run_script_inprocess

FEW = settings(max_examples=40, deadline=None)


def torchvision_rank_list(perm: list[int], repeats: int, world: int, rank: int) -> list[int]:
    """RASampler.__iter__ before its truncation (num_samples per rank)."""
    num_samples = -(-len(perm) * repeats // world)
    total = num_samples * world
    indices = [i for i in perm for _ in range(repeats)]
    indices += indices[: total - len(indices)]
    return indices[rank:total:world]


def rank_samples(n, *, seed, epoch, repeats, batch, accumulate, world, drop_last, start=0):
    """Each rank's sample indices for one epoch from `start`, from the real batch sampler."""
    out = []
    for rank in range(world):
        sampler = PlannedBatches(
            n,
            seed=seed,
            batch_size=batch,
            accumulate=accumulate,
            rank=rank,
            world_size=world,
            drop_last=drop_last,
            repeats=repeats,
        )
        sampler.set_epoch(epoch, start_sample=start)
        out.append([index for b in sampler for index, _ in b])
    return out


layouts = st.fixed_dictionaries(
    {
        "n": st.integers(10, 300),
        "repeats": st.integers(1, 4),
        "world": st.integers(1, 4),
        "batch": st.integers(1, 9),
        "accumulate": st.integers(1, 3),
        "drop_last": st.booleans(),
        "seed": st.integers(0, 2**31),
        "epoch": st.integers(0, 50),
    }
)


def _samples(layout, **changes):
    args = {**layout, **changes}
    return rank_samples(
        args["n"],
        seed=args["seed"],
        epoch=args["epoch"],
        repeats=args["repeats"],
        batch=args["batch"],
        accumulate=args["accumulate"],
        world=args["world"],
        drop_last=args["drop_last"],
        start=args.get("start", 0),
    )


@FEW
@given(layouts)
def test_each_rank_gets_torchvisions_list_and_the_epoch_keeps_its_steps(layout) -> None:
    n, repeats, world = layout["n"], layout["repeats"], layout["world"]
    ranks = _samples(layout)
    plain = _samples(layout, repeats=0)
    # every rank the same count, and the count of an epoch without repeated augmentation
    assert {len(r) for r in ranks} == {len(plain[0])} and {len(r) for r in plain} == {len(plain[0])}
    if repeats == 1:  # one copy is off: the plain epoch, batches dealt whole
        assert ranks == plain
        return
    perm = torch.randperm(n, generator=epoch_generator(layout["seed"], layout["epoch"])).tolist()
    for rank, got in enumerate(ranks):
        assert got == torchvision_rank_list(perm, repeats, world, rank)[: len(got)]


@FEW
@given(layouts)
def test_copies_spread_over_ranks_and_counts_are_repeats(layout) -> None:
    n, repeats, world = layout["n"], layout["repeats"], layout["world"]
    ranks = _samples(layout)
    taken = len(ranks[0]) * world  # all ranks together
    counts = Counter(i for r in ranks for i in r)
    if not taken:  # a batch larger than the epoch with drop_last: nothing on any rank
        assert not counts
        return
    assert all(0 <= i < n for i in counts)
    # a prefix of the repeated permutation: whole groups of `repeats` and at most one cut group
    assert max(counts.values()) <= repeats
    assert sum(1 for c in counts.values() if c != repeats) <= 1
    assert len(counts) == -(-taken // repeats)
    # copies of an image sit on different ranks (as many ranks as there are copies, up to W)
    holders: dict[int, set[int]] = {}
    for rank, r in enumerate(ranks):
        for i in r:
            holders.setdefault(i, set()).add(rank)
    full = [i for i, c in counts.items() if c == repeats]
    assert all(len(holders[i]) == min(repeats, world) for i in full)


@FEW
@given(st.integers(1, 300), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31))
def test_untruncated_streams_cover_the_dataset_repeats_times(n, repeats, world, seed) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    length = -(-n * repeats // world)  # torchvision's num_samples
    streams = rank_streams(order, repeats, world, length)
    assert streams.shape == (world, length)
    counts = Counter(streams.flatten().tolist())
    assert set(counts) == set(range(n))
    # padding repeats the first few groups: total - n x repeats extra copies, no index short
    assert min(counts.values()) >= repeats
    assert sum(counts.values()) - n * repeats == world * length - n * repeats < world


@FEW
@given(layouts)
def test_same_seed_and_epoch_same_order_other_epoch_other_order(layout) -> None:
    first, again = _samples(layout), _samples(layout)
    assert first == again
    other = _samples(layout, epoch=layout["epoch"] + 1)
    if len(first[0]) * layout["world"] >= 2 * layout["repeats"]:  # at least two images
        assert other != first


@FEW
@given(layouts, st.integers(0, 10), st.integers(1, 9), st.integers(1, 3))
def test_resume_continues_every_rank_stream(layout, steps, new_batch, new_accumulate) -> None:
    """From a step boundary the rest of the epoch is what the uninterrupted run yields; with
    another batch size or accumulation (same world size) every rank continues its stream."""
    whole = _samples(layout)
    per_step = layout["batch"] * layout["accumulate"] * layout["world"]
    start = min(steps, layout["n"] // per_step) * per_step
    rest = _samples(layout, start=start)
    done = start // layout["world"]
    for r in range(layout["world"]):
        assert rest[r] == whole[r][done:]
    if layout["repeats"] < 2:
        return  # the plain epoch's resume is plan.py's (tests/test_training_correctness.py)
    relaid = _samples(layout, start=start, batch=new_batch, accumulate=new_accumulate)
    full = _samples({**layout, "drop_last": False, "batch": 1, "accumulate": 1})
    for r in range(layout["world"]):
        assert relaid[r] == full[r][done : done + len(relaid[r])]


@pytest.mark.parametrize("world", [1, 3])
def test_tensor_loader_takes_the_same_samples_as_the_batch_sampler(world) -> None:
    n, batch, repeats = 50, 4, 3
    labels = torch.arange(n)  # a sample's label is its index
    expected = rank_samples(
        n, seed=5, epoch=2, repeats=repeats, batch=batch, accumulate=2, world=world, drop_last=False
    )
    for rank in range(world):
        loader = TensorLoader(
            torch.zeros(n, 1, 4, 4, dtype=torch.uint8),
            labels,
            batch_size=batch,
            mean=[0.5],
            std=[0.5],
            device="cpu",
            train=True,
            seed=5,
            rank=rank,
            world_size=world,
            accumulate=2,
            drop_last=False,
            repeats=repeats,
        )
        loader.set_epoch(2)
        assert [int(y) for _, ys in loader for y in ys] == expected[rank]


@pytest.mark.parametrize("world", [1, 2])
def test_tensor_loader_resumed_mid_epoch_yields_the_same_augmented_batches(world) -> None:
    n, batch = 70, 5
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    for rank in range(world):
        loader = TensorLoader(
            images.to(torch.uint8),
            torch.arange(n),
            batch_size=batch,
            mean=[0.5] * 3,
            std=[0.25] * 3,
            device="cpu",
            train=True,
            seed=3,
            crop_padding=2,
            hflip=True,
            cutout=3,
            rank=rank,
            world_size=world,
            repeats=3,
        )
        loader.set_epoch(4)
        whole = list(loader)
        loader.set_epoch(4, start_sample=3 * batch * world)  # after 3 steps
        rest = list(loader)
        assert len(rest) == len(whole) - 3 > 0
        for (x, y), (x0, y0) in zip(rest, whole[3:], strict=True):
            assert torch.equal(y, y0) and torch.equal(x, x0)
        # copies of one image in a batch get their own crops and flips
        x, y = whole[0]
        if world == 1:
            assert y[0] == y[1] == y[2] and not torch.equal(x[0], x[1])


def test_plan_positions_are_unchanged_by_repeats() -> None:
    """Repeated augmentation changes which image sits at a position, not the positions: the
    per-rank micro-batch sizes are those of the plan."""
    plan = EpochPlan(37, batch_size=4, accumulate=2, world_size=3, drop_last=False)
    got = rank_samples(
        37, seed=0, epoch=0, repeats=4, batch=4, accumulate=2, world=3, drop_last=False
    )
    assert len(got[1]) == sum(size for _, size in plan.rank_micro_batches(1))


@pytest.mark.parametrize("value", [-1, -3])
def test_bad_repeated_aug_is_one_line(value) -> None:
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig), {"name": "digits", "repeated_aug": value}
    )
    with pytest.raises(DataError) as err:
        build_data(cfg, batch_size=8)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"data.repeated_aug={value} is not valid; accepted: 0 or 1 (off)")


def test_bad_repeated_aug_exits_2_from_train_py(tmp_path) -> None:
    code = run_script_inprocess(
        "train", [*TINY, "data=digits", "data.repeated_aug=-2", f"hydra.run.dir={tmp_path}"]
    )
    assert code == 2


def test_v2_recipe_turns_it_on_with_torchvisions_four_copies() -> None:
    assert compose_train(["+experiment=imagenet_resnet50_v2"]).data.repeated_aug == 4
    assert compose_train([]).data.repeated_aug == 0


@pytest.mark.slow
def test_one_epoch_on_digits_with_repeated_augmentation(tmp_path, monkeypatch) -> None:
    from resnets.data import loaders
    from resnets.engine.trainer import train

    calls = []

    def spy(order, plan, start=0, *, repeats):
        calls.append(repeats)
        return repeated_order(order, plan, start, repeats=repeats)

    monkeypatch.setattr(loaders, "repeated_order", spy)
    train(
        compose_train([*TINY, "data=digits", "trainer.epochs=1", "data.repeated_aug=3"]), tmp_path
    )
    metrics = read_metrics(tmp_path)
    assert calls == [3]  # the epoch's order was the repeated one
    # the plain epoch's steps (1,437 training digits, batch 64); a third as many distinct images
    assert metrics["steps"] == EpochPlan(1437, batch_size=64).steps() == 22
    assert metrics["val_top1"] > 20.0  # it learns (chance is 10%)
