"""Data flows one way: models import neither the engine nor the data; the engine runs without Hydra."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from resnets import checkpoint_io
from resnets.engine import checkpoint as engine_checkpoint
from resnets.models.pretrained import state_from_file

PACKAGE = Path(__file__).resolve().parents[1] / "resnets"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, relative imports resolved."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            else:
                found.add(node.module or "")
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("models", ("resnets.engine", "resnets.data")),
        ("checkpoint_io.py", ("resnets.engine", "resnets.models", "resnets.data")),
        ("engine", ("hydra.core.hydra_config",)),
    ],
)
def test_no_import_against_the_flow(folder: str, forbidden: tuple[str, ...]) -> None:
    root = PACKAGE / folder
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    bad = {
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    }
    # the entry points' glue (engine/cli.py) owns Hydra; the trainer and evaluation do not
    bad = {b for b in bad if not b.startswith("resnets/engine/cli.py")}
    assert not bad, sorted(bad)


def test_models_read_weights_through_the_one_reader(tmp_path: Path) -> None:
    """The engine's old import path names the same reader and the same error class."""
    assert engine_checkpoint.CheckpointError is checkpoint_io.CheckpointError
    assert engine_checkpoint.load_checkpoint is checkpoint_io.load_checkpoint
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.ones(2)}, bare)
    weights, state = state_from_file(bare, use_ema=False)
    assert state is None and torch.equal(weights["w"], torch.ones(2))
    with pytest.raises(engine_checkpoint.CheckpointError, match=r"empty\.pt: is empty \(0 bytes\)"):
        (tmp_path / "empty.pt").touch()
        state_from_file(tmp_path / "empty.pt", use_ema=False)
