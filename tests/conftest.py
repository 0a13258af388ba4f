"""Shared fixtures: paths to the real evidence and small builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EVIDENCE = Path(os.environ.get("CMCP_EVIDENCE_DIR", REPO.parent / "shared" / "evidence"))


@pytest.fixture(scope="session")
def evidence_dir() -> Path:
    """The real hardware evidence of ../shared/evidence (see its EXPECTED.md)."""
    if not EVIDENCE.is_dir():
        pytest.fail(f"evidence directory {EVIDENCE} missing; set CMCP_EVIDENCE_DIR")
    return EVIDENCE
