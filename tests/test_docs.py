"""The README and docs/ stand on their own: every file they point at is in the repository."""

from __future__ import annotations

import re

from .helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)")
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
            if "/" in path and "<" not in path and not (REPO / path).exists():
                missing.append((doc.name, path))
    assert not missing, missing
