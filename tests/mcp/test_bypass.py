"""Bypass probes: every malformed or smuggling request gets a specific refusal and is never
forwarded when it must not be; every misbehaving upstream gets a specific error and a fault.

The upstream is the real SDK server (its /state shows what it executed); the seam is the
recording double of ``doubles.py`` denying ``get_env``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.servers import faulty_server

from .doubles import Recorder
from .peers import (
    ACCEPT,
    LEGACY,
    free_port,
    legacy_headers,
    legacy_session,
    modern_headers,
    modern_request,
    running_gateway,
    sdk_server,
)


@pytest.fixture(scope="module")
def server_url() -> Any:
    with sdk_server() as url:
        yield url


async def seen(http: aiohttp.ClientSession, server_url: str) -> list[dict[str, Any]]:
    async with http.get(server_url.replace("/mcp", "/state")) as resp:
        return list((await resp.json())["seen_arguments"])


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes | dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers=headers) as resp:
        text = await resp.text()
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            events = [
                line[6:] for line in text.splitlines() if line.startswith("data: ") and line[6:]
            ]
            return resp.status, json.loads(events[-1])
        return resp.status, json.loads(text) if text else {}


def echo_body(marker: str, request_id: int = 1) -> dict[str, Any]:
    return modern_request(request_id, "tools/call", {"name": "echo", "arguments": {"text": marker}})


# -- malformed JSON-RPC ------------------------------------------------------------------


async def test_batch_is_refused_and_not_forwarded(server_url: str) -> None:
    rec = Recorder()
    async with running_gateway(server_url, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        batch = json.dumps([echo_body("batch-1", 1), echo_body("batch-2", 2)]).encode()
        status, reply = await post(http, gw.url, batch, modern_headers("tools/call", "echo"))
        assert status == 400 and reply["error"]["code"] == -32600 and reply["id"] is None
        assert "batch" in reply["error"]["message"]
        assert [r.code for r in rec.rejections] == ["jsonrpc.batch"]
        assert rec.admitted == [] and not any(
            "batch" in a.get("text", "") for a in await seen(http, server_url)
        )


async def test_duplicate_keys_are_refused(server_url: str) -> None:
    rec = Recorder()
    async with running_gateway(server_url, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        raw = (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call",'
            b'"params":{"name":"echo","arguments":{"text":"dup"}}}'
        )
        status, reply = await post(
            http, gw.url, raw, {"Content-Type": "application/json", "Accept": ACCEPT}
        )
        assert status == 400 and reply["error"]["code"] == -32700
        assert "duplicate key" in reply["error"]["message"]
        nested = (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
            + b'"params":{"name":"echo","name":"get_env"}}'
        )
        status, reply = await post(
            http, gw.url, nested, {"Content-Type": "application/json", "Accept": ACCEPT}
        )
        assert status == 400 and reply["error"]["code"] == -32700
        assert [r.code for r in rec.rejections] == ["jsonrpc.parse", "jsonrpc.parse"]
        assert rec.admitted == []


@pytest.mark.parametrize(
    "raw",
    [
        b'"method":"tools\\/call","params":{"name":"get_env"',
        b'"method":"tools/call","params":{"name":"get\\u005fenv"',
        b'"method":"\\u0074ools/call","params":{"name":"\\u0067et_env"',
    ],
)
async def test_escaped_names_are_decided_on_their_parsed_value(server_url: str, raw: bytes) -> None:
    """``tools\\/call`` IS tools/call, ``get\\u005fenv`` IS get_env: both are denied."""
    rec = Recorder(deny_tools=("get_env",))
    async with running_gateway(server_url, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        sid = await legacy_session(http, gw.url)
        body = b'{"jsonrpc":"2.0","id":5,' + raw + b',"arguments":{"name":"HOME"}}}'
        status, reply = await post(http, gw.url, body, legacy_headers(sid))
        assert status == 200 and reply["error"]["code"] == -32010, reply
        [op] = rec.calls()
        assert (op.method, op.name) == ("tools/call", "get_env")
        assert [
            op for op, _ in rec.completed if op.kind.value == "call_tool"
        ] == []  # never forwarded


async def test_envelope_errors(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        plain = {"Content-Type": "application/json", "Accept": ACCEPT}
        for body, code in [
            (b"{not json", -32700),
            (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', -32600),
            (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', -32600),
            (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', -32600),
            (b'{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}', -32600),
            (b"\xff\xfe{}", -32700),
            (b'"just a string"', -32600),
        ]:
            status, reply = await post(http, gw.url, body, plain)
            assert (status, reply["error"]["code"]) == (400, code), body


async def test_http_level_checks(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        body = json.dumps(echo_body("x")).encode()
        async with http.post(
            gw.url,
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        ) as resp:
            assert resp.status == 406
        async with http.post(
            gw.url, data=body, headers={"Content-Type": "text/plain", "Accept": ACCEPT}
        ) as resp:
            assert resp.status == 415
        async with http.get(
            gw.url, headers={"Accept": "text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
        ) as r:
            assert r.status == 405
        async with http.put(gw.url, data=body) as resp:
            assert resp.status == 405
        async with http.get(gw.url, headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status == 400  # no session
        async with http.post(
            gw.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers=legacy_headers("no-such-session"),
        ) as resp:
            assert resp.status == 404
        response = {"jsonrpc": "2.0", "id": 1, "result": {}}
        status, _ = await post(http, gw.url, response, modern_headers("x"))
        assert status == 400  # clients do not send responses in the stateless revision


# -- header/body consistency (2026-07-28) -----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "what"),
    [
        (modern_headers("tools/call", "echo"), "Mcp-Name"),
        (modern_headers("tools/list", "get_env"), "Mcp-Method"),
        (modern_headers("tools/call"), "Mcp-Name"),
        (
            {**modern_headers("tools/call", "get_env"), "MCP-Protocol-Version": "2026-07-29"},
            "Protocol",
        ),
    ],
)
async def test_header_body_mismatch_is_refused(
    server_url: str, headers: dict[str, str], what: str
) -> None:
    rec = Recorder()
    async with running_gateway(server_url, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        body = modern_request(9, "tools/call", {"name": "get_env", "arguments": {"name": "HOME"}})
        status, reply = await post(http, gw.url, body, headers)
        assert status == 400 and reply["error"]["code"] in (-32020, -32022), reply
        assert rec.admitted == []
        [rejection] = rec.rejections
        assert rejection.code in ("header.mismatch", "protocol.unsupported_version")
        assert (rejection.method, rejection.name, rejection.principal) == (
            "tools/call",
            "get_env",
            "standalone",
        )


async def test_duplicated_routing_header_is_refused(server_url: str) -> None:
    async with running_gateway(server_url) as gw:
        body = json.dumps(
            modern_request(9, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        )
        # aiohttp's client folds dict headers, so send the duplicate over a raw socket.
        host, port = gw.host, gw.port
        import asyncio

        reader, writer = await asyncio.open_connection(host, port)
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: {ACCEPT}\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
            f"Mcp-Name: echo\r\nMcp-Name: get_env\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + body.encode())
        await writer.drain()
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.1 400") and b"-32020" in response


async def test_base64_sentinel_names_are_decoded(server_url: str) -> None:
    async with running_gateway(server_url) as gw, aiohttp.ClientSession() as http:
        name = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
        status, reply = await post(
            http, gw.url, echo_body("sentinel"), modern_headers("tools/call", name)
        )
        assert status == 200 and reply["result"]["content"][0]["text"] == "sentinel"
        bad = "=?base64?" + base64.b64encode(b"get_env").decode() + "?="
        status, reply = await post(http, gw.url, echo_body("x"), modern_headers("tools/call", bad))
        assert status == 400 and reply["error"]["code"] == -32020


async def test_param_headers_must_match_and_are_rebuilt_from_the_forwarded_body(
    server_url: str,
) -> None:
    """Mcp-Param-* must agree with the body; upstream gets headers built from what is forwarded."""

    def redact(arguments: dict[str, Any]) -> dict[str, Any]:
        return {**arguments, "region": "REDACTED"}

    rec = Recorder(rewrite_arguments=redact)
    async with running_gateway(server_url, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        body = modern_request(
            4,
            "tools/call",
            {"name": "region_query", "arguments": {"region": "eu-secret-1", "query": "q1"}},
        )
        wrong = modern_headers("tools/call", "region_query", **{"Mcp-Param-Region": "us-east-1"})
        status, reply = await post(http, gw.url, body, wrong)
        assert status == 400 and reply["error"]["code"] == -32020
        missing = modern_headers("tools/call", "region_query")
        status, reply = await post(http, gw.url, body, missing)
        assert status == 400 and reply["error"]["code"] == -32020
        right = modern_headers("tools/call", "region_query", **{"Mcp-Param-Region": "eu-secret-1"})
        status, reply = await post(http, gw.url, body, right)
        assert status == 200, reply
        assert reply["result"]["content"][0]["text"] == "REDACTED: q1"
        # The SDK server validates Mcp-Param-Region against the body it got: had the gateway
        # copied the agent's header, the redacted call would have been refused upstream.
        assert {"tool": "region_query", "region": "REDACTED", "query": "q1"} in await seen(
            http, server_url
        )


# -- sizes -------------------------------------------------------------------------------


async def test_oversized_request_and_response(server_url: str) -> None:
    limits = {"max_request_size_bytes": 64 * 1024, "max_response_size_bytes": 64 * 1024}
    rec = Recorder()
    async with (
        running_gateway(server_url, interceptor=rec, **limits) as gw,
        aiohttp.ClientSession() as http,
    ):
        status, reply = await post(
            http, gw.url, echo_body("z" * 70_000), modern_headers("tools/call", "echo")
        )
        assert status == 413 and rec.admitted == []
        assert [r.code for r in rec.rejections] == ["http.too_large"]
        big = modern_request(2, "tools/call", {"name": "big", "arguments": {"size": 100_000}})
        status, reply = await post(http, gw.url, big, modern_headers("tools/call", "big"))
        assert (
            reply["error"]["code"] == -32013
            and reply["error"]["data"]["cmcp_code"] == "upstream.too_large"
        )
        assert [f.code for _, f in rec.faults] == ["upstream.too_large"]


# -- routing -----------------------------------------------------------------------------


async def test_unknown_tool_across_several_upstreams(server_url: str) -> None:
    with sdk_server() as second:
        ups = [{"name": "one", "url": server_url}, {"name": "two", "url": second, "prefix": "two"}]
        rec = Recorder()
        async with running_gateway(ups, interceptor=rec) as gw, aiohttp.ClientSession() as http:
            body = modern_request(1, "tools/call", {"name": "no_such_tool", "arguments": {}})
            _, reply = await post(http, gw.url, body, modern_headers("tools/call", "no_such_tool"))
            assert reply["error"]["code"] == -32602 and "unknown tool" in reply["error"]["message"]
            assert rec.admitted == []
            assert [(r.code, r.name) for r in rec.rejections] == [("route.unknown", "no_such_tool")]


# -- who may call ------------------------------------------------------------------------


async def test_bearer_token(server_url: str, tmp_path: Any) -> None:
    token_file = tmp_path / "agent.token"
    token_file.write_text("named-token-123\n")
    rec = Recorder()
    auth = {"bearer_tokens": [{"name": "research-agent", "token_file": str(token_file)}]}
    env = {"CMCP_BEARER_TOKEN": "env-token-456"}
    async with (
        running_gateway(
            server_url, interceptor=rec, env=env, auth=auth, identity={"principal": "team/default"}
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        headers = modern_headers("tools/call", "echo")
        for bad in (None, "Bearer wrong", "Basic env-token-456", "Bearer "):
            h = dict(headers) if bad is None else {**headers, "Authorization": bad}
            async with http.post(gw.url, json=echo_body("nope"), headers=h) as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert [(r.code, r.principal) for r in rec.rejections] == [("http.unauthorized", None)] * 4
        for token, principal in (
            ("env-token-456", "team/default"),
            ("named-token-123", "research-agent"),
        ):
            status, reply = await post(
                http, gw.url, echo_body("yes"), {**headers, "Authorization": f"Bearer {token}"}
            )
            assert status == 200 and reply["result"]["content"][0]["text"] == "yes"
            assert rec.calls()[-1].ctx.principal == principal
        async with http.get(gw.url.replace("/mcp", "/healthz")) as resp:
            assert resp.status == 200  # probes need no token


async def test_sessions_belong_to_their_principal(server_url: str) -> None:
    env = {"CMCP_BEARER_TOKEN": "token-a"}
    async with running_gateway(server_url, env=env) as gw, aiohttp.ClientSession() as http:
        sid = await legacy_session(http, gw.url, Authorization="Bearer token-a")
        gw.gateway.tokens["token-b"] = "someone-else"
        async with http.post(
            gw.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers=legacy_headers(sid, Authorization="Bearer token-b"),
        ) as resp:
            assert resp.status == 404


async def test_dns_rebinding_defence(server_url: str) -> None:
    rec = Recorder()
    async with running_gateway(server_url, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        headers = modern_headers("tools/call", "echo")
        for extra in (
            {"Host": "evil.example:8443"},
            {"Origin": "http://evil.example"},
            {"Host": f"attacker.test:{gw.port}"},
        ):
            async with http.post(gw.url, json=echo_body("x"), headers={**headers, **extra}) as resp:
                assert resp.status == 403, extra
        codes = [r.code for r in rec.rejections]
        assert codes == ["http.forbidden_host", "http.forbidden_origin", "http.forbidden_host"]
        ok = {**headers, "Origin": f"http://localhost:{gw.port}"}
        status, _ = await post(http, gw.url, echo_body("x"), ok)
        assert status == 200
    async with (
        running_gateway(
            server_url, allowed_hosts=["gw.internal:8443"], allowed_origins=["https://app.example"]
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        headers = {**modern_headers("tools/call", "echo"), "Host": "gw.internal:8443"}
        status, _ = await post(
            http, gw.url, echo_body("x"), {**headers, "Origin": "https://app.example"}
        )
        assert status == 200
        async with http.post(
            gw.url, json=echo_body("x"), headers={**headers, "Origin": "http://app.example"}
        ) as r:
            assert r.status == 403


# -- misbehaving upstreams -----------------------------------------------------------------


@pytest.fixture
async def faulty_url() -> Any:
    runner = web.AppRunner(faulty_server.app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}/mcp"
    await runner.cleanup()


@pytest.mark.parametrize(
    ("tool", "cmcp_code", "code"),
    [
        ("invalid_json", "upstream.invalid", -32012),
        ("wrong_type", "upstream.invalid", -32012),
        ("dup_keys", "upstream.invalid", -32012),
        ("wrong_id", "upstream.invalid", -32012),
        ("status_500", "upstream.status", -32012),
        ("accepted", "upstream.invalid", -32012),
        ("huge", "upstream.too_large", -32013),
        ("huge_event", "upstream.too_large", -32013),
        ("reset", "upstream.reset", -32012),
    ],
)
async def test_misbehaving_upstream(faulty_url: str, tool: str, cmcp_code: str, code: int) -> None:
    rec = Recorder()
    limits = {"max_response_size_bytes": 1024 * 1024}
    async with (
        running_gateway(faulty_url, interceptor=rec, **limits) as gw,
        aiohttp.ClientSession() as http,
    ):
        body = modern_request(3, "tools/call", {"name": tool, "arguments": {}})
        _, reply = await post(http, gw.url, body, modern_headers("tools/call", tool))
        assert reply["id"] == 3 and reply["error"]["code"] == code, reply
        assert reply["error"]["data"]["cmcp_code"] == cmcp_code
        assert "smuggled" not in json.dumps(reply)
        assert [(op.name, f.code) for op, f in rec.faults] == [(tool, cmcp_code)]
        assert rec.completed == []  # a fault is never also a completed reply


async def test_unreachable_upstream() -> None:
    rec = Recorder()
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    async with running_gateway(dead, interceptor=rec) as gw, aiohttp.ClientSession() as http:
        sid_status = None
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        }
        async with http.post(
            gw.url, json=init, headers={"Content-Type": "application/json", "Accept": ACCEPT}
        ) as resp:
            sid_status = resp.status
            reply = await resp.json()
        assert sid_status == 502 and reply["error"]["code"] == -32011
        assert reply["error"]["data"]["cmcp_code"] == "upstream.unreachable"
        status, reply = await post(
            http, gw.url, echo_body("x"), modern_headers("tools/call", "echo")
        )
        assert status == 502 and reply["error"]["code"] == -32011
        assert len(gw.gateway.sessions) == 0
