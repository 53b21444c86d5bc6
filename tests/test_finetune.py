"""Fine-tuning controls through the trainer: frozen parts, the head's learning rate, resume."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train
from resnets.models import ModelError, build_model
from resnets.optim import build_optimizer

from .helpers import TINY, compose_train, read_metrics
from .test_pretrained import _randomise_bn, fill_torchvision_cache, run_cli


@pytest.fixture
def tiny_weights(tmp_path) -> tuple[str, dict]:
    """A state dict for TINY's network on digits (one channel), with non-trivial BN statistics."""
    torch.manual_seed(3)
    model = _randomise_bn(build_model("resnet", 10, depth=8, stem="cifar", in_chans=1))
    path = tmp_path / "start.pt"
    torch.save(model.state_dict(), path)
    return str(path), {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_frozen_parts_stay_bit_identical_while_the_rest_trains(tmp_path, tiny_weights) -> None:
    path, start = tiny_weights
    overrides = [
        *TINY,
        "data=digits",
        f"model.pretrained={path}",
        "model.freeze=[stem,layer1]",
        "trainer.epochs=1",
        "trainer.max_steps=6",
        "optim.weight_decay=0.05",  # strong decay: a frozen weight in a group would move
    ]
    train(compose_train(overrides), tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    trained = ckpt["model"]
    frozen = [k for k in start if k.startswith(("conv1.", "bn1.", "layer1."))]
    others = [k for k in start if k.startswith(("layer2.", "layer3.", "fc."))]
    assert any("running_mean" in k for k in frozen) and any("running_var" in k for k in others)
    for key in frozen:  # parameters AND BatchNorm buffers, though model.train() ran every epoch
        assert torch.equal(trained[key], start[key]), key
    for key in others:
        if "num_batches_tracked" in key:
            assert trained[key] == start[key] + 6, key
        else:
            assert not torch.equal(trained[key], start[key]), key
    # the frozen parameters are in no optimizer group (no update, no weight decay)
    in_groups = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    model = build_model("resnet", 10, depth=8, stem="cifar", in_chans=1)
    trainable = [
        n for n, _ in model.named_parameters() if not n.startswith(("conv1", "bn1", "layer1."))
    ]
    assert in_groups == len(trainable)


def test_frozen_batchnorm_stays_in_eval_mode_across_train_calls() -> None:
    model = build_model("resnet18", 10, freeze=["stem", "layer2"])
    for _ in range(2):
        model.train()
        assert not model.bn1.training and not model.layer2[0].bn1.training
        assert model.layer1[0].bn1.training and model.layer3[1].bn2.training and model.training
        model.eval()
    assert all(not p.requires_grad for p in model.layer2.parameters())
    assert all(p.requires_grad for p in model.layer3.parameters())
    # an optimizer built from the model leaves frozen weights out of every group
    opt = build_optimizer(
        model,
        {
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 1e-4,
            "no_decay_norm_bias": True,
            "head_lr_mult": 1.0,
        },
    )
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not grouped & {id(p) for p in model.layer2.parameters()}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_freeze_names_the_parts_it_accepts() -> None:
    with pytest.raises(ModelError) as err:
        build_model("resnet20", 10, freeze=["stem", "layer4"])
    assert str(err.value) == (
        "model.freeze=['stem', 'layer4'] is not valid; accepted: a list of: stem, layer1, layer2, layer3"
    )
    with pytest.raises(ModelError, match="freezing is for ResNet networks"):
        build_model("attention56_cifar", 10, freeze=["stem"])


@pytest.mark.parametrize(
    "sched", [["sched=cosine", "sched.min_lr=0.01", "sched.warmup_epochs=0.2"], ["sched=onecycle"]]
)
@pytest.mark.slow
def test_head_lr_mult_groups_and_logged_rates(tmp_path, sched) -> None:
    overrides = [
        *TINY,
        "data=digits",
        *sched,
        "optim.lr=0.05",
        "optim.head_lr_mult=10",
        "trainer.epochs=1",
        "trainer.max_steps=10",  # of 22 in the epoch the schedule spans
        "trainer.log_every=1",
    ]
    train(compose_train(overrides), tmp_path)
    groups = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    heads = [g for g in groups if g.get("name") == "head"]
    body = [g for g in groups if g.get("name") != "head"]
    assert len(heads) == 2 and [g["weight_decay"] for g in heads] == [5e-4, 0.0]
    assert len(heads[0]["params"]) == 1 and len(heads[1]["params"]) == 1  # fc weight, fc bias
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    lr = [e.value for e in events.Scalars("lr")]
    lr_head = [e.value for e in events.Scalars("lr_head")]
    assert len(lr) == len(lr_head) == 10 and len(set(lr)) > 5  # the schedule moved
    for a, b in zip(lr, lr_head, strict=True):
        assert b == pytest.approx(10 * a, rel=1e-5)
    for g in heads:
        assert g["lr"] == pytest.approx(10 * body[0]["lr"], rel=1e-9)


def test_head_lr_mult_needs_a_classifier() -> None:
    from resnets.config import ConfigError

    model = build_model("resnet20", 10, include_top=False)
    with pytest.raises(
        ConfigError, match=r"optim.head_lr_mult=2.0 needs a network with a classifier"
    ):
        build_optimizer(
            model,
            {
                "name": "sgd",
                "lr": 0.1,
                "momentum": 0.9,
                "nesterov": False,
                "weight_decay": 0.0,
                "no_decay_norm_bias": True,
                "head_lr_mult": 2.0,
            },
        )


@pytest.mark.slow
def test_finetune_through_train_py_resumes_to_the_same_weights(tmp_path) -> None:
    home = tmp_path / "torch_home"
    cached = fill_torchvision_cache(home, "resnet18", "IMAGENET1K_V1")
    args = [
        "model=resnet18",
        "model.pretrained=torchvision:IMAGENET1K_V1",
        "model.freeze=[stem]",
        "data=digits",
        "data.image_size=16",  # small and quick: 8x8 digits upsampled to 16 px, grey
        "data.val_fraction=0.5",
        "optim.lr=0.02",
        "optim.head_lr_mult=10",
        "sched=cosine",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.deterministic=true",
        "trainer.progress=false",
        "trainer.workers=0",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = run_cli("train.py", [*args, f"hydra.run.dir={straight}"], TORCH_HOME=str(home))
    assert first.returncode == 0, first.stderr[-3000:]
    # 11 steps per epoch: stop in the middle of the second, then run the same command again
    part = run_cli(
        "train.py",
        [*args, "trainer.max_steps=15", f"hydra.run.dir={resumed}"],
        TORCH_HOME=str(home),
    )
    assert part.returncode == 0, part.stderr[-3000:]
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["step"] == 15
    rest = run_cli("train.py", [*args, f"hydra.run.dir={resumed}"], TORCH_HOME=str(home))
    assert rest.returncode == 0, rest.stderr[-3000:]
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 28
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert read_metrics(straight)["val_top1"] == read_metrics(resumed)["val_top1"]
    # the frozen stem is torchvision's conv1 summed over its input channels (digits are grey)
    weights = torch.load(cached, weights_only=True)
    assert torch.equal(a["model"]["conv1.weight"], weights["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(a["model"]["bn1.running_var"], weights["bn1.running_var"])
    assert not torch.equal(a["model"]["layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"])
    log = (straight / "train.log").read_text()
    assert "classifier re-initialised for 10 classes (the weights have 1000)" in log
    assert "adapted from 3 to 1 input channels" in log
    # the stored config rebuilds the network without the weights: resolved stem and statistics
    stored = OmegaConf.create(a["config"])
    assert stored.model.stem == "imagenet"
    assert list(stored.data.mean) == pytest.approx([(0.485 + 0.456 + 0.406) / 3])
    assert list(stored.data.std) == pytest.approx([(0.229 + 0.224 + 0.225) / 3])


def test_finetune_recipe_upsamples_cifar_with_the_weights_statistics(cifar10_root) -> None:
    from resnets.data import build_data
    from resnets.models.pretrained import pretrained_stats

    cfg = compose_train(["+experiment=finetune_cifar10_resnet50", f"data.root={cifar10_root}"])
    assert cfg.model.pretrained == "torchvision:IMAGENET1K_V2" and cfg.optim.head_lr_mult == 10
    stats = pretrained_stats(cfg.model)
    assert stats == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    batches = {}
    for loader in ("tensor", "torchvision"):
        cfg.data.loader = loader
        data = build_data(cfg.data, batch_size=8, device="cpu", stats=stats)
        assert data.image_size == 224 and data.mean == stats[0]
        x, _ = next(iter(data.train))
        assert x.shape == (8, 3, 224, 224)
        batches[loader] = next(iter(data.val))[0]
    # both loaders: normalise at 32 px, then the same bilinear upsampling
    assert batches["tensor"].shape == (8, 3, 224, 224)
    assert (batches["tensor"] - batches["torchvision"]).abs().max() <= 1e-4
