"""Operational endpoints: probes, Prometheus metrics, and the claim/audit endpoints' behaviour
when the gateway runs without the trail's services (503, never a stand-in answer)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from mcp import Client

from .peers import running_gateway, sdk_server, transport


@pytest.fixture(scope="module")
def server_url() -> Any:
    with sdk_server() as url:
        yield url


async def test_probes_and_metrics(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        base = gw.url.removesuffix("/mcp")
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(f"{base}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503 and body["ready"] is False
            assert body["checks"] == {"enforcement": "not configured"}
        async with Client(transport(gw.url), mode="legacy") as c:
            await c.call_tool("echo", {"text": "counted"})
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain")
    assert 'cmcp_tool_calls_total{decision="allow",tool="echo",upstream="main"} 1.0' in text
    assert 'cmcp_request_duration_seconds_count{method="tools/call"} 1.0' in text
    assert "cmcp_upstream_errors_total" in text and "cmcp_sessions_open" in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/attestation?nonce=AAAAAAAAAAAAAAAA"),
        ("GET", "/claims/abc"),
        ("POST", "/sessions/abc/close"),
        ("GET", "/audit/export?session_id=abc"),
    ],
)
async def test_trail_endpoints_say_not_configured(server_url: str, method: str, path: str) -> None:
    async with (
        running_gateway(server_url) as gw,
        aiohttp.ClientSession() as http,
        http.request(method, gw.url.removesuffix("/mcp") + path) as resp,
    ):
        assert resp.status == 503
        assert (await resp.json())["error"] == "not_configured"


async def test_attestation_nonce_is_checked(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        base = gw.url.removesuffix("/mcp")
        for nonce in ("", "not+base64", "AA"):
            async with http.get(f"{base}/attestation", params={"nonce": nonce}) as resp:
                assert resp.status == 400, nonce
