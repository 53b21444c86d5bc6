"""pyproject.toml and the Makefile keep the promises the docs and messages make about installing."""

from __future__ import annotations

import re
import subprocess

import pytest

from .helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# `pip install 'resnets[timm]'`, `pip install -e '.[export]'`, in messages and docs alike
EXTRA_MENTION = re.compile(r"pip install (?:-e )?'(?:resnets|\.)\[([\w,-]+)\]'")


def _texts() -> dict[str, str]:
    files = [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "resnets").rglob("*.py"),
        REPO / "Makefile",
    ]
    return {str(f.relative_to(REPO)): f.read_text() for f in files}


def test_every_extra_the_docs_and_messages_name_exists() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = {
        (where, extra)
        for where, text in _texts().items()
        for group in EXTRA_MENTION.findall(text)
        for extra in group.split(",")
    }
    assert ("resnets/models/pretrained.py", "timm") in named  # the pattern finds what it should
    unknown = sorted((where, extra) for where, extra in named if extra not in extras)
    assert not unknown, f"extras named but not in pyproject.toml: {unknown}"


def test_timm_extra_installs_timm() -> None:
    assert any(r.startswith("timm") for r in PYPROJECT["project"]["optional-dependencies"]["timm"])


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    # the table form `{ text = "MIT" }` makes setuptools >= 77 print a deprecation warning per build
    assert PYPROJECT["project"]["license"] == "MIT"
    requires = PYPROJECT["build-system"]["requires"]
    floor = [r for r in requires if r.startswith("setuptools")]
    assert floor and tuple(map(int, floor[0].split(">=")[1].split("."))) >= (77,)


def _make_dry_run(*args: str) -> str:
    out = subprocess.run(
        ["make", "-n", "-B", "setup", "VENV=/nonexistent-venv", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_make_setup_installs_the_pinned_torch_from_pypi_by_default() -> None:
    torch_line = next(line for line in _make_dry_run().splitlines() if "torch==" in line)
    assert "--index-url" not in torch_line and "torch==2.14.1 torchvision==0.29.1" in torch_line


def test_make_setup_takes_the_cpu_wheel_index() -> None:
    index = "https://download.pytorch.org/whl/cpu"
    torch_line = next(
        line for line in _make_dry_run(f"TORCH_INDEX={index}").splitlines() if "torch==" in line
    )
    assert f"--index-url {index} torch==2.14.1 torchvision==0.29.1" in torch_line
    # only torch comes from that index: the project's own dependencies still come from PyPI
    project_line = next(
        line for line in _make_dry_run(f"TORCH_INDEX={index}").splitlines() if "-e '." in line
    )
    assert "--index-url" not in project_line
