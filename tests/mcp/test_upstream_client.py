"""The upstream client against a real aiohttp server on loopback: what it keeps, what it reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from cmcp_sidecar.config import UpstreamConfig
from cmcp_sidecar.mcp.upstream import Upstream, UpstreamFault, read_body

LIMIT = 1000


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str | None]]]:
    """An upstream that sets a cookie on every reply and records the Cookie header it gets."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Cookie"))
        size = int(request.query.get("size", "10"))
        response = web.StreamResponse(headers={"Set-Cookie": "sid=agent-a; Path=/"})
        response.enable_chunked_encoding()  # no Content-Length: only the bytes tell the size
        await response.prepare(request)
        await response.write(b"x" * size)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/mcp", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # A host name, not an IP: aiohttp's default cookie jar ignores cookies of IP addresses.
        yield f"http://localhost:{port}/mcp", seen
    finally:
        await runner.cleanup()


async def _upstream(url: str) -> Upstream:
    up = Upstream(0, UpstreamConfig(name="up", url=url), {}, max_response_bytes=LIMIT)
    await up.start()
    return up


async def test_upstream_cookies_are_never_sent_back(server: tuple[str, list[str | None]]) -> None:
    url, seen = server
    up = await _upstream(url)
    try:
        for _ in range(3):  # one agent's reply sets a cookie; nobody's later call carries it
            async with up.request("POST", headers={}, body=b"{}") as resp:
                assert resp.headers["Set-Cookie"].startswith("sid=")
                await read_body(resp, LIMIT)
    finally:
        await up.close()
    assert seen == [None, None, None]


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1, 20 * LIMIT])
async def test_a_chunked_body_is_bounded_however_it_arrives(
    server: tuple[str, list[str | None]], size: int
) -> None:
    url, _ = server
    up = await _upstream(url.replace("/mcp", f"/mcp?size={size}"))
    try:
        async with up.request("POST", headers={}, body=b"{}") as resp:
            if size <= LIMIT:
                assert len(await read_body(resp, LIMIT, 5.0)) == size
            else:
                with pytest.raises(UpstreamFault) as fault:
                    await read_body(resp, LIMIT, 5.0)
                assert fault.value.code == "upstream.too_large"
    finally:
        await up.close()
