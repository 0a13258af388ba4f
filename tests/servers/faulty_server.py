"""A deliberately broken MCP upstream (stateless revision), for faults no real server makes.

The gateway must survive upstreams that answer invalid JSON, the wrong content type, duplicate
keys, another request's id, oversized bodies, 202 to a request, or that reset mid-stream. A
correct SDK server never does these, so this is the one place tests use a hand-written peer;
it is still a real HTTP server on loopback. The tool name selects the misbehaviour.
"""

from __future__ import annotations

import asyncio
import json
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
    "ok",
]


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
    await out.write(f"event: message\ndata: {json.dumps(ok)}\n\n".encode())
    await out.write_eof()
    return out


def app() -> web.Application:
    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/mcp", handle)
    return application
