"""trainer.loss: binary cross-entropy on MixUp/CutMix targets (RSB), next to cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torchvision.transforms import v2

from resnets.config import ConfigError, TrainerConfig
from resnets.engine.losses import BinaryCrossEntropy, build_criterion
from resnets.validation import validate

from .helpers import compose_train

C = 7


def _mixed_batch(seed: int = 0):
    torch.manual_seed(seed)
    images, labels = torch.rand(6, 3, 8, 8), torch.randint(0, C, (6,))
    _, mixup = v2.MixUp(alpha=0.2, num_classes=C)(images, labels)
    _, cutmix = v2.CutMix(alpha=1.0, num_classes=C)(images, labels)
    return torch.randn(6, C) * 3, labels, mixup, cutmix


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_bce_on_mixed_targets_is_torchs_with_the_smoothed_targets(mix) -> None:
    logits, labels, mixup, cutmix = _mixed_batch()
    targets = mixup if mix == "mixup" else cutmix
    assert not torch.equal(targets, F.one_hot(labels, C).float())  # really mixed
    loss = build_criterion(OmegaConf.structured(TrainerConfig(loss="bce", label_smoothing=0.1)))
    # timm: off = s/C, on = 1 - s + s/C, mixed with the same weights as the one-hots
    smoothed = targets * (1 - 0.1) + 0.1 / C
    want = F.binary_cross_entropy_with_logits(logits, smoothed)
    torch.testing.assert_close(loss(logits, targets), want)
    plain = BinaryCrossEntropy()(logits, targets)  # no smoothing: the targets as mixed
    torch.testing.assert_close(plain, F.binary_cross_entropy_with_logits(logits, targets))


def test_bce_target_threshold_and_class_sum() -> None:
    logits, _, mixup, _ = _mixed_batch(1)
    loss = BinaryCrossEntropy(smoothing=0.1, target_threshold=0.2, sum_classes=True)
    hard = ((mixup * 0.9 + 0.1 / C) > 0.2).float()
    want = F.binary_cross_entropy_with_logits(logits, hard, reduction="none").sum(1).mean()
    torch.testing.assert_close(loss(logits, mixup), want)
    assert torch.equal(hard.sum(1) >= 1, torch.ones(6, dtype=torch.bool))  # some class kept


def test_bce_matches_timms_loss_on_class_indices_and_mixed_rows() -> None:
    timm_loss = pytest.importorskip("timm.loss")
    logits, labels, mixup, _ = _mixed_batch(2)
    for smoothing, threshold in ((0.1, None), (0.0, 0.2), (0.1, 0.2)):
        ours = BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold)
        theirs = timm_loss.BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold)
        torch.testing.assert_close(ours(logits, labels), theirs(logits, labels))
    # timm smooths index targets itself and takes mixed rows as they come (its Mixup smooths)
    plain = timm_loss.BinaryCrossEntropy(smoothing=0.0, target_threshold=0.2)
    torch.testing.assert_close(
        BinaryCrossEntropy(target_threshold=0.2)(logits, mixup), plain(logits, mixup)
    )


def test_ce_keeps_label_smoothing_on_mixed_targets() -> None:
    logits, _, mixup, _ = _mixed_batch(3)
    loss = build_criterion(OmegaConf.structured(TrainerConfig(label_smoothing=0.1)))
    smoothed = mixup * 0.9 + 0.1 / C
    want = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(loss(logits, mixup), want)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.loss=nll", "trainer.loss='nll' is not valid; accepted: ce, bce"),
        (
            "trainer.bce_target_threshold=1.5",
            "trainer.bce_target_threshold=1.5 is not valid; accepted: null or a number in [0, 1)",
        ),
    ],
)
def test_bad_loss_settings_are_refused_in_one_line(override, message) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_train([override]))
    assert str(err.value) == message
