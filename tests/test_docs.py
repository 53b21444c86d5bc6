"""The README and docs/ stand on their own: every file they point at is in the repository."""

from __future__ import annotations

import re

from .helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)")
REPO_DIRS = {"docs", "conf", "resnets", "tests", "benchmarks", "shared"}
PATHLIKE = re.compile(r"`([\w./-]+\.(?:md|py|yaml|json|toml))`")


def test_docs_cite_only_files_in_the_repository() -> None:
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        assert "shared/" not in text, f"{doc.name} cites the development notes (shared/)"
        for target in LINK.findall(text):
            if "://" not in target and not (doc.parent / target).exists():
                missing.append((doc.name, target))
        for path in PATHLIKE.findall(text):
            # a path into one of the repository's own folders must exist (run-directory paths
            # such as .hydra/overrides.yaml or outputs/... are not files of the repository)
            top = path.split("/")[0]
            in_repo = "/" in path and top in REPO_DIRS and "<" not in path
            if in_repo and not (REPO / path).exists():
                missing.append((doc.name, path))
    assert not missing, missing
