"""Every upstream fault, one place: connection refused, reset mid-stream, slow loris (JSON and
SSE), never-ending SSE (after the reply, and without one), oversized results (body and event),
invalid JSON, duplicate keys, wrong content type, another request's id, 202 and 500 answers,
TLS failure (an untrusted certificate) and redirects (never followed). For each: the agent's
specific JSON-RPC error, an audit entry with the fault's code, /healthz answering, and the
gateway's RSS and open descriptors steady (upstream_faults.py; ``make reliability`` runs 200
rounds, results in docs/reliability.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from .upstream_faults import run

ROUNDS = int(os.environ.get("CMCP_FAULT_ROUNDS", "3"))


def test_upstream_faults_get_specific_errors_and_audit_entries(tmp_path: Path) -> None:
    result = run(tmp_path, ROUNDS)
    assert result["problems"] == [], result["problems"]
    assert result["fds_at_end"] <= result["fds_after_first_round"] + 2, result["samples"]
    # A few rounds only show nothing runs away; the 200-round campaign measures the trend.
    assert result["rss_growth_percent"] < 25, result["samples"]
