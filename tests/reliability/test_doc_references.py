"""The reliability docs point at tests by ``file::test``; every such test must exist, so the
threat model and the results never cite a test that was renamed or removed."""

from __future__ import annotations

import re

import pytest

from tests.mcp.peers import REPO

DOCS = ("docs/threat-model.md", "docs/reliability.md")
# "tests/x.py::test_a, ::test_b" → (tests/x.py, test_a), (tests/x.py, test_b)
_REF = re.compile(r"((?:e2e/)?tests/[\w/]+\.py)((?:(?:::|, ::)\w+(?:\[[^\]]*\])?)+)")


def references() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        for match in _REF.finditer((REPO / doc).read_text()):
            for name in re.findall(r"::(\w+)", match.group(2)):
                found.append((doc, match.group(1), name))
    return found


@pytest.mark.parametrize(("doc", "path", "name"), references())
def test_cited_tests_exist(doc: str, path: str, name: str) -> None:
    source = (REPO / path).read_text()
    assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{doc} cites {path}::{name}"


def test_the_docs_cite_tests() -> None:
    assert len(references()) > 40
