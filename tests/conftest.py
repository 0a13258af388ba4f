"""Shared fixtures: paths to the real evidence and small builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .tpm_fixtures import swtpm  # noqa: F401  (the swtpm fixture, for every test)

REPO = Path(__file__).resolve().parent.parent


def _find_evidence() -> Path:
    """``../shared/evidence`` of the checkout (worktrees may sit deeper), or $CMCP_EVIDENCE_DIR."""
    if "CMCP_EVIDENCE_DIR" in os.environ:
        return Path(os.environ["CMCP_EVIDENCE_DIR"])
    for parent in REPO.parents:
        if (parent / "shared" / "evidence").is_dir():
            return parent / "shared" / "evidence"
    return REPO.parent / "shared" / "evidence"


EVIDENCE = _find_evidence()


@pytest.fixture(scope="session")
def evidence_dir() -> Path:
    """The real hardware evidence of ../shared/evidence (see its EXPECTED.md)."""
    if not EVIDENCE.is_dir():
        pytest.fail(f"evidence directory {EVIDENCE} missing; set CMCP_EVIDENCE_DIR")
    return EVIDENCE
