"""Helpers shared by the evidence tests: a check's status, and the CLI run in-process."""

from __future__ import annotations

import pytest

from cmcp_verifier.cli import main
from cmcp_verifier.report import Report, Status


def status(report: Report, name: str) -> Status:
    """The status of the check called ``name``."""
    return next(c.status for c in report.checks if c.name == name)


def run_evidence_cli(capsys: pytest.CaptureFixture[str], kind: str, *args: str) -> tuple[int, str]:
    """``cmcp-verify evidence --type KIND ARGS``: (exit status, stdout + stderr)."""
    try:
        code = main(["evidence", "--type", kind, *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err
