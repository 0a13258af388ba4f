"""Session idle timeout, credential reload (SIGHUP), and upstream idle-read timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp import Client

from .doubles import Recorder
from .peers import legacy_headers, legacy_session, running_gateway, sdk_server, transport


@pytest.fixture(scope="module")
def server_url() -> Any:
    with sdk_server() as url:
        yield url


async def test_idle_sessions_end(server_url: str) -> None:
    """A session with nothing in flight (no request, no open GET stream) ends after the timeout."""
    rec = Recorder()
    async with (
        running_gateway(server_url, interceptor=rec, claims={"idle_timeout_seconds": 1}) as gw,
        aiohttp.ClientSession() as http,
    ):
        sid = await legacy_session(http, gw.url)
        with anyio.fail_after(10):
            while not rec.ended:
                await anyio.sleep(0.1)
        assert [(e.reason, e.ctx.claim_session) for e in rec.ended] == [("idle_timeout", sid)]
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        async with http.post(gw.url, json=ping, headers=legacy_headers(sid)) as resp:
            assert resp.status == 404  # the agent must initialize again


async def test_credentials_from_file_and_reload(server_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "headers"
    secret.write_text("X-Tenant: acme\n")
    up = [{"name": "main", "url": server_url, "headers_from_file": str(secret)}]
    async with running_gateway(up) as gw, Client(transport(gw.url), mode="2026-07-28") as c:
        seen = await c.call_tool("header", {"name": "X-Tenant"})
        assert seen.content[0].text == "acme"  # type: ignore[union-attr]
        secret.write_text("X-Tenant: globex\n")
        gw.gateway.reload_credentials()  # what SIGHUP does
        assert (await c.call_tool("header", {"name": "X-Tenant"})).content[0].text == "globex"  # type: ignore[union-attr]
        secret.write_text("not a header line\n")
        gw.gateway.reload_credentials()  # a broken file keeps the previous credentials
        assert (await c.call_tool("header", {"name": "X-Tenant"})).content[0].text == "globex"  # type: ignore[union-attr]
        agent_auth = await c.call_tool("header", {"name": "Authorization"})
        assert agent_auth.content[0].text == ""  # type: ignore[union-attr]  # never forwarded


async def test_upstream_idle_read_timeout(server_url: str) -> None:
    rec = Recorder()
    up = [{"name": "main", "url": server_url, "timeouts": {"read_idle_seconds": 1}}]
    async with (
        running_gateway(up, interceptor=rec) as gw,
        Client(transport(gw.url), mode="2026-07-28") as c,
    ):
        with pytest.raises(MCPError) as info:
            await c.call_tool("slow", {"seconds": 5, "tag": "idle"})
        assert info.value.error.code == -32011
    assert [f.code for _, f in rec.faults] == ["upstream.timeout"]
