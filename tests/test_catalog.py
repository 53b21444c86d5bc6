"""The registry owns every preset: the YAML presets and the docs table are generated from it."""

from __future__ import annotations

import shutil

import pytest
import yaml

from resnets.models import build_model, build_model_from_config, list_models
from resnets.models.catalog import main, stale_files

from .helpers import REPO, compose_train


def test_every_preset_yaml_only_names_its_preset() -> None:
    for path in (REPO / "conf" / "model").glob("*.yaml"):
        assert yaml.safe_load(path.read_text()) == {"name": path.stem}, path
    names = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert names == set(list_models())


def test_generated_presets_are_current() -> None:
    assert stale_files(REPO, with_docs=False) == []


@pytest.mark.slow
def test_docs_models_table_is_current() -> None:
    # Builds all 42 networks on the meta device and counts their FLOPs (about 30 s here).
    assert stale_files(REPO) == []


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet28_10", "attention92_cifar"])
def test_command_line_and_python_build_the_same_network(name: str) -> None:
    cfg = compose_train([f"model={name}"])
    from_cli = build_model_from_config(cfg.model, num_classes=10, in_chans=3, image_size=32)
    from_api = build_model(name, num_classes=10, image_size=32)
    shapes = {k: tuple(v.shape) for k, v in from_api.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in from_cli.state_dict().items()} == shapes


def test_check_names_a_stale_or_orphan_preset(tmp_path, capsys) -> None:
    shutil.copytree(REPO / "conf" / "model", tmp_path / "conf" / "model")
    (tmp_path / "conf" / "model" / "resnet50.yaml").write_text("name: resnet50\ndepth: 101\n")
    (tmp_path / "conf" / "model" / "resnet51.yaml").write_text("name: resnet51\n")
    stale = stale_files(tmp_path, with_docs=False)
    assert stale == [
        str(tmp_path / "conf" / "model" / "resnet50.yaml"),
        f"{tmp_path / 'conf' / 'model' / 'resnet51.yaml'} (no such preset in the registry)",
    ]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "models.md").write_text("# Models\nno markers\n")
    with pytest.raises(ValueError, match="markers"):
        main(["--check", "--repo", str(tmp_path)])
