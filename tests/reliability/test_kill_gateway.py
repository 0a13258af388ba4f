"""The real gateway killed with SIGKILL under concurrent MCP load, restarted each time: the chain
verifies after every restart and holds every call the agent saw answered (kill_gateway.py).

A few rounds per fsync mode here; ``make reliability`` runs the 50-kill campaign per mode
(results in docs/reliability.md).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mcp.peers import sdk_server

from .harness import pin_catalog, write_setup
from .kill_gateway import GatewayCampaign

# 5 kills in make test (3 batch, 2 every); CMCP_GATEWAY_KILL_ROUNDS=N runs N per mode.
ROUNDS = os.environ.get("CMCP_GATEWAY_KILL_ROUNDS")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Any]]:
    with sdk_server() as url:
        yield url, pin_catalog(url, labels={"lookup_customer": ["pii"]})


@pytest.mark.parametrize(("fsync", "kills"), [("every", 2), ("batch", 3)])
def test_no_answered_call_is_lost_when_the_gateway_is_killed(
    tmp_path: Path, upstream: tuple[str, Any], fsync: str, kills: int
) -> None:
    url, catalog = upstream
    setup = write_setup(tmp_path, url, catalog=catalog, audit={"fsync": fsync})
    campaign = GatewayCampaign(setup, fsync, random.Random(f"make-test-{fsync}"), 0.5)
    for _ in range(int(ROUNDS or kills)):
        result = campaign.run_round()
        assert result.ok, result
    final = campaign.finish()
    assert final.ok, final
    assert len(campaign.answers) > 20, "the load never got answers"
    assert {a.decision for a in campaign.answers.values()} == {"allow", "deny", "redact"}
    assert {a.era for a in campaign.answers.values()} == {"stateless", "session"}
