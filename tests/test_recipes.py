"""Each experiment recipe equals its published source, field by field.

The table is typed in from the sources (not from our YAML): torchvision's
references/classification/README.md (classic ResNet recipe: the README's default parameters; V2:
the ResNet-50 IMAGENET1K_V2 command, with train.py's defaults for what it does not set), and He et
al. 2016, "Identity Mappings in Deep Residual Networks", Sec. 4 and the CIFAR set-up it cites.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from resnets.config import SchedConfig
from resnets.optim import build_scheduler

from .helpers import REPO, compose_train

# torchvision classic: --batch-size 32 on 8 GPUs, --epochs 90, --lr 0.1, --momentum 0.9, --wd 1e-4,
# --lr-step-size 30, --lr-gamma 0.1; opt "sgd" (Nesterov only for "sgd_nesterov"); norm weight decay
# unset (every parameter decays); no label smoothing, mixup, cutmix, EMA, auto-augment or erasing;
# train crop 224, val resize 256, val crop 224.
TORCHVISION_CLASSIC = {
    "model.name": "resnet50",
    "data.name": "imagenet",
    "trainer.epochs": 90,
    "trainer.global_batch_size": 256,
    "optim.base_batch_size": 256,
    "optim.name": "sgd",
    "optim.lr": 0.1,
    "optim.momentum": 0.9,
    "optim.nesterov": False,
    "optim.weight_decay": 1e-4,
    "optim.no_decay_norm_bias": False,
    "sched.name": "step",
    "sched.step_size": 30,
    "sched.gamma": 0.1,
    "sched.warmup_epochs": 0,
    "trainer.label_smoothing": 0.0,
    "trainer.mixup_alpha": 0.0,
    "trainer.cutmix_alpha": 0.0,
    "trainer.ema_decay": None,
    "data.image_size": 224,
    "data.val_resize": 256,
    "data.val_crop": 224,
    "data.augment.hflip": True,
    "data.augment.auto_augment": None,
    "data.augment.random_erasing": 0.0,
    "data.augment.random_resized_crop_scale": [0.08, 1.0],
}
# torchvision V2 (ResNet-50 IMAGENET1K_V2): --batch-size 128 on 8 GPUs --lr 0.5
# --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear (decay 0.01)
# --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002
# --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0
# --train-crop-size 176 --model-ema (decay 0.99998, every 32 steps) --val-resize-size 232
# --ra-sampler --ra-reps 4
TORCHVISION_V2 = {
    "model.name": "resnet50",
    "data.name": "imagenet",
    "trainer.epochs": 600,
    "trainer.global_batch_size": 1024,
    "optim.base_batch_size": 1024,
    "optim.name": "sgd",
    "optim.lr": 0.5,
    "optim.momentum": 0.9,
    "optim.nesterov": False,
    "optim.weight_decay": 2e-5,
    "optim.no_decay_norm_bias": True,
    "sched.name": "cosine",
    "sched.min_lr": 0.0,
    "sched.warmup_epochs": 5,
    "sched.warmup_method": "linear",
    "sched.warmup_start_factor": 0.01,
    "trainer.label_smoothing": 0.1,
    "trainer.mixup_alpha": 0.2,
    "trainer.cutmix_alpha": 1.0,
    "trainer.ema_every": 32,
    "data.image_size": 176,
    "data.val_resize": 232,
    "data.val_crop": 224,
    "data.augment.hflip": True,
    "data.augment.auto_augment": "trivialaugment",
    "data.augment.random_erasing": 0.1,
    "data.augment.random_resized_crop_scale": [0.08, 1.0],
    "data.repeated_aug": 4,
}
# He et al. 2016: SGD momentum 0.9, batch 128, weight decay 1e-4, lr 0.1 / 10 at 32k and 48k,
# stop at 64k, lr 0.01 for ~400 warm-up iterations; pad 4 + random crop 32 + flip.
HE_2016_PREACT164 = {
    "model.name": "preact_resnet164",
    "data.name": "cifar10",
    "trainer.batch_size": 128,
    "trainer.max_steps": 64000,
    "optim.name": "sgd",
    "optim.lr": 0.1,
    "optim.momentum": 0.9,
    "optim.nesterov": False,
    "optim.weight_decay": 1e-4,
    "optim.no_decay_norm_bias": False,
    "sched.name": "multistep",
    "sched.gamma": 0.1,
    "sched.warmup_method": "constant",
    "sched.warmup_start_factor": 0.1,
    "trainer.label_smoothing": 0.0,
    "trainer.mixup_alpha": 0.0,
    "trainer.cutmix_alpha": 0.0,
    "trainer.ema_decay": None,
    "data.image_size": 32,
    "data.augment.crop_padding": 4,
    "data.augment.hflip": True,
    "data.augment.auto_augment": None,
    "data.augment.random_erasing": 0.0,
    "data.augment.cutout": 0,
}
# Wightman, Touvron, Jegou 2021, "ResNet strikes back", Table 1 (A1 / A2 / A3): train res 224 /
# 224 / 160, test res 224 at crop ratio 0.95, epochs 600 / 300 / 100, batch 2048, LAMB, lr 5e-3 /
# 5e-3 / 8e-3, cosine decay, weight decay 0.01 / 0.02 / 0.02, 5 warm-up epochs, label smoothing
# 0.1 / none / none, no dropout, stochastic depth 0.05 / 0.05 / none, repeated augmentation yes /
# yes / no, no gradient clipping, flip and random-resized crop, RandAugment 7/0.5, 7/0.5, 6/0.5,
# no AutoAugment, MixUp alpha 0.2 / 0.1 / 0.1, CutMix alpha 1.0, no erasing, no EMA, BCE loss (no
# CE); top-1 80.4 / 79.8 / 78.1. Warm-up start (lr x 1e-4) and cosine floor (1e-6): mmpretrain's
# port, configs/_base_/schedules/imagenet_bs2048_rsb.py.
RSB_COMMON = {
    "model.name": "resnet50",
    "data.name": "imagenet",
    "trainer.global_batch_size": 2048,
    "optim.base_batch_size": 2048,
    "optim.name": "lamb",
    "optim.no_decay_norm_bias": True,
    "sched.name": "cosine",
    "sched.warmup_epochs": 5,
    "sched.warmup_method": "linear",
    "sched.warmup_start_factor": 1e-4,
    "sched.min_lr": 1e-6,
    "trainer.loss": "bce",
    "trainer.cutmix_alpha": 1.0,
    "trainer.ema_decay": None,
    "trainer.grad_clip": None,
    "model.drop_rate": None,
    "data.val_resize": 235,  # floor(224 / 0.95)
    "data.val_crop": 224,
    "data.augment.hflip": True,
    "data.augment.auto_augment": "randaugment",
    "data.augment.random_erasing": 0.0,
    "data.augment.random_resized_crop_scale": [0.08, 1.0],
}
RSB = {
    "a1": {
        "trainer.epochs": 600,
        "data.image_size": 224,
        "optim.lr": 5e-3,
        "optim.weight_decay": 0.01,
        "trainer.label_smoothing": 0.1,
        "model.drop_path_rate": 0.05,
        "data.repeated_aug": 3,
        "trainer.mixup_alpha": 0.2,
        "expected.top1": 80.4,
    },
    "a2": {
        "trainer.epochs": 300,
        "data.image_size": 224,
        "optim.lr": 5e-3,
        "optim.weight_decay": 0.02,
        "trainer.label_smoothing": 0.0,
        "model.drop_path_rate": 0.05,
        "data.repeated_aug": 3,
        "trainer.mixup_alpha": 0.1,
        "expected.top1": 79.8,
    },
    "a3": {
        "trainer.epochs": 100,
        "data.image_size": 160,
        "optim.lr": 8e-3,
        "optim.weight_decay": 0.02,
        "trainer.label_smoothing": 0.0,
        "model.drop_path_rate": 0.0,
        "data.repeated_aug": 0,
        "trainer.mixup_alpha": 0.1,
        "expected.top1": 78.1,
    },
}
# ffcv-imagenet rn50_configs/rn50_88_epochs.yaml and train_imagenet.py: resnet50, use_blurpool 1,
# batch_size 512 x world_size 8, lr 1.7, cyclic schedule (1e-4 x lr at epoch 0, lr at
# lr_peak_epoch 2, 0 at the end), momentum 0.9, weight_decay 1e-4, bn_wd 0, label_smoothing 0.1,
# min_res 160, max_res 192, start_ramp 65, end_ramp 76, validation resolution 256 with
# DEFAULT_CROP_RATIO 224/256; README: 0.784 top-1 at 88 epochs.
FFCV_RN50_88 = {
    "model.name": "resnet50",
    "model.blurpool": True,
    "data.name": "imagenet",
    "trainer.epochs": 88,
    "trainer.global_batch_size": 4096,
    "optim.base_batch_size": 4096,
    "optim.name": "sgd",
    "optim.lr": 1.7,
    "optim.momentum": 0.9,
    "optim.nesterov": False,
    "optim.weight_decay": 1e-4,
    "optim.no_decay_norm_bias": True,
    "sched.name": "onecycle",
    "sched.pct_start": 2 / 88,
    "sched.div_factor": 1e4,
    "trainer.loss": "ce",
    "trainer.label_smoothing": 0.1,
    "trainer.mixup_alpha": 0.0,
    "trainer.cutmix_alpha": 0.0,
    "trainer.ema_decay": None,
    "data.image_size": 192,
    "data.progressive.min_size": 160,
    "data.progressive.start_epoch": 65,
    "data.progressive.end_epoch": 76,
    "data.progressive.multiple": 32,
    "data.val_crop": 256,
    "data.val_resize": 292,  # 256 / (224 / 256), rounded down
    "data.augment.hflip": True,
    "data.augment.auto_augment": None,
    "data.augment.random_erasing": 0.0,
    "data.augment.random_resized_crop_scale": [0.08, 1.0],
    "expected.top1": 78.4,
}
# ffcv-imagenet README, ResNet-50 on 8 x A100: epochs -> top-1 (%)
FFCV_RN50_TOP1 = {16: 73.8, 24: 75.6, 32: 76.6, 40: 77.2, 56: 78.0, 88: 78.4}
RECIPES = {
    "imagenet_resnet50": (TORCHVISION_CLASSIC, "torchvision references/classification/README.md"),
    "imagenet_resnet50_v2": (TORCHVISION_V2, "How to Train State-Of-The-Art Models"),
    "cifar10_preact_resnet164": (HE_2016_PREACT164, "Identity Mappings in Deep Residual Networks"),
    **{
        f"imagenet_resnet50_rsb_{v}": ({**RSB_COMMON, **fields}, "ResNet strikes back")
        for v, fields in RSB.items()
    },
    "imagenet_resnet50_ffcv": (FFCV_RN50_88, "rn50_88_epochs.yaml"),
}


def test_ffcv_recipe_header_lists_every_published_epochs_accuracy_pair() -> None:
    header = _source_text("imagenet_resnet50_ffcv")
    pairs = ", ".join(f"{e}: {a}" for e, a in FFCV_RN50_TOP1.items())
    assert pairs in header
    assert (
        f"top1: {FFCV_RN50_TOP1[88]}"
        in (REPO / "conf" / "experiment" / "imagenet_resnet50_ffcv.yaml").read_text()
    )


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_states_its_global_batch(name) -> None:
    cfg = compose_train([f"+experiment={name}"])
    if name.startswith("imagenet"):
        assert cfg.trainer.global_batch_size == cfg.optim.base_batch_size
        assert cfg.expected.top1 is not None and cfg.expected.source


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_matches_its_published_source_field_by_field(name) -> None:
    published, source = RECIPES[name]
    cfg = compose_train([f"+experiment={name}"])
    differ = {
        key: (OmegaConf.select(cfg, key), want)
        for key, want in published.items()
        if _plain(OmegaConf.select(cfg, key)) != want
    }
    assert not differ, f"{name}: (ours, published) {differ}"
    assert source in _source_text(name)


def test_every_experiment_names_its_source() -> None:
    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        assert len(_source_text(path.stem)) > 20, f"{path.name} does not name its source"


def _source_text(name: str) -> str:
    """The header comment from 'Source:' on, joined into one line."""
    lines = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text().splitlines()
    text = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    return text.split("Source:", 1)[1] if "Source:" in text else ""


def test_v2_ema_is_torchvisions_ema_per_step() -> None:
    """torchvision adjusts its EMA decay to the global batch and updates every 32 steps."""
    cfg = compose_train(["+experiment=imagenet_resnet50_v2"])
    alpha = (1 - 0.99998) * 8 * 128 * 32 / 600  # torchvision train.py, 8 GPUs x 128 images
    per_update = 1 - alpha
    assert cfg.trainer.ema_decay**32 == pytest.approx(per_update, rel=1e-6)
    assert cfg.trainer.ema_every == 32


@pytest.mark.slow
def test_preact164_learning_rates_are_the_papers_by_iteration() -> None:
    """0.01 for the warm-up epoch (391 iterations, the paper's ~400), 0.1 until 32k, 0.01 until
    48k, 0.001 after: the paper's schedule, read off the scheduler the trainer builds."""
    cfg = compose_train(["+experiment=cifar10_preact_resnet164"])
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.optim.lr)
    sched = build_scheduler(
        optimizer, cfg.sched, steps_per_epoch=391, epochs=cfg.trainer.epochs, lr=cfg.optim.lr
    )
    lrs = []
    for _ in range(48_200):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    assert math.isclose(lrs[0], 0.01) and math.isclose(lrs[390], 0.01)
    assert math.isclose(lrs[391], 0.1) and math.isclose(lrs[32_061], 0.1)
    assert math.isclose(lrs[82 * 391], 0.01) and math.isclose(lrs[48_000], 0.01)
    assert math.isclose(lrs[123 * 391 + 1], 0.001, rel_tol=1e-6)


def test_constant_warmup_holds_then_jumps() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    cfg = OmegaConf.structured(
        SchedConfig(name="constant", warmup_epochs=2, warmup_method="constant")
    )
    sched = build_scheduler(optimizer, cfg, steps_per_epoch=3, epochs=4, lr=1.0)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    assert lrs == pytest.approx([0.1] * 6 + [1.0] * 2)


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
