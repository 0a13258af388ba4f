"""Streaming behaviour over raw HTTP: event-by-event relay, cancellation, resumption.

These need control the SDK client does not give (timing of each event, dropping a connection
mid-stream, resuming with Last-Event-ID), so they speak HTTP directly to a gateway in front of
the real SDK server, and read the server's own account of what happened from its /state.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from .peers import (
    legacy_headers,
    legacy_session,
    modern_headers,
    modern_request,
    running_gateway,
    sdk_server,
    sse_messages,
)


@pytest.fixture(scope="module")
def server_url() -> Any:
    with sdk_server() as url:
        yield url


async def upstream_state(http: aiohttp.ClientSession, server_url: str) -> dict[str, Any]:
    async with http.get(server_url.replace("/mcp", "/state")) as resp:
        return dict(await resp.json())


async def wait_for(http: aiohttp.ClientSession, server_url: str, key: str, tag: str) -> bool:
    for _ in range(100):
        if tag in (await upstream_state(http, server_url))[key]:
            return True
        await asyncio.sleep(0.05)
    return False


def trickle_call(request_id: Any, count: int, delay_ms: int) -> dict[str, Any]:
    return {
        "name": "trickle",
        "arguments": {"count": count, "delay_ms": delay_ms},
        "_meta": {"progressToken": f"p{request_id}"},
    }


async def test_stateless_events_arrive_before_the_upstream_finishes(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        body = modern_request(1, "tools/call", trickle_call(1, 3, 400))
        start = time.monotonic()
        async with http.post(
            gw.url, json=body, headers=modern_headers("tools/call", "trickle")
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["Cmcp-Claim-Session"]
            arrivals = [
                (t - start, json.loads(e.data)) async for t, e in sse_messages(resp) if e.data
            ]
    assert [m.get("method") for _, m in arrivals[:3]] == ["notifications/progress"] * 3
    assert arrivals[-1][1]["result"]["content"][0]["text"] == "trickled"
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first >= 0.9, arrivals  # three 400 ms waits: the first event was not held back
    assert first < 0.5


async def test_session_events_arrive_before_the_upstream_finishes(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        sid = await legacy_session(http, gw.url)
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": trickle_call(7, 3, 400),
        }
        start = time.monotonic()
        async with http.post(gw.url, json=body, headers=legacy_headers(sid)) as resp:
            assert resp.headers["Mcp-Session-Id"] == sid == resp.headers["Cmcp-Claim-Session"]
            arrivals = [
                (t - start, json.loads(e.data)) async for t, e in sse_messages(resp) if e.data
            ]
    progress = [t for t, m in arrivals if m.get("method") == "notifications/progress"]
    assert len(progress) == 3 and arrivals[-1][1]["id"] == 7
    assert arrivals[-1][0] - progress[0] >= 0.9


async def test_stateless_disconnect_cancels_the_upstream_call(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        body = modern_request(
            2, "tools/call", {"name": "slow", "arguments": {"seconds": 30, "tag": "cut-1"}}
        )
        resp = await http.post(gw.url, json=body, headers=modern_headers("tools/call", "slow"))
        assert await wait_for(http, server_url, "started", "cut-1")
        resp.close()  # the agent goes away
        assert await wait_for(http, server_url, "cancelled", "cut-1")


async def test_session_cancel_notification_reaches_the_upstream(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        sid = await legacy_session(http, gw.url)
        body = {
            "jsonrpc": "2.0",
            "id": "slow-1",
            "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 30, "tag": "cut-2"}},
        }
        call = asyncio.ensure_future(http.post(gw.url, json=body, headers=legacy_headers(sid)))
        assert await wait_for(http, server_url, "started", "cut-2")
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": "slow-1"},
        }
        async with http.post(gw.url, json=cancel, headers=legacy_headers(sid)) as resp:
            assert resp.status == 202
        assert await wait_for(http, server_url, "cancelled", "cut-2")
        call.cancel()


async def test_session_stream_resumes_with_last_event_id(server_url: str) -> None:
    """Drop a request stream after the first progress event; GET with Last-Event-ID resumes it."""
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        sid = await legacy_session(http, gw.url)
        body = {
            "jsonrpc": "2.0",
            "id": 11,
            "method": "tools/call",
            "params": trickle_call(11, 4, 300),
        }
        last_id, seen = None, []
        async with http.post(gw.url, json=body, headers=legacy_headers(sid)) as resp:
            async for _, event in sse_messages(resp):
                last_id = event.id or last_id
                if event.data:
                    seen.append(json.loads(event.data))
                    break
        assert last_id is not None and last_id.startswith("p.")
        assert seen[0]["params"]["progress"] == 1
        headers = {
            "Accept": "text/event-stream",
            "Mcp-Session-Id": sid,
            "Last-Event-ID": last_id,
            "MCP-Protocol-Version": "2025-11-25",
        }
        async with http.get(gw.url, headers=headers) as resp:
            assert resp.status == 200
            rest = [json.loads(e.data) async for _, e in sse_messages(resp) if e.data]
    assert [m["params"]["progress"] for m in rest if m.get("method")] == [2, 3, 4]
    assert rest[-1] == {"jsonrpc": "2.0", "id": 11, "result": rest[-1]["result"]}
    assert rest[-1]["result"]["content"][0]["text"] == "trickled"


async def test_standalone_get_stream_and_delete(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        sid = await legacy_session(http, gw.url)
        headers = {
            "Accept": "text/event-stream",
            "Mcp-Session-Id": sid,
            "MCP-Protocol-Version": "2025-11-25",
        }
        async with http.get(gw.url, headers=headers) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith(
                "text/event-stream"
            )
            async with http.delete(gw.url, headers=headers) as deleted:
                assert deleted.status == 200
            async for _ in sse_messages(resp):  # the stream ends with the session
                pass
        async with http.post(
            gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=legacy_headers(sid)
        ) as resp:
            assert resp.status == 404


async def test_shutdown_closes_open_streams_cleanly(server_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with running_gateway(server_url) as gw:
            body = modern_request(3, "tools/call", trickle_call(3, 50, 200))
            resp = await http.post(
                gw.url, json=body, headers=modern_headers("tools/call", "trickle")
            )
            first = await resp.content.readline()
            assert first
            stop = asyncio.ensure_future(gw.stop())
            rest = await asyncio.wait_for(resp.content.read(), 10)
            await stop
        text = (first + rest).decode()
        assert '"code":-32011' in text and "shutting down" in text  # the agent is told, not cut off
