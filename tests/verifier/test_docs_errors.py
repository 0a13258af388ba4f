"""docs/errors.md lists every error code the project names, and no code it no longer has."""

from __future__ import annotations

import re
from pathlib import Path

from ..conftest import REPO

PACKAGES = (
    REPO / "verifier" / "cmcp_verifier",
    REPO / "sidecar" / "cmcp_sidecar",
    REPO / "operator" / "cmcp_operator",
)
NAME = r'"([a-z0-9-]+(?:\.[a-z0-9_-]+)+)"'
# The ways the source names a code: the keyword/attribute of CmcpError, a policy bundle's
# Problem (Problem("bundle.syntax", …) or src.add("bundle.syntax", …)), and the audit storage
# errno table (errno.ENOSPC: ("audit.disk_full", …)).
CODE_SITES = (
    re.compile(r"\bcode(?:: str)?\s*=\s*" + NAME),
    re.compile(r"\b(?:Problem|src\.add)\(\s*" + NAME),
    re.compile(r"\berrno\.E[A-Z]+:\s*\(\s*" + NAME),
)
DOC_ROW = re.compile(r"^\| `([a-z0-9_.-]+)` \|", re.M)


def documented_codes() -> list[str]:
    return DOC_ROW.findall((REPO / "docs" / "errors.md").read_text())


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in package.rglob("*.py"))


def _named() -> set[tuple[str, str]]:
    return {
        (code, p.relative_to(REPO).as_posix())
        for p in _sources()
        for site in CODE_SITES
        for code in site.findall(p.read_text())
    }


def test_every_code_in_the_source_is_documented() -> None:
    documented = set(documented_codes())
    named = _named()
    assert len(named) > 150  # the patterns still find the raise sites
    missing = sorted(f"{code} ({where})" for code, where in named if code not in documented)
    assert not missing, f"add to docs/errors.md: {missing}"


def test_every_documented_code_is_still_used() -> None:
    source = "\n".join(p.read_text() for p in _sources())
    stale = [c for c in documented_codes() if f'"{c}"' not in source]
    assert not stale, f"codes in docs/errors.md no package names any more: {stale}"


def test_each_code_is_documented_once_in_a_stable_form() -> None:
    codes = documented_codes()
    assert len(codes) == len(set(codes)), sorted(c for c in set(codes) if codes.count(c) > 1)
    for code in codes:
        assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9_]+)+", code), code
