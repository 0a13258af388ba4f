"""The evidence copy in tests/data/evidence equals the shared original it was taken from."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from .conftest import REPO

COPY = REPO / "tests" / "data" / "evidence"
OURS = {"LICENSES.md"}


def _shared_original() -> Path | None:
    for parent in REPO.parents:
        if (parent / "shared" / "evidence").is_dir():
            return parent / "shared" / "evidence"
    return None


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_copy_equals_shared_original() -> None:
    original = _shared_original()
    if original is None:
        pytest.skip("no ../shared/evidence next to this checkout: nothing to compare")
    assert _files(COPY) - OURS == _files(original)
    _, mismatch, errors = filecmp.cmpfiles(original, COPY, sorted(_files(original)), shallow=False)
    assert mismatch == [] and errors == []


def test_copy_names_its_licences() -> None:
    assert (COPY / "LICENSES.md").is_file() and (COPY / "EXPECTED.md").is_file()
