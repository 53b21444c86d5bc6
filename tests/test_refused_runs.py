"""A run refused for bad input leaves no folder behind and prints its one error line first."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from resnets import refused_run
from resnets.models import ModelError
from resnets.models.registry import check_model_fields

from .helpers import run_script_inprocess


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory: Hydra's default `outputs/...` folders are made here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_refused_for_a_bad_depth_leaves_nothing_and_logs_nothing_first(
    workdir, capsys
) -> None:
    code = run_script_inprocess("train", ["model=resnet", "model.depth=42"])
    out, err = capsys.readouterr()
    assert code == 2
    assert _tree(workdir) == []  # neither outputs/resnet-digits/<time>/ nor outputs/
    assert err.strip().splitlines() == [
        "error: model.depth=42 is not valid; accepted: 18, 34, 50, 101, 152 (ImageNet) or "
        "6n+2: 20, 32, 44, 56, 110, 1202; 9n+2: 29, 164, 1001 (CIFAR)"
    ]
    assert "INFO" not in out + err


def test_train_refused_after_logging_started_still_leaves_nothing(workdir) -> None:
    # data=imagefolder without data.root is refused when the data is built (after the device line)
    assert run_script_inprocess("train", ["data=imagefolder"]) == 2
    assert _tree(workdir) == []


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("evaluate", ["ckpt=missing.pt"]),
        ("export", ["ckpt=missing.pt"]),
        ("predict", ["ckpt=missing.pt", "images=."]),
    ],
)
def test_tools_refused_for_a_missing_checkpoint_leave_nothing(
    workdir, capsys, script, args
) -> None:
    code = run_script_inprocess(script, args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "missing.pt" in err
    assert _tree(workdir) == []  # no outputs/<tool>/<time>/ with an empty log


def test_a_refused_attempt_in_an_existing_run_dir_keeps_it(workdir) -> None:
    # a resume (or any attempt) in a directory that existed before is never removed
    run = workdir / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "train.log").write_text("the first attempt's log\n")
    code = run_script_inprocess("train", ["model=resnet", "model.depth=42", f"hydra.run.dir={run}"])
    assert code == 2
    assert (run / "train.log").read_text().startswith("the first attempt's log")
    assert (run / "checkpoints").is_dir() and (run / ".hydra" / "overrides.yaml").exists()


def test_a_fresh_dir_holding_more_than_hydras_record_is_kept(tmp_path) -> None:
    run = tmp_path / "new" / "run"
    refused_run.FreshRunDir().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(run)}}}))
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("")
    (run / "tb").mkdir()  # training started: what it wrote stays for the user to read
    assert not refused_run.discard_fresh_run_dir(run)
    assert (run / "tb").is_dir()
    (run / "tb").rmdir()
    assert refused_run.discard_fresh_run_dir(run)
    assert _tree(tmp_path) == []  # new/ too: this attempt created it


def test_model_fields_are_checked_without_building() -> None:
    with pytest.raises(ModelError, match=r"^model\.depth=42 is not valid"):
        check_model_fields({"name": "resnet", "depth": 42, "pretrained": None})
    with pytest.raises(ModelError, match=r"^model\.widthh="):
        check_model_fields({"name": "resnet20", "widthh": 3})
    check_model_fields({"name": "resnet", "depth": 164, "block": "bottleneck", "in_chans": 1})
    check_model_fields({"name": "attention56", "drop_rate": 0.1})
