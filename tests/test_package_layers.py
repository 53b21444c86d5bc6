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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (at the top or inside functions); `from .pkg
    import name` counts the submodule `pkg.name` when there is one, else `pkg` itself."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    """Imports inside functions count: they only hide a cycle until someone moves them up."""
    graph = import_graph()
    assert "resnets.engine.loop" in graph["resnets.engine.trainer"]  # `from . import loop`
    assert "resnets.models.timm_hub" in graph["resnets.models.pretrained"]  # inside a function
    assert cycles(graph) == []


def test_the_named_networks_are_plain_data_the_others_read() -> None:
    """models.presets imports nothing of the package: the registry and the pretrained loader
    both read it, and the runtime checks are told the network's facts instead of importing it."""
    graph = import_graph()
    assert graph["resnets.models.presets"] == set()
    assert "resnets.models.presets" in graph["resnets.models.pretrained"]
    assert "resnets.models.registry" not in graph["resnets.models.pretrained"]
    assert not any(m.startswith("resnets.models") for m in graph["resnets.runtime"])


def test_the_schema_is_a_leaf_the_factories_import() -> None:
    """resnets.config imports no factory (they import its ConfigError and defaults); the
    validation that reads the factories' tables sits above them."""
    graph = import_graph()
    assert graph["resnets.config"] <= {"resnets.renamed", "resnets.run_record"}
    assert {"resnets.optim", "resnets.runtime", "resnets.data"} <= graph["resnets.validation"]
    assert "resnets.config" in graph["resnets.optim"]
