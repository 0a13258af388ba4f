"""Crash safety for real: a child appending concurrently is killed with SIGKILL at random
moments; every acknowledged entry survives, the chain verifies, torn tails are recorded
(including simulated partial persistence of an unacknowledged tail, see kill_audit.py).

A few rounds per mode here; tests/reliability/kill_audit.py runs the 50+ kill campaign
(results in docs/reliability.md).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ..reliability.kill_audit import Campaign

KILLS = int(os.environ.get("CMCP_KILL_ROUNDS", "5"))


@pytest.mark.parametrize("mode", ["every", "batch"])
def test_no_acknowledged_entry_is_lost_under_sigkill(tmp_path: Path, mode: str) -> None:
    campaign = Campaign(tmp_path, mode, random.Random(f"make-test-{mode}"))
    for _ in range(KILLS):
        result = campaign.run_round()
        assert result.verified, f"round {result.round}: the chain does not verify"
        assert not result.missing, f"round {result.round}: acknowledged seqs lost {result.missing}"
        if result.cut_simulated:
            assert result.torn_recorded > 0, f"round {result.round}: torn tail not recorded"
    assert len(campaign.acked) > 0, "the child never acknowledged anything"
