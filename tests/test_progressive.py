"""Progressive resizing (data.progressive): FFCV's sizes per epoch, every loader, resume
mid-schedule, and torch.compile compiling once per size."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnets.data import DataError, progressive
from resnets.engine import loop as trainer_module  # the loop forwards each micro-batch
from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train
from resnets.validation import validate

from .helpers import compose_train
from .test_training_correctness import FAST

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ffcv_resolution(epoch, min_res, max_res, end_ramp, start_ramp) -> int:
    """ffcv-imagenet train_imagenet.py get_resolution, restated with numpy as it computes it."""
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    return int(np.round(interp[0] / 32)) * 32


def _data(min_size, start, end, image_size=192, multiple=32) -> dict:
    return {
        "image_size": image_size,
        "progressive": {
            "min_size": min_size,
            "start_epoch": start,
            "end_epoch": end,
            "multiple": multiple,
        },
    }


# ffcv-imagenet rn50_configs: epochs -> (start_ramp, end_ramp), min_res 160, max_res 192
FFCV_RAMPS = {16: (11, 13), 24: (17, 20), 32: (23, 27), 40: (29, 34), 56: (41, 48), 88: (65, 76)}


@pytest.mark.parametrize("epochs", sorted(FFCV_RAMPS))
def test_sizes_per_epoch_are_ffcvs(epochs) -> None:
    start, end = FFCV_RAMPS[epochs]
    ours = progressive.sizes(_data(160, start, end), epochs)
    assert ours == [ffcv_resolution(e, 160, 192, end, start) for e in range(epochs)]


def test_the_88_epoch_schedule_switches_at_the_ramps_midpoint() -> None:
    # interpolation reaches 176 (rounds to 192) half-way through epochs 65..76: from epoch 71 on
    assert progressive.sizes(_data(160, 65, 76), 88) == [160] * 71 + [192] * 17


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    min_size=st.integers(8, 256),
    grow=st.integers(0, 256),
    start=st.integers(0, 30),
    ramp=st.integers(0, 30),
    multiple=st.sampled_from([1, 8, 16, 32]),
)
def test_sizes_never_shrink_and_stay_between_the_ends(min_size, grow, start, ramp, multiple):
    data = _data(min_size, start, start + ramp, image_size=min_size + grow, multiple=multiple)
    sizes = progressive.sizes(data, start + ramp + 3)
    assert sizes[0] == min_size and sizes[-1] == min_size + grow
    assert sizes == sorted(sizes)  # the size only grows
    for e, size in enumerate(sizes):
        assert size == progressive.sizes(data, e + 1)[e]  # a function of the epoch alone
        if start < e < start + ramp:  # a multiple, or an end the rounding would have left
            assert size % multiple == 0 or size in (min_size, min_size + grow)


def test_sizes_in_between_round_to_the_multiple() -> None:
    # 128 + 96 (e - 2) / 6: 144 and 208 are half-way and round to even multiples (numpy's rule)
    sizes = progressive.sizes(_data(128, 2, 8, image_size=224), 10)
    assert sizes == [128, 128, 128, 128, 160, 192, 192, 192, 224, 224]
    assert progressive.sizes({"image_size": 32}, 3) == [32, 32, 32]  # off


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.progressive.min_size=64",
            "data.progressive.min_size=64 is not valid; accepted: null (off) or a size in "
            "1..data.image_size (32), the size it grows to",
        ),
        (
            "data.progressive.start_epoch=3",
            "data.progressive.end_epoch=0 is not valid with data.progressive.start_epoch=3; "
            "accepted: 0 <= start_epoch <= end_epoch",
        ),
    ],
)
def test_bad_schedules_are_refused_in_one_line(override, message) -> None:
    cfg = compose_train(["data.progressive.min_size=16", override])
    with pytest.raises(DataError) as err:
        validate(cfg)
    assert str(err.value) == message


def _record_sizes(monkeypatch) -> list[int]:
    """The image size of every micro-batch the trainer forwards."""
    seen: list[int] = []
    real = trainer_module.forward_backward

    def spy(forward, images, *args, **kwargs):
        seen.append(images.shape[-1])
        return real(forward, images, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "forward_backward", spy)
    return seen


GROWING = [
    *FAST,
    "data.image_size=16",
    "data.fake_size=24",
    "trainer.epochs=3",
    "data.progressive.min_size=8",
    "data.progressive.start_epoch=0",
    "data.progressive.end_epoch=2",
    "data.progressive.multiple=4",
]


@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_every_loader_trains_each_epoch_at_its_size(monkeypatch, tmp_path, caplog, loader) -> None:
    seen = _record_sizes(monkeypatch)
    with caplog.at_level(logging.INFO, logger="resnets.data.progressive"):
        train(compose_train([*GROWING, f"data.loader={loader}"]), tmp_path)
    per_epoch = 24 // 4
    assert seen == [8] * per_epoch + [12] * per_epoch + [16] * per_epoch
    said = [r.getMessage() for r in caplog.records if "progressive resizing" in r.getMessage()]
    assert len(said) == 3 and "training at 12 px from epoch 2 (sizes 8/12/16" in said[1]


@pytest.mark.slow
def test_resume_mid_schedule_trains_the_same_sizes_to_the_same_weights(
    monkeypatch, tmp_path
) -> None:
    seen = _record_sizes(monkeypatch)
    train(compose_train(GROWING), tmp_path / "straight")
    straight, seen[:] = list(seen), []
    # stop in the middle of epoch 2 (12 px), then resume
    train(compose_train([*GROWING, "trainer.max_steps=9"]), tmp_path / "resumed")
    train(compose_train(GROWING), tmp_path / "resumed")
    assert seen == straight
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert a["step"] == b["step"] == 18
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


@pytest.mark.slow
def test_compile_compiles_once_per_size(caplog) -> None:
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    data = _data(8, 1, 5, image_size=24, multiple=8)
    epochs = 8
    counter = CompileCounter()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
    compiled = torch.compile(model, backend=counter, dynamic=False)
    loader = [(torch.rand(2, 3, 24, 24), torch.zeros(2))]
    with caplog.at_level(logging.INFO, logger="resnets.data.progressive"):
        for epoch in range(epochs):
            for images, _ in progressive.for_epoch(loader, data, epoch, epochs):
                compiled(images)
    sizes = progressive.sizes(data, epochs)
    assert sorted(set(sizes)) == [8, 16, 24]
    assert counter.frame_count == 3  # one graph per size, none more when a size comes back
    said = [r.getMessage() for r in caplog.records if "progressive resizing" in r.getMessage()]
    assert len(said) == 3 and "1 graph(s) compiled so far" in said[1]
    assert torch._dynamo.config.recompile_limit >= 3
    torch._dynamo.reset()


def test_fixres_evaluation_at_another_test_size_keeps_its_own_report(tmp_path) -> None:
    """evaluate.py data.val_crop=... scores at a test resolution above the training one (FixRes,
    Touvron et al. 2019) into a report of its own, which names the size."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from resnets.engine.evaluation import report_name

    base = OmegaConf.create({"use_ema": False, "tta": "none", "precision": "32", "data": {}})
    fixres = OmegaConf.merge(base, {"data": {"val_crop": 256, "val_resize": 292}})
    assert report_name(base, Path("best.pt"), "val", False) == "best"
    assert report_name(fixres, Path("best.pt"), "val", False) == "best-256px"
