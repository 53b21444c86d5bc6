"""Every `python train.py ...` (and `torchrun ... train.py ...`) command in README.md and docs/
composes through Hydra, as `python train.py ... --cfg job` would, so none goes stale.

A `-m` command is composed once per value of each swept parameter (the others at their first
value): every value it names is checked, without the product of all combinations. A command may
hold only the placeholders in PLACEHOLDERS; any other unknown text fails composition."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from resnets.config import register_configs

from .helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# text a command may carry that is not an override: `...` means "and your other settings"
PLACEHOLDERS = {"..."}
TRAIN_COMMAND = re.compile(r"^(?:\$ )?(?:python|torchrun\b.*?) ?train\.py\b(.*)$")
INLINE_COMMAND = re.compile(r"`(python train\.py[^`]*)`")
# a command the docs show followed by its `error: ...` line: it must be refused, not compose
REFUSED_MARK = "refused: "


def _fenced_commands(text: str) -> list[str]:
    """Command lines of the shell blocks, continuation lines joined."""
    commands, in_block, pending, previous = [], False, "", ""
    for line in text.splitlines():
        line_above, previous = previous, line
        if in_block and line.startswith("error: ") and TRAIN_COMMAND.match(line_above.strip()):
            commands[-1] = REFUSED_MARK + commands[-1]  # shown with its error: a refusal
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if TRAIN_COMMAND.match(line):
            commands.append(line)
    return commands


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        lines = _fenced_commands(text) + INLINE_COMMAND.findall(text)
        found += [(doc.name, line) for line in lines]
    return found


def train_arguments(line: str) -> tuple[list[str], bool]:
    """The overrides of one command line (comments and allowed placeholders removed) and
    whether it is a `-m` sweep."""
    match = TRAIN_COMMAND.match(line)
    assert match, line
    args = shlex.split(match.group(1), comments=True)
    multirun = "-m" in args or "--multirun" in args
    args = [a for a in args if a not in ("-m", "--multirun")]
    unexplained = [a for a in args if "=" not in a and a not in PLACEHOLDERS]
    assert not unexplained, (
        f"{line!r}: {unexplained} is neither an override nor an allowed placeholder"
    )
    return [a for a in args if a not in PLACEHOLDERS], multirun


def sweep_points(args: list[str]) -> list[list[str]]:
    """One override list per value of each swept parameter (others at their first value)."""
    parsed = OverridesParser.create().parse_overrides(args)
    values = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    first = [v[0] for v in values]
    points = [first]
    for i, choices in enumerate(values):
        points += [[*first[:i], choice, *first[i + 1 :]] for choice in choices[1:]]
    return points


COMMANDS = documented_commands()


def test_the_docs_hold_train_commands() -> None:
    # the extraction itself: a broken pattern would find nothing and check nothing
    names = {doc for doc, _ in COMMANDS}
    assert {"README.md", "training.md", "sweeps.md", "cluster.md", "fine-tuning.md"} <= names
    assert sum(line.startswith("torchrun") for _, line in COMMANDS) >= 2
    assert any(" -m " in line for _, line in COMMANDS)


def test_sweep_points_cover_every_value_once() -> None:
    points = sweep_points(["model=resnet20,resnet56", "seed=0,1,2", "data=digits"])
    assert points == [
        ["model=resnet20", "seed=0", "data=digits"],
        ["model=resnet56", "seed=0", "data=digits"],
        ["model=resnet20", "seed=1", "data=digits"],
        ["model=resnet20", "seed=2", "data=digits"],
    ]


def test_an_unknown_word_in_a_command_is_not_skipped() -> None:
    with pytest.raises(AssertionError, match="neither an override"):
        train_arguments("python train.py model=resnet20 PATH")


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_train_command_composes(doc: str, line: str) -> None:
    if line.startswith(REFUSED_MARK):
        _assert_refused(line.removeprefix(REFUSED_MARK))
        return
    args, multirun = train_arguments(line)
    points = sweep_points(args) if multirun else [args]
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for overrides in points:
            # what `python train.py ARGS --cfg job` prints, hydra.* overrides included
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
            assert cfg.model.name and cfg.data.name, (doc, line)


def _assert_refused(line: str) -> None:
    """A documented bad command: Hydra's parser or composition refuses it, or (composed) the
    checks train.py runs before its first log line do."""
    from hydra.errors import HydraException

    from resnets.config import ConfigError
    from resnets.models import ModelError
    from resnets.refused_run import check_before_start

    args = shlex.split(TRAIN_COMMAND.match(line).group(1), comments=True)
    register_configs()
    with (
        initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"),
        pytest.raises((HydraException, ConfigError, ModelError)),
    ):
        check_before_start(compose("train", overrides=args))


def test_documented_refusals_are_found() -> None:
    refused = [line for doc, line in COMMANDS if line.startswith(REFUSED_MARK)]
    assert any("model=resnet51" in line for line in refused), refused


def test_a_stale_command_fails_composition() -> None:
    from hydra.errors import ConfigCompositionException

    args, _ = train_arguments("python train.py model=resnet20 trainer.no_such_field=1")
    register_configs()
    with (
        initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"),
        pytest.raises(ConfigCompositionException),
    ):
        compose("train", overrides=args, return_hydra_config=True)


def test_docs_are_the_files_read() -> None:
    assert Path(REPO / "README.md") in DOCS and len(DOCS) > 5


def test_readme_is_a_front_door_linking_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200  # the reference lives in docs/, by task
    unlinked = [p.name for p in (REPO / "docs").glob("*.md") if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
