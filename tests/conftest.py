"""Shared fixtures: paths to the real evidence and small builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .tpm_fixtures import swtpm  # noqa: F401  (the swtpm fixture, for every test)

REPO = Path(__file__).resolve().parent.parent


def _find_evidence() -> Path:
    """$CMCP_EVIDENCE_DIR, else the copy of ../shared/evidence kept in tests/data/evidence."""
    if "CMCP_EVIDENCE_DIR" in os.environ:
        return Path(os.environ["CMCP_EVIDENCE_DIR"])
    return REPO / "tests" / "data" / "evidence"


EVIDENCE = _find_evidence()


@pytest.fixture(scope="session")
def evidence_dir() -> Path:
    """The real hardware evidence (tests/data/evidence, see its EXPECTED.md and LICENSES.md)."""
    if not EVIDENCE.is_dir():
        pytest.fail(f"evidence directory {EVIDENCE} missing; set CMCP_EVIDENCE_DIR")
    return EVIDENCE
