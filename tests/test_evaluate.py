"""evaluate.py end to end: the trainer's own figures, published weights, sweeps, unsafe files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import OmegaConf

from resnets.data import build_data
from resnets.engine.checkpoint import CheckpointError
from resnets.engine.evaluation import load_strict, state_from_file
from resnets.engine.metrics import expected_calibration_error
from resnets.engine.trainer import train
from resnets.models import build_model_from_config

from .helpers import REPO, TINY, compose_train, read_metrics, run_script_inprocess, run_train_cli


def run_evaluate_cli(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # no traceback
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One epoch of a tiny ResNet on digits, trained in-process (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_train([*TINY, "trainer.epochs=1", "trainer.eval_batch_size=50"])
    train(cfg, output_dir=run_dir)
    return run_dir


@pytest.mark.slow
def test_checkpoint_scores_equal_the_trainers_final_validation(tiny_run, tmp_path) -> None:
    result = run_evaluate_cli(
        [f"ckpt={tiny_run / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={tmp_path}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = read_metrics(tiny_run)
    scored = json.loads((tiny_run / "eval" / "last" / "metrics.json").read_text())
    # a different batch size (256 vs 50) may move the last float bit, never a prediction
    assert scored["samples"] == trained["val_samples"] == 360
    assert scored["top1"] == pytest.approx(trained["val_top1"], abs=1e-9)
    assert scored["top5"] == pytest.approx(trained["val_top5"], abs=1e-9)
    assert scored["nll"] == pytest.approx(trained["val_loss"], rel=1e-5)
    assert scored["num_params"] == trained["num_params"]
    assert scored["gflops"] == pytest.approx(trained["gflops"], rel=1e-9)
    assert 0.0 <= scored["ece"] <= 1.0 and len(scored["per_class"]) == 10
    for name in ("reliability.png", "confusion_matrix.png", "per_class.csv", "confusion_matrix.pt"):
        assert (tiny_run / "eval" / "last" / name).stat().st_size > 0, name
    with open(tiny_run / "eval" / "last" / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["support"]) for r in rows) == 360
    matrix = torch.load(tiny_run / "eval" / "last" / "confusion_matrix.pt", weights_only=True)
    assert int(matrix.sum()) == 360
    assert 100 * int(matrix.diag().sum()) / 360 == pytest.approx(scored["top1"])
    assert "top-1" in result.stdout and f"{scored['top1']:.2f}%" in result.stdout
    assert list((tiny_run / "tb" / "eval-last").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_overrides_reach_split_and_test_time_augmentation(tiny_run, tmp_path) -> None:
    result = run_evaluate_cli(
        [
            f"ckpt={tiny_run / 'checkpoints' / 'best.pt'}",
            "data.split=train",
            "tta=flip",
            "precision=bf16-mixed",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((tiny_run / "eval" / "best-train-flip-bf16" / "metrics.json").read_text())
    assert scored["split"] == "train" and scored["samples"] == 1437
    assert scored["tta"] == "flip" and scored["precision"] == "bf16-mixed"
    # digits trains without flips: the mirror images are new to the network, and it says so
    assert (
        len(scored["warnings"]) == 1 and "trained without horizontal flips" in scored["warnings"][0]
    )
    assert "tta=flip on a network trained without horizontal flips" in result.stdout + result.stderr


@pytest.mark.slow
def test_checkpoint_for_another_model_is_a_one_line_error(tiny_run, tmp_path) -> None:
    ckpt = tiny_run / "checkpoints" / "last.pt"
    result = run_evaluate_cli([f"ckpt={ckpt}", "model=resnet20", f"hydra.run.dir={tmp_path}"])
    assert_one_line_error(result, str(ckpt), "does not match model 'resnet20'")


@pytest.mark.slow
def test_malicious_pickle_is_refused_and_never_runs(tmp_path) -> None:
    victim = tmp_path / "pwned.txt"

    class Exploit:
        def __reduce__(self):
            return (Path.write_text, (victim, "code ran"))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Exploit()}, evil)
    assert not victim.exists()
    for key in ("ckpt", "weights"):
        extra = [] if key == "ckpt" else ["model=resnet20", "data=digits"]
        result = run_evaluate_cli([f"{key}={evil}", *extra, f"hydra.run.dir={tmp_path / key}"])
        assert_one_line_error(
            result, str(evil), "refused: it would import and call", "could run code"
        )
        assert not victim.exists()


@pytest.mark.parametrize(
    ("make_file", "fragment"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_text("model: resnet50\n"), "is not a PyTorch file"),
        (lambda p: torch.save([torch.zeros(3)], p), "is neither a resnets checkpoint"),
        (lambda p: torch.save({"fc.weight": torch.zeros(3)}, p), "is a bare state dict"),
        (lambda p: None, "no such file"),
    ],
    ids=["empty", "foreign-text", "foreign-list", "bare-state-dict-as-ckpt", "missing"],
)
@pytest.mark.slow
def test_bad_files_give_one_line_errors(tmp_path, make_file, fragment) -> None:
    path = tmp_path / "model.pt"
    make_file(path)
    result = run_evaluate_cli([f"ckpt={path}", f"hydra.run.dir={tmp_path / 'out'}"])
    assert_one_line_error(result, str(path), fragment)


@pytest.mark.slow
def test_truncated_checkpoint_is_a_one_line_error(tiny_run, tmp_path) -> None:
    data = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    result = run_evaluate_cli([f"ckpt={cut}", f"hydra.run.dir={tmp_path / 'out'}"])
    assert_one_line_error(result, str(cut), "is truncated or corrupt")


@pytest.mark.slow
def test_bare_weights_need_model_and_data(tmp_path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(3)}, path)
    result = run_evaluate_cli([f"weights={path}", f"hydra.run.dir={tmp_path / 'out'}"])
    assert_one_line_error(result, str(path), "needs model=NAME and data=NAME")
    result = run_evaluate_cli([f"hydra.run.dir={tmp_path / 'out'}"])
    assert_one_line_error(result, "needs ckpt=PATH")


def _resnet18_weights(tmp_path: Path) -> tuple[Path, torchvision.models.ResNet]:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=1000).eval()
    for m in reference.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


FAKE_IMAGENET = ["data=fake", "data.image_size=96", "data.num_classes=1000", "data.fake_size=80"]


def test_torchvision_state_dict_gives_torchvision_logits(tmp_path) -> None:
    path, reference = _resnet18_weights(tmp_path)
    cfg = compose_train(["model=resnet18", *FAKE_IMAGENET])
    weights, state = state_from_file(path, use_ema=False)
    assert state is None
    ours = build_model_from_config(cfg.model, num_classes=1000, in_chans=3, image_size=96)
    load_strict(ours, weights, path, "resnet18")
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference(x))


@pytest.mark.slow
def test_torchvision_weights_through_the_cli(tmp_path) -> None:
    path, reference = _resnet18_weights(tmp_path)
    out = tmp_path / "eval"
    result = run_evaluate_cli(
        [
            "model=resnet18",
            f"weights={path}",
            *FAKE_IMAGENET,
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((out / "metrics.json").read_text())
    # the same figures computed independently from torchvision's model on the same images
    data = build_data(
        OmegaConf.create(compose_train(FAKE_IMAGENET).data),
        batch_size=32,
        num_workers=0,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        batches = [(reference(x), y) for x, y in data.val]
    logits = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert scored["samples"] == len(labels) > 0
    assert scored["nll"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert scored["top1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert scored["top5"] == pytest.approx(100 * top5)
    assert scored["ece"] == pytest.approx(
        expected_calibration_error(logits.softmax(1), labels), abs=1e-6
    )
    assert scored["num_params"] == sum(p.numel() for p in reference.parameters())
    mismatched = run_evaluate_cli(
        [
            "model=resnet34",
            f"weights={path}",
            *FAKE_IMAGENET,
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert_one_line_error(mismatched, str(path), "does not match model 'resnet34'", "missing keys")


@pytest.mark.slow
def test_leaderboard_over_a_real_multirun_sweep(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        [
            "-m",
            *TINY,
            "trainer.epochs=1",
            "optim.lr=0.00001,0.2",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = {
        json.loads((sweep / str(i) / "metrics.json").read_text())["best_val_top1"]: i
        for i in (0, 1)
    }
    assert len(trained) == 2
    winner = trained[max(trained)]
    assert winner == 1  # lr 0.2 learns in one epoch, lr 1e-5 does not
    for rescore in ("true", "false"):
        result = run_evaluate_cli(
            [f"sweep={sweep}", f"rescore={rescore}", f"hydra.run.dir={tmp_path / 'eval'}"]
        )
        assert result.returncode == 0, result.stderr[-3000:]
        with open(sweep / "leaderboard.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["runs"] for r in rows] == ["1", "0"]
        assert "optim.lr=0.2" in rows[0]["overrides"] and "model.depth=8" in rows[0]["overrides"]
        assert "optim.lr=1e-05" in rows[1]["overrides"]
        assert float(rows[0]["best_top1_mean"]) == pytest.approx(max(trained), abs=1e-9)
        assert float(rows[0]["best_top1_mean"]) > float(rows[1]["best_top1_mean"])
        assert int(rows[0]["num_params"]) == read_metrics(sweep / "1")["num_params"]
        assert float(rows[0]["train_time_s_mean"]) > 0
        md = (sweep / "leaderboard.md").read_text()
        table = [
            line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")
        ]
        # only the override that differs is a column; the others are listed once above
        assert table[0].startswith("| 1 | 0.2 | 1 |") and table[1].startswith("| 2 | 1e-05 | 1 |")
        assert "model.depth=8" in md.split("| # |")[0]


@pytest.mark.slow
def test_missing_sweep_directory_is_a_one_line_error(tmp_path) -> None:
    result = run_evaluate_cli([f"sweep={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'o'}"])
    assert_one_line_error(result, str(tmp_path / "nope"), "no such sweep directory")


def test_use_ema_without_ema_weights_is_refused(tiny_run) -> None:
    with pytest.raises(CheckpointError, match="has no EMA weights"):
        state_from_file(tiny_run / "checkpoints" / "last.pt", use_ema=True)


@pytest.mark.slow
def test_trainer_precision_is_refused_naming_the_top_level_field(tiny_run, tmp_path) -> None:
    # evaluate.py scores at its own `precision`; trainer.precision there was silently ignored
    result = run_evaluate_cli(
        [
            f"ckpt={tiny_run / 'checkpoints' / 'last.pt'}",
            "trainer.precision=bf16-mixed",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert_one_line_error(
        result,
        "trainer.precision='bf16-mixed' is not an evaluate.py setting",
        "precision=<32|bf16-mixed|16-mixed>",
    )
    assert not (tiny_run / "eval" / "last-bf16").exists()


def test_trainer_precision_is_refused_in_sweep_mode_before_any_run(tmp_path, capsys) -> None:
    # checked before the sweep: not one "left out" run per checkpoint
    code = run_script_inprocess(
        "evaluate",
        [f"sweep={tmp_path / 'nope'}", "trainer.precision=32", f"hydra.run.dir={tmp_path / 'o'}"],
    )
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: trainer.precision='32' is not an evaluate.py setting"
    )
