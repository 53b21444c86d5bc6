"""Renamed model fields: an old name given now stops with one line naming the new one; the config
stored inside an older checkpoint is translated, so its weights still evaluate and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from resnets.config import ConfigError
from resnets.engine.checkpoint import load_checkpoint, save_checkpoint
from resnets.engine.trainer import train
from resnets.models import ModelError, build_model
from resnets.renamed import RENAMED_MODEL_FIELDS, upgrade_stored_config
from resnets.validation import validate

from .helpers import TINY, compose_train, read_metrics, run_script_inprocess

OLD_VALUES = {"base_width": 8, "dropout": 0.1, "block_dropout": 0.1, "drop_path": 0.05}
# the second renaming: names a timm user reads as something else (the deep stem, DropBlock)
SECOND_VALUES = {"stem_width": 8, "block_drop_rate": 0.1}
ALL_OLD = {**OLD_VALUES, **SECOND_VALUES}
NEW_OVERRIDES = [f"model.{RENAMED_MODEL_FIELDS[k]}={v}" for k, v in OLD_VALUES.items()]


def test_renamed_fields_are_the_timm_names_and_the_model_takes_them() -> None:
    assert RENAMED_MODEL_FIELDS == {
        "base_width": "base_channels",
        "stem_width": "base_channels",
        "dropout": "drop_rate",
        "block_dropout": "inner_dropout",
        "block_drop_rate": "inner_dropout",
        "drop_path": "drop_path_rate",
    }
    net = build_model(
        "resnet20", 10, base_channels=8, drop_rate=0.3, inner_dropout=0.2, drop_path_rate=0.1
    )
    assert net.conv1.out_channels == 8 and net.layer3[0].conv1.out_channels == 32
    assert net.dropout.p == 0.3  # before the classifier
    assert net.layer1[0].dropout.p == 0.2  # between the convs of each basic block
    # stochastic depth: 0 at the first block, the full rate at the last
    assert net.layer3[-1].drop_path.p == pytest.approx(0.1)
    assert not hasattr(net.layer1[0].drop_path, "p") or net.layer1[0].drop_path.p == 0


@pytest.mark.parametrize(("old", "value"), ALL_OLD.items())
def test_an_old_name_in_a_config_is_refused_naming_the_new_one(old: str, value) -> None:
    new = RENAMED_MODEL_FIELDS[old]
    with pytest.raises(ConfigError) as info:
        validate(compose_train([*TINY, f"model.{old}={value}"]))
    assert str(info.value) == f"model.{old} was renamed to model.{new} (model.{new}={value!r})"


@pytest.mark.parametrize(("old", "value"), ALL_OLD.items())
def test_an_old_name_to_build_model_is_refused_naming_the_new_one(old: str, value) -> None:
    with pytest.raises(
        ModelError, match=rf"^model\.{old} was renamed to model\.{RENAMED_MODEL_FIELDS[old]}"
    ):
        build_model("resnet20", 10, **{old: value})
    with pytest.raises(ModelError, match=r"^model\.dropout was renamed to model\.drop_rate"):
        build_model("attention56_cifar", 10, dropout=0.2)


def test_train_cli_with_an_old_name_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    for old in ("base_width", "stem_width"):
        code = run_script_inprocess("train", [*TINY, f"model.{old}=8", f"hydra.run.dir={tmp_path}"])
        assert code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert lines == [
            f"error: model.{old} was renamed to model.base_channels (model.base_channels=8)"
        ]
        assert not (tmp_path / "checkpoints").exists()


def _with_old_names(path: Path, out: Path, olds=OLD_VALUES) -> dict:
    """A copy of checkpoint `path` whose stored config names the model fields the old way."""
    state = torch.load(path, weights_only=True)
    config = OmegaConf.to_container(OmegaConf.create(state["config"]))
    model = config["model"]
    for old in olds:
        model.pop(old, None)
        model[old] = model.pop(RENAMED_MODEL_FIELDS[old])
    state["config"] = OmegaConf.to_yaml(OmegaConf.create(config))
    save_checkpoint(out, state)
    return state


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """One epoch of a tiny network using every renamed field, its last.pt rewritten with the old
    names in its stored config (as a checkpoint written before the rename holds them)."""
    run_dir = tmp_path_factory.mktemp("old_run")
    train(compose_train([*TINY, *NEW_OVERRIDES, "trainer.epochs=1"]), output_dir=run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    _with_old_names(last, last)
    return run_dir


def test_an_old_checkpoints_config_is_read_under_the_new_names(old_run) -> None:
    raw = torch.load(old_run / "checkpoints" / "last.pt", weights_only=True)
    assert "base_width: 8" in raw["config"] and "base_channels" not in raw["config"]
    model = OmegaConf.create(load_checkpoint(old_run / "checkpoints" / "last.pt")["config"]).model
    for old, value in OLD_VALUES.items():
        assert model[RENAMED_MODEL_FIELDS[old]] == value and old not in model
    # a config without old names is returned as it is
    assert upgrade_stored_config("model:\n  name: resnet20\n") == "model:\n  name: resnet20\n"


def test_evaluate_scores_an_old_checkpoint(old_run, tmp_path) -> None:
    ckpt = old_run / "checkpoints" / "last.pt"
    code = run_script_inprocess("evaluate", [f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}"])
    assert code == 0
    scored = json.loads((old_run / "eval" / "last" / "metrics.json").read_text())
    assert scored["top1"] == pytest.approx(read_metrics(old_run)["val_top1"], abs=1e-9)


def test_an_old_checkpoint_resumes(old_run) -> None:
    before = load_checkpoint(old_run / "checkpoints" / "last.pt")
    train(compose_train([*TINY, *NEW_OVERRIDES, "trainer.epochs=2"]), output_dir=old_run)
    after = load_checkpoint(old_run / "checkpoints" / "last.pt")
    assert (before["epoch"], after["epoch"]) == (1, 2) and after["step"] == 2 * before["step"]


def test_evaluate_with_an_old_name_on_the_command_line_is_one_line_and_exit_2(
    old_run, tmp_path, capsys
) -> None:
    ckpt = old_run / "checkpoints" / "last.pt"
    code = run_script_inprocess(
        "evaluate", [f"ckpt={ckpt}", "model.drop_path=0.2", f"hydra.run.dir={tmp_path}"]
    )
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [
        "error: model.drop_path was renamed to model.drop_path_rate (model.drop_path_rate=0.2)"
    ]


def test_a_checkpoint_of_the_second_names_is_read_under_the_new_ones(old_run, tmp_path) -> None:
    """stem_width and block_drop_rate (before base_channels and inner_dropout) translate too."""
    src = old_run / "checkpoints" / "best.pt"
    _with_old_names(src, tmp_path / "second.pt", SECOND_VALUES)
    raw = torch.load(tmp_path / "second.pt", weights_only=True)
    assert "stem_width: 8" in raw["config"] and "block_drop_rate: 0.1" in raw["config"]
    model = OmegaConf.create(load_checkpoint(tmp_path / "second.pt")["config"]).model
    assert model.base_channels == 8 and model.inner_dropout == 0.1
    assert "stem_width" not in model and "block_drop_rate" not in model
