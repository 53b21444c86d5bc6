"""Type and grammar errors in overrides (Hydra's composition errors) end in one line naming the
field, exit status 2, through every entry script; Hydra's full message with HYDRA_FULL_ERROR=1."""

from __future__ import annotations

import os

import pytest

import resnets.engine.cli

from .helpers import run_script_inprocess

# (override, what the one line must contain)
BAD = {
    "epochs not an integer": ("trainer.epochs=abc", "trainer.epochs='abc' is not valid; accepted: an integer"),
    "unknown field": ("trainer.nope=1", "trainer.nope is not a field of trainer"),
    "empty value": ("trainer.batch_size=", "trainer.batch_size='' is not valid; accepted: an integer"),
    "seed nan": ("seed=nan", "seed='nan' is not valid; accepted: an integer"),
    "unquoted non-ASCII": ("run_name=café", "run_name=café cannot be parsed"),
    "unclosed list": ("data.mean=[1,2", "data.mean=[1,2 cannot be parsed"),
    "unknown preset": ("model=resnet51", "model='resnet51' is not a preset; closest: resnet56, resnet50"),
    "unknown group option": ("optim=adamx", "optim='adamx' is not a preset; closest: adamw"),
}  # fmt: skip


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_override_is_one_line_exit_2(tmp_path, capsys, monkeypatch, case) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    override, expected = BAD[case]
    status = run_script_inprocess("train", [override, f"hydra.run.dir={tmp_path / 'run'}"])
    line = _one_line(capsys)
    assert status == 2 and line.startswith("error: ") and expected in line, line
    assert not (tmp_path / "run").exists()  # refused before the job made its directory


# predict.py reads a batch size of its own (it has no trainer node)
@pytest.mark.parametrize(
    ("script", "field"),
    [
        ("evaluate", "trainer.batch_size"),
        ("export", "trainer.batch_size"),
        ("predict", "batch_size"),
    ],
)
def test_other_entry_points_too(tmp_path, capsys, monkeypatch, script, field) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    status = run_script_inprocess(script, [f"{field}=big", "tta=x"])
    line = _one_line(capsys)
    assert status == 2 and f"{field}='big' is not valid; accepted: an integer" in line, line


def test_full_error_shows_hydras_message(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    from hydra.errors import ConfigCompositionException

    with pytest.raises(
        ConfigCompositionException, match=r"Error merging override trainer\.epochs=abc"
    ):
        run_script_inprocess("train", ["trainer.epochs=abc", f"hydra.run.dir={tmp_path}"])


def test_error_inside_the_job_keeps_hydras_report(tmp_path, capsys, monkeypatch) -> None:
    """Only composition errors are shortened: a failure in the job keeps its traceback, exit 1."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def broken(cfg):
        raise RuntimeError("boom in the job")

    monkeypatch.setattr(resnets.engine.cli, "run_train", broken)
    status = run_script_inprocess("train", [f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 1 and "RuntimeError: boom in the job" in err and "Traceback" in err
    assert "HYDRA_FULL_ERROR" not in os.environ  # set for the call only
