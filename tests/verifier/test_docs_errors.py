"""docs/errors.md lists every error code the verifier names, and no code it no longer has."""

from __future__ import annotations

import re
from pathlib import Path

from ..conftest import REPO

SOURCE = REPO / "verifier" / "cmcp_verifier"
CODE_LITERAL = re.compile(r'\bcode(?:: str)?\s*=\s*"([a-z0-9_.-]+)"')
DOC_ROW = re.compile(r"^\| `([a-z0-9_.-]+)` \|", re.M)


def _verifier_section() -> str:
    text = (REPO / "docs" / "errors.md").read_text()
    start = text.index("## Verifier")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _sources() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_every_code_in_the_source_is_documented() -> None:
    documented = set(DOC_ROW.findall(_verifier_section()))
    named = {(m, p.name) for p in _sources() for m in CODE_LITERAL.findall(p.read_text())}
    assert len(named) > 90
    missing = sorted(f"{code} ({where})" for code, where in named if code not in documented)
    assert not missing, f"add to docs/errors.md: {missing}"


def test_every_documented_code_is_still_used() -> None:
    source = "\n".join(p.read_text() for p in _sources())
    stale = [c for c in DOC_ROW.findall(_verifier_section()) if f'"{c}"' not in source]
    assert not stale, f"codes in docs/errors.md the verifier no longer names: {stale}"


def test_codes_are_dotted_and_stable_in_form() -> None:
    for code in DOC_ROW.findall(_verifier_section()):
        assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9_]+)+", code), code
