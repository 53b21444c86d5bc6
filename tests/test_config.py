"""Every config option composes through Hydra and builds; bad values stop with a named field."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from resnets.config import ConfigError
from resnets.data import build_data
from resnets.models import build_model_from_config
from resnets.optim import build_optimizer, build_scheduler
from resnets.validation import validate

from .helpers import REPO, compose_train, model_params, run_train_cli

CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("name", model_params(options("model")))
def test_every_model_option_composes_and_builds(name: str) -> None:
    cfg = compose_train([f"model={name}"])
    validate(cfg)
    assert cfg.model.name == name
    model = build_model_from_config(cfg.model, num_classes=10, in_chans=3, image_size=32)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_model_fields_override_any_preset() -> None:
    cfg = compose_train(["model=resnext50_32x4d", "model.depth=101", "model.attention=se"])
    model = build_model_from_config(cfg.model, num_classes=10, in_chans=3, image_size=32)
    assert (
        len(model.layer3) == 23
        and model.layer1[0].se is not None
        and model.layer1[0].conv2.groups == 32
    )


@pytest.mark.parametrize("name", options("data"))
def test_every_data_option_composes_and_builds(
    name, cifar10_root, cifar100_root, imagefolder_root, shards_root
) -> None:
    roots = {
        "cifar10": cifar10_root,
        "cifar100": cifar100_root,
        "imagenet": imagefolder_root,
        "imagefolder": imagefolder_root,
        "shards": shards_root,
    }
    overrides = [f"data={name}"] + ([f"data.root={roots[name]}"] if name in roots else [])
    cfg = compose_train(overrides)
    validate(cfg)
    bundle = build_data(cfg.data, batch_size=4, num_workers=0)
    images, labels = next(iter(bundle.val))
    assert images.shape[1:] == (
        bundle.in_chans,
        cfg.data.get("val_crop") or bundle.image_size,
        cfg.data.get("val_crop") or bundle.image_size,
    )
    assert labels.max() < bundle.num_classes


@pytest.mark.parametrize("optim", options("optim"))
@pytest.mark.parametrize("sched", options("sched"))
def test_every_optim_and_sched_option_builds(optim: str, sched: str) -> None:
    cfg = compose_train([f"optim={optim}", f"sched={sched}"])
    validate(cfg)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, cfg.optim)
    sch = build_scheduler(opt, cfg.sched, steps_per_epoch=10, epochs=100, lr=cfg.optim.lr)
    for _ in range(1000):
        opt.step()
        sch.step()
    assert opt.param_groups[0]["lr"] >= 0


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_option_composes(trainer: str) -> None:
    cfg = compose_train([f"trainer={trainer}"])
    validate(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose_train([f"+experiment={experiment}"])
    validate(cfg)
    assert cfg.run_name == experiment


def test_paper_resnet56_schedule() -> None:
    cfg = compose_train(["+experiment=cifar10_resnet56"])
    assert cfg.model.name == "resnet56" and cfg.data.name == "cifar10"
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.trainer.batch_size) == (0.1, 1e-4, 128)
    assert cfg.trainer.max_steps == 64000 and list(cfg.sched.milestones) == [82, 123]
    # 50,000 images / 128 = 390 full batches: the milestones land at 32k and 48k iterations
    assert [round(m * 390, -3) for m in cfg.sched.milestones] == [32000, 48000]


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        (
            "trainer.precision=fp8",
            r"trainer\.precision='fp8'.*accepted: auto, 32, bf16-mixed, 16-mixed",
        ),
        ("optim.name=adam", r"optim\.name='adam'.*accepted: sgd, adamw"),
        ("sched.name=poly", r"sched\.name='poly'.*cosine, step, multistep, onecycle, constant"),
        ("trainer.batch_size=0", r"trainer\.batch_size=0.*positive"),
        ("trainer.label_smoothing=1.5", r"trainer\.label_smoothing=1\.5.*\[0, 1\)"),
        ("data.loader=ffcv", r"data\.loader='ffcv'.*auto, tensor, torchvision, dali"),
    ],
)
def test_bad_values_name_field_and_accepted(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate(compose_train([override]))


def test_schema_rejects_unknown_fields_and_wrong_types() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["trainer.epoch=3"])
    assert "epoch" in str(info.value.__cause__ or info.value)
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_train(["trainer.batch_size=many"])


@pytest.mark.slow
def test_cli_errors_are_clear_and_do_no_work(tmp_path) -> None:
    result = run_train_cli(
        ["model=resnet", "model.depth=42", f"hydra.run.dir={tmp_path}"], timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.depth=42 is not valid; accepted: 18, 34, 50, 101, 152 (ImageNet) or "
        "6n+2: 20, 32, 44, 56, 110, 1202; 9n+2: 29, 164, 1001 (CIFAR)"
    ]  # one line, no traceback
    assert not (tmp_path / "checkpoints").exists()
    missing = run_train_cli(
        ["data=cifar10", f"data.root={tmp_path / 'none'}", f"hydra.run.dir={tmp_path}"], timeout=120
    )
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert f"no cifar10 batches at {tmp_path / 'none' / 'cifar-10-batches-py'}" in missing.stderr
    assert "data.download=true" in missing.stderr
    bad = run_train_cli(["trainer.precision=fp8", f"hydra.run.dir={tmp_path}"], timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: trainer.precision='fp8' is not valid; accepted: auto, 32, bf16-mixed, 16-mixed"
    )
    group = run_train_cli(["model=resnet51"], timeout=120)  # one line naming the closest presets
    assert group.returncode == 2 and len(group.stderr.strip().splitlines()) == 1
    assert "model='resnet51' is not a preset; closest: resnet56, resnet50" in group.stderr


def test_each_default_is_written_once_in_the_schema() -> None:
    """conf/train.yaml and conf/trainer/default.yaml write none of the schema's fields (they
    used to say epochs 12, log_every 10, label_smoothing 0.1 where the schema said 10, 20, 0.0),
    and the default run composes to exactly the schema's defaults."""
    import dataclasses

    import yaml

    from resnets.config import TrainConfig, TrainerConfig

    conf = REPO / "conf"
    top = yaml.safe_load((conf / "train.yaml").read_text())
    top_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(top) & top_fields == set(), "conf/train.yaml repeats a schema default"
    assert not yaml.safe_load((conf / "trainer" / "default.yaml").read_text())
    cfg = compose_train([])
    for f in dataclasses.fields(TrainerConfig):
        assert cfg.trainer[f.name] == f.default, f.name
    for name in ("seed", "ckpt_path", "resume"):
        assert cfg[name] == next(
            f.default for f in dataclasses.fields(TrainConfig) if f.name == name
        )
    assert cfg.run_name == f"{cfg.model.name}-{cfg.data.name}"
