"""Every numeric field has a range without NaN or infinity and with bounds a machine can serve;
schedule fields keep every rate in [0, peak] over the whole run; settings that train on nothing
are refused with the reason. One line naming the field, before any work."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from resnets.config import ConfigError
from resnets.engine.trainer import train
from resnets.limits import ELEMENT_RANGES, RANGES, in_range, limit_violation
from resnets.optim import SCHEDULERS, build_scheduler
from resnets.validation import validate

from .helpers import REPO, TINY, compose_train, run_script_inprocess

DIGITS = [*TINY, "data=digits", "trainer.epochs=2", "trainer.max_steps=2"]

# (overrides, the field the one line must name): each passed validation before limits.py
REFUSED = {
    "eps nan": (["optim=adamw", "optim.eps=nan"], "optim.eps=nan"),
    "widen nan": (["model=wide_resnet16_8", "model.widen_factor=nan"], "model.widen_factor=nan"),
    "mixup nan": (["trainer.mixup_alpha=nan"], "trainer.mixup_alpha=nan"),
    "mixup inf": (["trainer.mixup_alpha=inf"], "trainer.mixup_alpha=inf"),
    "image_size huge": (["data.image_size=100000"], "data.image_size=100000"),
    "image_size 1": (["data.image_size=1"], "data.image_size=1"),
    "classes huge": (["data.num_classes=100000000"], "data.num_classes=100000000"),
    "one class": (["data=fake", "data.num_classes=1"], "data.num_classes=1"),
    "gamma negative": (["sched=step", "sched.gamma=-1"], "sched.gamma=-1"),
    "step_size 0": (["sched=step", "sched.step_size=0"], "sched.step_size=0"),
    "milestone negative": (["sched=multistep", "sched.milestones=[-5]"], "sched.milestones=[-5"),
    "milestones unordered": (["sched=multistep", "sched.milestones=[5,1]"], "sched.milestones="),
    "final_div negative": (["sched=onecycle", "sched.final_div_factor=-1"], "sched.final_div_factor=-1"),
    "final_div zero": (["sched=onecycle", "sched.final_div_factor=0"], "sched.final_div_factor=0"),
    "warmup start negative": (["sched.warmup_start_factor=-1"], "sched.warmup_start_factor=-1"),
    "min_lr above lr": (["sched.min_lr=1.0"], "sched.min_lr=1.0 is not valid with optim.lr"),
    "pct_start 2": (["sched=onecycle", "sched.pct_start=2"], "sched.pct_start=2"),
    "seed 2**64": (["seed=18446744073709551616"], "seed=18446744073709551616"),
    "lr huge": (["optim.lr=1e308"], "optim.lr=1e+308"),
    "weight_decay huge": (["optim.weight_decay=1e308"], "optim.weight_decay=1e+308"),
    "cutout blanks": (["data.augment.cutout=100000"], "data.augment.cutout=100000"),
    "cutout = size": (["data.augment.cutout=32"], "data.augment.cutout=32 is not valid with data.image_size=32"),
    "padding blanks": (["data.augment.crop_padding=1000"], "data.augment.crop_padding=1000"),
    "repeated_aug huge": (["data.repeated_aug=1000000"], "data.repeated_aug=1000000"),
    "lr nan": (["optim.lr=nan"], "optim.lr=nan"),
    "head_lr_mult nan": (["optim.head_lr_mult=nan"], "optim.head_lr_mult=nan"),
    "grad_clip nan": (["trainer.grad_clip=nan"], "trainer.grad_clip=nan"),
    "label_smoothing nan": (["trainer.label_smoothing=nan"], "trainer.label_smoothing=nan"),
    "ema nan": (["trainer.ema_decay=nan"], "trainer.ema_decay=nan"),
    "mean inf": (["data.mean=[inf]"], "data.mean=[inf]"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_value_refused_in_one_line(case) -> None:
    overrides, needle = REFUSED[case]
    cfg = compose_train([*DIGITS, *overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert needle in message and "\n" not in message and "accepted" in message, message


def test_refused_through_train_py_before_any_step(tmp_path, capsys) -> None:
    status = run_script_inprocess("train", [*DIGITS, "optim.lr=nan", f"hydra.run.dir={tmp_path}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "optim.lr=nan" in lines[0], lines
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (REPO / "conf/experiment").glob("*.yaml"))
)
def test_every_shipped_recipe_is_within_limits(experiment) -> None:
    cfg = compose_train([f"+experiment={experiment}"])
    assert limit_violation(cfg) is None


def test_seed_range_is_one_both_numpy_and_torch_accept() -> None:
    import numpy as np

    top = int(RANGES["seed"][1])
    np.random.default_rng(top), np.random.seed(top), torch.manual_seed(top)
    with pytest.raises(ValueError):
        np.random.seed(top + 1)  # numpy's limit is the range's end


def _schedule_config(draw) -> dict:
    name = draw(st.sampled_from(sorted(SCHEDULERS)))
    epochs = draw(st.integers(1, 6))
    unit = st.floats(0, 1, exclude_min=True)
    return {
        "epochs": epochs,
        "lr": draw(st.floats(1e-4, RANGES["optim.lr"][1])),
        "head": draw(st.floats(0.01, 10)),
        "steps_per_epoch": draw(st.integers(1, 7)),
        "sched": {
            "name": name,
            "warmup_epochs": draw(st.floats(0, epochs, exclude_max=True))
            if name != "onecycle"
            else 0.0,
            "warmup_method": draw(st.sampled_from(["linear", "constant"])),
            "warmup_start_factor": draw(st.floats(0, 1)),
            "min_lr_fraction": draw(st.floats(0, 1)),
            "step_size": draw(st.floats(0.01, 10)),
            "milestones": sorted(draw(st.lists(st.floats(0.01, 10), min_size=1, max_size=3))),
            "gamma": draw(unit),
            "pct_start": draw(st.floats(0.01, 0.99)),
            "div_factor": draw(st.floats(1, 1e6)),
            "final_div_factor": draw(st.floats(1, 1e12)),
        },
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_schedule_config)())
def test_every_schedule_stays_within_zero_and_peak_over_the_whole_run(drawn) -> None:
    """Stepping the public factory's schedule through every step of the run: each group's rate is
    finite and in [0, its peak] for any in-range schedule fields."""
    sched = dict(drawn["sched"])
    sched["min_lr"] = sched.pop("min_lr_fraction") * drawn["lr"]
    lr, head = drawn["lr"], drawn["head"]
    backbone, classifier = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD(
        [
            {"params": [backbone], "lr": lr},
            {"params": [classifier], "lr": lr * head, "lr_mult": head},
        ],
        lr=lr,
    )
    cfg = OmegaConf.create(sched)
    scheduler = build_scheduler(
        opt, cfg, steps_per_epoch=drawn["steps_per_epoch"], epochs=drawn["epochs"], lr=lr
    )
    total = drawn["steps_per_epoch"] * drawn["epochs"]
    peaks = [lr, lr * head]
    for _ in range(total):
        for group, peak in zip(opt.param_groups, peaks, strict=True):
            rate = group["lr"]
            assert math.isfinite(rate) and 0.0 <= rate <= peak * (1 + 1e-9), (sched, rate, peak)
        opt.step()
        scheduler.step()


NUMERIC = sorted(RANGES) + sorted(ELEMENT_RANGES)
HOSTILE_VALUES = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e308",
    "100000000000000000000",
    "abc",
    "true",
    "0.5",
    "1",
    "8",
]


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(NUMERIC), value=st.sampled_from(HOSTILE_VALUES))
def test_any_value_of_any_numeric_field_is_refused_in_one_line_or_in_range(field, value) -> None:
    """Composition refuses wrong types (cli_errors turns that into one line); what composes is
    either refused by validate in one line naming the field, or inside the field's range."""
    text = f"[{value}]" if field in ELEMENT_RANGES else value
    prefix = ["data=fake"] if field == "data.num_classes" else []
    try:
        cfg = compose_train([*DIGITS, *prefix, f"{field}={text}"])
    except Exception as err:  # Hydra's type errors: a ConfigCompositionException naming the field
        assert field in str(err) or field in str(err.__cause__), err
        return
    try:
        validate(cfg)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and "accepted" in message, message
        return
    found = OmegaConf.select(cfg, field)
    values = list(found) if field in ELEMENT_RANGES else [found]
    bounds = ELEMENT_RANGES.get(field) or RANGES[field]
    assert all(in_range(v, bounds) for v in values), (field, value)


# the ends of the ranges a real run is most likely to trip on: a few real steps each
EDGES = [
    ["data.image_size=8", "data.augment.crop_padding=4", "data.augment.cutout=7"],
    ["trainer.mixup_alpha=100", "trainer.cutmix_alpha=100", "trainer.label_smoothing=0.99"],
    [
        "optim=adamw",
        "optim.eps=1",
        "optim.weight_decay=1",
        "optim.head_lr_mult=100",
        "optim.lr=0.01",
    ],
    [
        "sched=onecycle",
        "sched.div_factor=1000000",
        "sched.final_div_factor=1e12",
        "trainer.grad_clip=1e-6",
    ],
    ["sched=step", "sched.step_size=0.01", "sched.gamma=1e-3", "seed=4294967295"],
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", EDGES, ids=lambda o: o[0])
def test_range_edges_train_with_finite_rates_and_losses(tmp_path, overrides) -> None:
    cfg = compose_train([*DIGITS, "trainer.eval_every=100", *overrides])
    validate(cfg)
    train(cfg, tmp_path)
    from .helpers import read_metrics

    metrics = read_metrics(tmp_path)
    figures = [v for k, v in metrics.items() if isinstance(v, float) and ("loss" in k or "lr" in k)]
    assert figures and all(math.isfinite(v) for v in figures), metrics
