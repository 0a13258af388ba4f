"""A deliberately broken MCP upstream (stateless revision), for faults no real server makes.

The gateway must survive upstreams that answer invalid JSON, the wrong content type, duplicate
keys, another request's id, oversized bodies, 202 to a request, that reset mid-stream, trickle
their reply byte by byte (slow loris), never end an SSE stream (after the reply, or without
one), or redirect elsewhere. A correct SDK server never does these, so this is the one place
tests use a hand-written peer; it is still a real HTTP server on loopback. The tool name
selects the misbehaviour; ``GET /state`` counts the streams whose client went away.

Run alone: ``python -m tests.servers.faulty_server --port N [--tls-cert F --tls-key F]
[--redirect-to URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
from typing import Any

from aiohttp import web

TOOLS = [
    "invalid_json",
    "wrong_type",
    "reset",
    "dup_keys",
    "wrong_id",
    "huge",
    "huge_event",
    "status_500",
    "accepted",
    "slow_loris",
    "sse_trickle",
    "sse_no_end",
    "sse_forever",
    "redirect",
    "ok",
]
STATE: dict[str, int] = {"client_gone": 0}
REDIRECT_TO = web.AppKey("redirect_to", str)


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": f"misbehaves: {name}", "inputSchema": {"type": "object"}}


async def handle(request: web.Request) -> web.StreamResponse:
    body = json.loads(await request.read())
    method, rid = body.get("method"), body.get("id")
    if rid is None:
        return web.Response(status=202)
    if method == "server/discover":
        result = {
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
            "cacheScope": "public",
            "ttlMs": 0,
            "resultType": "complete",
        }
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})
    if method == "tools/list":
        return web.json_response(
            {"jsonrpc": "2.0", "id": rid, "result": {"tools": [_tool(t) for t in TOOLS]}}
        )
    name = body["params"]["name"]
    ok = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "fine"}]}}
    if name == "invalid_json":
        return web.Response(body=b'{"jsonrpc": "2.0", "id": ', content_type="application/json")
    if name == "wrong_type":
        return web.Response(text="<html>hello</html>", content_type="text/html")
    if name == "dup_keys":
        text = (
            f'{{"jsonrpc":"2.0","id":{json.dumps(rid)},"result":{{"content":[]}},'
            f'"result":{{"content":[{{"type":"text","text":"smuggled"}}]}}}}'
        )
        return web.Response(text=text, content_type="application/json")
    if name == "wrong_id":
        return web.json_response({**ok, "id": "someone-else"})
    if name == "huge":
        return web.json_response(
            {**ok, "result": {"content": [{"type": "text", "text": "x" * 3_000_000}]}}
        )
    if name == "status_500":
        return web.Response(status=500, text="internal error")
    if name == "accepted":
        return web.Response(status=202)
    if name == "redirect":
        raise web.HTTPTemporaryRedirect(request.app[REDIRECT_TO])
    if name == "slow_loris":
        return await _trickle(request, "application/json", json.dumps(ok).encode())
    if name == "sse_trickle":
        return await _trickle(
            request, "text/event-stream", f"event: message\ndata: {json.dumps(ok)}\n\n".encode()
        )
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    note = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": "t", "progress": 1},
    }
    await out.write(f"event: message\ndata: {json.dumps(note)}\n\n".encode())
    if name == "reset":
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()  # mid-stream reset
        return out
    if name == "huge_event":
        await out.write(b"event: message\ndata: " + b"y" * 3_000_000 + b"\n\n")
        return out
    if name in ("sse_no_end", "sse_forever"):
        if name == "sse_no_end":  # the reply, then a stream that never ends
            await out.write(f"event: message\ndata: {json.dumps(ok)}\n\n".encode())
        await _forever(out, note if name == "sse_forever" else None)
        return out
    await out.write(f"event: message\ndata: {json.dumps(ok)}\n\n".encode())
    await out.write_eof()
    return out


async def _trickle(request: web.Request, content_type: str, body: bytes) -> web.StreamResponse:
    """Headers at once, then the body one byte every 100 ms."""
    out = web.StreamResponse(headers={"Content-Type": content_type})
    await out.prepare(request)
    try:
        for byte in body:
            await out.write(bytes([byte]))
            await asyncio.sleep(0.1)
    except (ConnectionError, RuntimeError):
        STATE["client_gone"] += 1
    return out


async def _forever(out: web.StreamResponse, note: dict[str, Any] | None) -> None:
    """Keep writing (a notification, or a keep-alive comment) until the client goes away."""
    line = f"event: message\ndata: {json.dumps(note)}\n\n".encode() if note else b": ka\n\n"
    try:
        while True:
            await out.write(line)
            await asyncio.sleep(0.1)
    except (ConnectionError, RuntimeError):
        STATE["client_gone"] += 1


async def state(request: web.Request) -> web.Response:
    return web.json_response(STATE)


def app(redirect_to: str = "http://127.0.0.1:9/mcp") -> web.Application:
    application = web.Application(client_max_size=64 * 1024 * 1024)
    application[REDIRECT_TO] = redirect_to
    application.router.add_post("/mcp", handle)
    application.router.add_get("/state", state)
    return application


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--redirect-to", default="http://127.0.0.1:9/mcp")
    args = parser.parse_args()
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            app(args.redirect_to),
            host="127.0.0.1",
            port=args.port,
            ssl_context=context,
            print=None,
            access_log=None,
        )


if __name__ == "__main__":
    main()
