"""Each field with a fixed set of values reads it from the table of factories that act on it: the
accepted values are that table's keys, every key builds, and a new entry needs no other edit."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import resnets.data as data_pkg
import resnets.optim as optim_mod
import resnets.runtime as runtime_mod
from resnets.config import ConfigError
from resnets.data import LOADERS, build_data, dataset_names
from resnets.data.datasets import ARRAY_DATASETS, make_fake
from resnets.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from resnets.runtime import DEVICE_DEFAULTS, PRECISIONS, autocast
from resnets.validation import CHOICES, choices, validate

from .helpers import REPO, compose_train


def _tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_accepted_values_are_the_tables_keys() -> None:
    accepted = choices()
    assert accepted["optim.name"] == tuple(OPTIMIZERS)
    assert accepted["sched.name"] == tuple(SCHEDULERS)
    assert accepted["trainer.precision"] == ("auto", *PRECISIONS)
    assert accepted["trainer.device"] == ("auto", *DEVICE_DEFAULTS)
    assert accepted["data.loader"] == ("auto", *LOADERS)
    assert accepted["data.name"] == dataset_names()
    assert accepted["sched.warmup_method"] == tuple(optim_mod.WARMUPS)
    assert accepted["data.split"] == ("val", "test", "train")
    # the fixed lists are only for fields no factory table owns
    assert not set(CHOICES) & {"optim.name", "sched.name", "trainer.precision", "data.name"}
    assert set(CHOICES) == {"trainer.dist_backend", "trainer.compile_mode"}


def test_every_dataset_has_a_config_group_option_and_no_option_lacks_a_dataset() -> None:
    assert sorted(dataset_names()) == sorted(p.stem for p in (REPO / "conf/data").glob("*.yaml"))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_builds_and_steps(name: str) -> None:
    cfg = compose_train([f"optim.name={name}"])
    validate(cfg)
    model = _tiny()
    opt = build_optimizer(model, cfg.optim)
    before = model[0].weight.detach().clone()
    model(torch.randn(2, 3, 8, 8)).square().mean().backward()
    opt.step()
    assert not torch.equal(before, model[0].weight)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_schedule_builds_and_steps(name: str) -> None:
    # one-cycle has its own rising phase: a warm-up there is refused (test_ignored_values.py)
    warmup = ["sched.warmup_epochs=1"] if SCHEDULERS[name].warms_up else []
    cfg = compose_train([f"sched.name={name}", *warmup, "trainer.epochs=5"])
    validate(cfg)
    opt = build_optimizer(_tiny(), cfg.optim)
    sched = build_scheduler(opt, cfg.sched, steps_per_epoch=4, epochs=5, lr=cfg.optim.lr)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0 <= r <= cfg.optim.lr * 1.000001 for r in rates) and max(rates) > 0


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_every_precision_runs_or_is_refused_on_cpu(name: str) -> None:
    cfg = compose_train([f"trainer.precision={name}", "trainer.device=cpu"])
    validate(cfg)
    if PRECISIONS[name].needs_cuda:
        with pytest.raises(ConfigError, match=rf"trainer\.precision={name!r} needs CUDA"):
            runtime_mod.check_runtime(cfg.trainer, cfg.data, cuda_available=False)
        return
    runtime_mod.check_runtime(cfg.trainer, cfg.data, cuda_available=False)
    with autocast(torch.device("cpu"), name):
        out = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert out.dtype == (PRECISIONS[name].autocast_dtype or torch.float32)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_builds_batches(loader: str, imagefolder_root) -> None:
    data = ["data=fake", "data.fake_size=24"]
    if loader == "dali":  # decodes image files only (an in-memory dataset is refused)
        data = ["data=imagefolder", f"data.root={imagefolder_root}", "data.image_size=32"]
    cfg = compose_train([*data, f"data.loader={loader}"])
    validate(cfg)
    bundle = build_data(cfg.data, batch_size=8, num_workers=0)
    images, labels = next(iter(bundle.train))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (8,)


@pytest.mark.parametrize(
    ("override", "table"),
    [
        ("optim.name=lion", OPTIMIZERS),
        ("sched.name=poly", SCHEDULERS),
        ("trainer.precision=fp8", PRECISIONS),
        ("data.name=mnist", ("digits", "cifar10", "cifar100", "fake", "imagenet")),
        ("data.loader=ffcv", LOADERS),
    ],
)
def test_refusal_lists_the_tables_keys(override: str, table) -> None:
    field, value = override.split("=")
    with pytest.raises(ConfigError) as info:
        validate(compose_train([override]))
    message = str(info.value)
    assert message.startswith(f"{field}={value!r} is not valid; accepted: ")
    assert all(key in message for key in table)


# Registering an entry: only the table is edited (monkeypatch), and the value is accepted by
# validation and used by the factory.


def test_a_new_optimizer_is_one_table_entry(monkeypatch) -> None:
    def rmsprop(groups, cfg):
        return torch.optim.RMSprop(groups, lr=cfg["lr"])

    monkeypatch.setitem(OPTIMIZERS, "rmsprop", optim_mod.OptimizerEntry(rmsprop))
    cfg = compose_train(["optim.name=rmsprop"])
    validate(cfg)
    assert isinstance(build_optimizer(_tiny(), cfg.optim), torch.optim.RMSprop)


def test_a_new_schedule_is_one_table_entry(monkeypatch) -> None:
    def linear(cfg, plan, warmup):
        return lambda j: 1 - j / (plan.total - warmup)

    monkeypatch.setitem(
        SCHEDULERS, "linear", optim_mod.ScheduleEntry(optim_mod._with_warmup(linear))
    )
    cfg = compose_train(["sched.name=linear"])
    validate(cfg)
    opt = build_optimizer(_tiny(), cfg.optim)
    sched = build_scheduler(opt, cfg.sched, steps_per_epoch=1, epochs=10, lr=cfg.optim.lr)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * 0.5)


def test_a_new_optimizers_fields_reach_the_hparams_table_with_no_other_edit(monkeypatch) -> None:
    """The entry declares the fields it reads; the hparams table (engine/hparams.py, unedited)
    reports them for that optimizer and leaves them out for the others."""
    from resnets.engine.hparams import result_hparams

    def rmsprop(groups, cfg):
        return torch.optim.RMSprop(groups, lr=cfg["lr"], alpha=cfg["alpha"], eps=cfg["eps"])

    entry = optim_mod.OptimizerEntry(rmsprop, reads=("alpha", "eps"))
    monkeypatch.setitem(OPTIMIZERS, "rmsprop", entry)

    def with_alpha(name: str):
        # the new optimizer's own field (a schema field in a real entry)
        cfg = OmegaConf.create(OmegaConf.to_container(compose_train([f"optim.name={name}"])))
        cfg.optim.alpha = 0.95
        return cfg

    table = result_hparams(with_alpha("rmsprop"))
    assert table["optim.alpha"] == 0.95 and table["optim.eps"] == 1e-8
    assert not {"optim.momentum", "optim.nesterov", "optim.betas", "optim.trust_coeff"} & set(table)
    assert isinstance(build_optimizer(_tiny(), with_alpha("rmsprop").optim), torch.optim.RMSprop)
    sgd = result_hparams(with_alpha("sgd"))
    assert "optim.alpha" not in sgd and "optim.eps" not in sgd and sgd["optim.momentum"] == 0.9


def test_a_schedule_without_warm_up_is_one_rule_in_its_entry(monkeypatch) -> None:
    """`unread` in a schedule's entry is the whole rule: validation refuses the field with the
    entry's reason, and the hparams table leaves the warm-up fields out."""
    from resnets.engine.hparams import result_hparams

    why = "it jumps straight to the peak"
    entry = optim_mod.ScheduleEntry(
        optim_mod.SCHEDULERS["constant"].curve, unread={"warmup_epochs": why}
    )
    monkeypatch.setitem(SCHEDULERS, "flat", entry)
    assert not entry.warms_up and SCHEDULERS["cosine"].warms_up
    with pytest.raises(ConfigError) as info:
        validate(compose_train(["sched.name=flat", "sched.warmup_epochs=1", "trainer.epochs=5"]))
    assert str(info.value) == (
        f"sched.warmup_epochs=1.0 is not read by sched=flat ({why}); accepted with flat: 0, "
        "or another schedule"
    )
    cfg = compose_train(["sched.name=flat"])
    validate(cfg)
    assert not {k for k in result_hparams(cfg) if k.startswith("sched.warmup")}
    warm = compose_train(["sched.name=constant", "sched.warmup_epochs=1", "trainer.epochs=5"])
    assert {"sched.warmup_epochs", "sched.warmup_method"} <= set(result_hparams(warm))


class RecordingConfig(dict):
    """An optim config that remembers which fields a factory read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_reads_exactly_the_fields_its_entry_declares(name: str) -> None:
    """What hparams reports per optimizer comes from `reads`: it must be what the factory reads
    (besides lr, which every optimizer reads)."""
    cfg = RecordingConfig(OmegaConf.to_container(compose_train([f"optim.name={name}"]).optim))
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    OPTIMIZERS[name](groups, cfg)
    assert cfg.read - {"lr"} == set(OPTIMIZERS[name].reads)


def test_a_new_precision_is_one_table_entry(monkeypatch) -> None:
    monkeypatch.setitem(PRECISIONS, "fp16-cpu", runtime_mod.Precision(torch.float16))
    cfg = compose_train(["trainer.precision=fp16-cpu"])
    validate(cfg)
    with autocast(torch.device("cpu"), "fp16-cpu"):
        out = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert out.dtype == torch.float16


def test_a_new_dataset_is_one_table_entry(monkeypatch) -> None:
    monkeypatch.setitem(ARRAY_DATASETS, "tiny", lambda cfg: make_fake(16, 10, 12, in_chans=1))
    cfg = compose_train(["data=fake", "data.name=tiny", "data.image_size=12"])
    validate(cfg)
    bundle = build_data(cfg.data, batch_size=4, num_workers=0)
    assert (bundle.num_classes, bundle.in_chans, bundle.train_size) == (10, 1, 16)
    assert "tiny" in dataset_names()


def test_a_new_loader_is_one_table_entry(monkeypatch) -> None:
    used = []

    def recording(train_split, evaluated, batching, **kwargs):
        used.append(len(train_split.labels))
        return LOADERS["tensor"](train_split, evaluated, batching, **kwargs)

    monkeypatch.setitem(data_pkg.LOADERS, "recording", recording)
    cfg = compose_train(["data=fake", "data.loader=recording", "data.fake_size=24"])
    validate(cfg)
    bundle = build_data(cfg.data, batch_size=8, num_workers=0)
    assert used == [24] and next(iter(bundle.train))[0].shape == (8, 3, 32, 32)


@pytest.mark.parametrize("method", list(optim_mod.WARMUPS))
def test_every_warmup_method_starts_at_the_start_factor_and_reaches_the_rate(method: str) -> None:
    cfg = compose_train(
        [
            "sched.name=constant",
            f"sched.warmup_method={method}",
            "sched.warmup_epochs=2",
            "sched.warmup_start_factor=0.25",
        ]
    )
    validate(cfg)
    opt = build_optimizer(_tiny(), cfg.optim)
    sched = build_scheduler(opt, cfg.sched, steps_per_epoch=2, epochs=10, lr=1.0)
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"] / cfg.optim.lr)
        opt.step()
        sched.step()
    # linear: 0.25, 0.4375, 0.625, 0.8125 over the 4 warm-up steps; constant holds 0.25
    held = method == "constant"
    expected = [0.25] * 4 if held else [0.25 + 0.75 * k / 4 for k in range(4)]
    assert rates == pytest.approx([*expected, 1.0, 1.0])
