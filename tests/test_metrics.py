"""Evaluation metrics on fixed logits against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import (
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from resnets.engine.metrics import (
    calibration_error,
    classification_report,
    expected_calibration_error,
    reliability_bins,
    topk_correct,
)


@pytest.fixture
def fixed():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 12, generator=gen) * 2
    targets = torch.randint(0, 12, (500,), generator=gen)
    logits[torch.arange(250), targets[:250]] += 3  # half are easy, so accuracy is not trivial
    return logits, targets


def test_topk_and_nll_equal_scikit_learn(fixed) -> None:
    logits, targets = fixed
    report = classification_report(logits, targets, [str(i) for i in range(12)])
    labels = np.arange(12)
    assert report["top1"] == pytest.approx(
        100 * top_k_accuracy_score(targets, logits, k=1, labels=labels)
    )
    assert report["top5"] == pytest.approx(
        100 * top_k_accuracy_score(targets, logits, k=5, labels=labels)
    )
    probs = logits.double().softmax(1).numpy()  # softmax in float64: rows sum to 1 to 1e-15
    assert report["nll"] == pytest.approx(log_loss(targets, probs, labels=labels), rel=1e-5)


def test_macro_average_of_a_split_with_an_absent_class_equals_scikit_learn() -> None:
    # the case: three classes, one absent from the split, every prediction right
    targets = torch.tensor([0, 0, 2, 2, 2])
    logits = torch.nn.functional.one_hot(targets, 3).float() * 5
    report = classification_report(logits, targets, ["a", "b", "c"])
    assert report["top1"] == 100.0
    assert report["macro_f1"] == pytest.approx(f1_score(targets, logits.argmax(1), average="macro"))
    assert report["macro_f1"] == 1.0 and report["macro_classes"] == 2
    assert [row["class"] for row in report["per_class"]] == ["a", "c"]
    assert report["absent_classes"] == [{"class": "b", "support": 0}]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
)
def test_macro_averages_equal_scikit_learn_whatever_classes_are_missing(pairs) -> None:
    # six classes; any of them may be missing from the labels, the predictions or both
    targets = torch.tensor([t for t, _ in pairs])
    predicted = torch.tensor([p for _, p in pairs])
    logits = torch.nn.functional.one_hot(predicted, 6).float()
    report = classification_report(logits, targets, [f"c{i}" for i in range(6)])
    p, r, f, _ = precision_recall_fscore_support(
        targets, predicted, average="macro", zero_division=0
    )
    assert (report["macro_precision"], report["macro_recall"], report["macro_f1"]) == pytest.approx(
        (p, r, f)
    )
    seen = set(targets.tolist()) | set(predicted.tolist())
    assert [row["class"] for row in report["per_class"]] == [f"c{i}" for i in sorted(seen)]
    assert {a["class"] for a in report["absent_classes"]} == {f"c{i}" for i in set(range(6)) - seen}


def test_per_class_and_confusion_equal_scikit_learn(fixed) -> None:
    logits, targets = fixed
    report = classification_report(logits, targets, [f"c{i}" for i in range(12)])
    predicted = logits.argmax(1)
    p, r, f, s = precision_recall_fscore_support(
        targets, predicted, labels=np.arange(12), zero_division=0
    )
    assert [row["precision"] for row in report["per_class"]] == pytest.approx(p.tolist())
    assert [row["recall"] for row in report["per_class"]] == pytest.approx(r.tolist())
    assert [row["f1"] for row in report["per_class"]] == pytest.approx(f.tolist())
    assert [row["support"] for row in report["per_class"]] == s.tolist()
    assert np.array_equal(
        report["confusion_matrix"].numpy(), sk_confusion(targets, predicted, labels=np.arange(12))
    )


def test_ece_by_hand() -> None:
    # three samples: confidences 0.9 (right), 0.9 (wrong), 0.6 (right); 15 bins of width 1/15
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    targets = torch.tensor([0, 1, 1])
    # bin with 0.9: mean conf 0.9, acc 0.5 -> gap 0.4, weight 2/3; bin with 0.6: gap 0.4, weight 1/3
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, torch.tensor([0, 1])) == pytest.approx(0.0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    classes=st.integers(2, 12),
    bins=st.integers(1, 20),
    scale=st.floats(0.0, 10.0),
    seed=st.integers(0, 2**16),
)
def test_ece_and_reliability_share_one_binning(n, classes, bins, scale, seed) -> None:
    """The diagram's bins are the ones ECE sums over, and both agree with a numpy binning of
    the (lo, hi] intervals written independently here."""
    gen = torch.Generator().manual_seed(seed)
    probs = (torch.randn(n, classes, generator=gen) * scale).softmax(1)
    targets = torch.randint(0, classes, (n,), generator=gen)
    rows = reliability_bins(probs, targets, bins)
    ece = expected_calibration_error(probs, targets, bins)
    assert ece == calibration_error(rows)  # the same number, not merely close
    conf, pred = probs.double().max(1)
    conf, right = conf.numpy(), (pred == targets).double().numpy()
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins]
    expected = 0.0
    for b, row in enumerate(rows):
        members = index == b
        assert row["count"] == members.sum()
        if members.any():
            assert row["confidence"] == pytest.approx(conf[members].mean(), abs=1e-6)
            assert row["accuracy"] == pytest.approx(right[members].mean())
            expected += members.mean() * abs(conf[members].mean() - right[members].mean())
    assert sum(row["count"] for row in rows) == n
    assert ece == pytest.approx(expected, abs=1e-6)


def test_topk_clips_k_to_classes() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert topk_correct(logits, torch.tensor([1, 2]), (1, 5)) == [1, 2]
