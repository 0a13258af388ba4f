"""Fuzzing the gateway's own parsers and its request handling: no input may crash or hang them.

* **JSON-RPC** (``cmcp_sidecar.mcp.jsonrpc``): the fast path of ``strict_loads`` must agree
  with the shared strict parser on every input (a fast path that accepted duplicate keys or a
  lone surrogate would let the gateway and the upstream read different messages), and
  ``parse_message`` raises only ``ProtocolError``.
* **SSE** (``cmcp_sidecar.mcp.sse``): any chunking of a byte stream gives the same events as
  feeding it whole, and the same as an independent reference parser of the WHATWG rules;
  only ``SSEError`` for bounds, and the buffer stays within its bound.
* **2026-07-28 headers** (``cmcp_sidecar.mcp.headers``): ``encode_value``/``decode_value``
  round-trip every string; header/body checks raise only ``ProtocolError``.
* **Request handling**: random bodies and headers (random bytes, JSON-RPC-shaped objects,
  mutations of valid requests of both eras) POSTed to a running gateway with the real
  enforcement (demo bundle, audit log) in front of the SDK test server: never a 500, always a
  JSON-RPC answer or an HTTP refusal, and the gateway stays healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cmcp_sidecar.attest import select_provider
from cmcp_sidecar.config import LoadedConfig, parse_config
from cmcp_sidecar.enforce import Enforcement
from cmcp_sidecar.mcp import headers as mh
from cmcp_sidecar.mcp.jsonrpc import ProtocolError, parse_message, strict_loads
from cmcp_sidecar.mcp.sse import SSEError, SSEEvent, SSEParser
from cmcp_sidecar.server.app import Server
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.errors import InputError
from tests.mcp.peers import LEGACY, MODERN, modern_headers, modern_request, sdk_server
from tests.reliability.harness import pin_catalog, write_setup

from ._mutate import mutated
from ._settings import EXAMPLES, fuzz_settings

# An HTTP round trip plus a durable audit entry per example: fewer in make test.
request_settings = settings(fuzz_settings, max_examples=EXAMPLES if EXAMPLES > 1000 else 300)

# -- JSON-RPC ---------------------------------------------------------------------------------

_KEYS = st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error", "a", "\\u0061"])
_SCALARS = st.sampled_from(
    [
        "null",
        "true",
        "false",
        "0",
        "-0",
        "1.5",
        "1e400",
        "-1E-400",
        "9007199254740993",
        "123456789012345678901234567890",
        "NaN",
        "Infinity",
        '"2.0"',
        '"tools/call"',
        '"tools\\/call"',
        '"\\ud800"',
        '"\\udc00\\ud800"',
        '"\\ud83d\\ude00"',
        '"\\u0000"',
        '"é"',
        '"\\x"',
        '"a\\nb"',
        "01",
        "1.",
        ".5",
    ]
)


@st.composite
def json_texts(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON-ish text: mostly valid, with duplicate keys, odd escapes, odd numbers, junk."""
    kind = draw(st.integers(0, 9 if depth < 3 else 2))
    if kind <= 2:
        return draw(_SCALARS)
    if kind == 3:
        return json.dumps(draw(st.text(max_size=6)), ensure_ascii=draw(st.booleans()))
    if kind <= 6:
        pairs = draw(st.lists(st.tuples(_KEYS, json_texts(depth + 1)), max_size=3))
        ws = draw(st.sampled_from(["", " ", "\n\t", "\u00a0"]))
        return "{" + ",".join(f'{ws}"{k}"{ws}:{ws}{v}' for k, v in pairs) + "}"
    if kind <= 8:
        items = draw(st.lists(json_texts(depth + 1), max_size=3))
        return "[" + ",".join(items) + "]"
    return draw(st.text(alphabet='{}[]",:0123456789.eE+- \\tnrufalse', max_size=12))


_ERR = object()


def _result(fn: Any, data: bytes) -> Any:
    try:
        return fn(data)
    except InputError:
        return _ERR


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return type(a) is type(b) and a == b


@fuzz_settings
@given(json_texts(), st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
def test_fast_json_path_agrees_with_the_strict_parser(text: str, encoding: str) -> None:
    data = text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace")
    fast = _result(lambda d: strict_loads(d, max_bytes=1 << 20), data)
    strict = _result(lambda d: parse_json(d, allow_floats=True, max_bytes=1 << 20), data)
    assert (fast is _ERR) == (strict is _ERR), (data, fast, strict)
    if fast is not _ERR:
        assert json.dumps(fast, sort_keys=True) == json.dumps(strict, sort_keys=True)
        event("parsed")


@fuzz_settings
@given(st.one_of(json_texts().map(str.encode), st.binary(max_size=200)))
def test_parse_message_raises_only_protocol_errors(data: bytes) -> None:
    try:
        message = parse_message(data, max_bytes=4096)
    except ProtocolError as exc:
        assert exc.code in (-32700, -32600) and exc.message
        event(exc.reason or str(exc.code))
        return
    assert message.is_request or message.is_notification or message.is_response
    event("message")


# -- SSE ----------------------------------------------------------------------------------------


def _reference(stream: bytes, max_event: int) -> list[tuple[bytes, str, str | None, int | None]]:
    """The WHATWG event-stream rules, written plainly (one pass over complete lines)."""
    events = []
    lines = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")[:-1]
    data: list[bytes] = []
    name, ident, retry, seen = "", None, None, False
    for line in lines:
        if not line:
            if seen:
                events.append((b"\n".join(data), name or "message", ident, retry))
            data, name, ident, retry, seen = [], "", None, None, False
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        seen = True
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"id" and b"\0" not in value:
            ident = value.decode("utf-8", "replace")
        elif field == b"retry" and value.isdigit():
            retry = int(value)
    return events


_SSE_PIECES = st.sampled_from(
    [b"data: ", b"data:", b"event: ", b"id: ", b"retry: ", b": c", b"\n", b"\r", b"\r\n",
     b"\n\n", b"x", b"{}", b"\x00", b"\xff", b"12", b" ", b"data", b"id", b"\xc3\xa9"]
)  # fmt: skip


@fuzz_settings
@given(st.lists(_SSE_PIECES, max_size=40).map(b"".join), st.data())
def test_sse_chunking_never_changes_the_events(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole, pieces = SSEParser(max_event_bytes=1 << 16), SSEParser(max_event_bytes=1 << 16)
    got_whole: list[SSEEvent] = whole.feed(stream)
    got_pieces = [e for chunk in chunks for e in pieces.feed(chunk)]
    as_tuples = [(e.data, e.event, e.id, e.retry) for e in got_whole]
    assert as_tuples == [(e.data, e.event, e.id, e.retry) for e in got_pieces]
    # A final lone CR ends a line for the incremental parser; the reference needs the LF.
    reference_input = stream if not stream.endswith(b"\r") else stream + b"\n"
    assert as_tuples == _reference(reference_input, 1 << 16)
    event(f"{len(as_tuples)} events")


@fuzz_settings
@given(st.binary(max_size=300), st.integers(1, 64))
def test_sse_bounds_hold_for_any_bytes(stream: bytes, bound: int) -> None:
    parser = SSEParser(max_event_bytes=bound)
    try:
        for i in range(0, len(stream), 7):
            for ev in parser.feed(stream[i : i + 7]):
                assert len(ev.data) <= bound
            assert len(parser._buf) <= bound + 64
    except SSEError:
        event("bounded")


# -- 2026-07-28 headers -------------------------------------------------------------------------


@fuzz_settings
@given(st.text())
def test_header_values_round_trip(value: str) -> None:
    encoded = mh.encode_value(value)
    assert encoded.isascii() and "\n" not in encoded and "\r" not in encoded
    assert mh.decode_value(encoded) == value


_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@fuzz_settings
@given(
    st.sampled_from(["tools/call", "prompts/get", "resources/read", "tools/list", "x"]),
    st.dictionaries(st.sampled_from(["name", "uri", "_meta", "arguments"]), st.just("v") | st.none() | st.integers() | st.text(max_size=5), max_size=4),  # noqa: E501
    st.dictionaries(st.sampled_from(["mcp-protocol-version", "mcp-method", "mcp-name", "mcp-param-region"]), _HEADER_TEXT, max_size=4),  # noqa: E501
)  # fmt: skip
def test_header_checks_raise_only_protocol_errors(
    method: str, params: dict[str, Any], headers: dict[str, str]
) -> None:
    if isinstance(params.get("_meta"), str):
        params["_meta"] = {mh.META_PROTOCOL_VERSION: MODERN, mh.META_CLIENT_CAPABILITIES: {}}
    try:
        mh.check_routing_headers(method, params, headers, 1)
        mh.check_param_headers({("region",): "Region"}, params.get("arguments"), headers, 1)
    except ProtocolError as exc:
        assert exc.code in (-32020, -32602)
        event(str(exc.code))


# -- request handling of a running gateway ------------------------------------------------------


class LiveGateway:
    """A gateway with real enforcement on its own event loop thread, and a client on it."""

    def __init__(self, root: Path, upstream: str) -> None:
        self.setup = write_setup(root, upstream, catalog=pin_catalog(upstream))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._stack = self.run(self._start())

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> contextlib.AsyncExitStack:
        import yaml

        stack = contextlib.AsyncExitStack()
        data = yaml.safe_load(self.setup.config_path.read_text())
        data["audit"]["reserve_bytes"] = 0
        loaded = LoadedConfig(parse_config(data), self.setup.root, env={"CMCP_DEV_MODE": "1"})
        enforcement = await stack.enter_async_context(
            Enforcement.open(loaded, await select_provider("auto", True))
        )
        self.server = Server(enforcement.gateway(), "127.0.0.1", self.setup.port)
        await self.server.start()
        stack.push_async_callback(self.server.stop)
        self.http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        )
        return stack

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        async with self.http.post(self.setup.url, data=body, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        return self.run(self._post(body, headers))  # type: ignore[no-any-return]

    def healthy(self) -> bool:
        async def probe() -> int:
            async with self.http.get(self.setup.base + "/healthz") as resp:
                return resp.status

        return self.run(probe()) == 200  # type: ignore[no-any-return]

    def close(self) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with sdk_server() as upstream:
        gateway = LiveGateway(tmp_path_factory.mktemp("fuzz-gateway"), upstream)
        try:
            yield gateway
        finally:
            gateway.close()


_VALID = [
    json.dumps(modern_request(1, "tools/call", {"name": "echo", "arguments": {"text": "x"}})),
    json.dumps(modern_request(2, "tools/call", {"name": "get_env", "arguments": {"name": "H"}})),
    json.dumps(modern_request(3, "tools/list")),
    json.dumps(modern_request(4, "resources/read", {"uri": "res://greeting"})),
    json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo"}}),
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {}},
        }
    ),
]
_BODIES = st.one_of(
    st.binary(max_size=200),
    json_texts().map(str.encode),
    st.sampled_from(_VALID).map(str.encode).flatmap(lambda b: mutated(b, max_ops=6)),
    st.sampled_from(_VALID).map(str.encode),
)
_HEADER_CHOICES: dict[str, st.SearchStrategy[str]] = {
    "Accept": st.sampled_from(
        ["application/json, text/event-stream", "*/*", "text/event-stream", "", "a/b, ,;q=1"]
    ),
    "Content-Type": st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "", "x"]
    ),
    "MCP-Protocol-Version": st.sampled_from([MODERN, LEGACY, "2099-01-01", "", "x"]),
    "Mcp-Method": st.sampled_from(["tools/call", "tools/list", "x"]) | _HEADER_TEXT,
    "Mcp-Name": st.sampled_from(["echo", "get_env", "=?base64?ZWNobw==?=", "=?base64?!?="])
    | _HEADER_TEXT,
    "Mcp-Session-Id": _HEADER_TEXT,
    "Mcp-Param-Region": _HEADER_TEXT,
    "Last-Event-ID": _HEADER_TEXT,
    "Authorization": st.sampled_from(["Bearer x", "Basic y", "Bearer", ""]),
    "Origin": st.sampled_from(["http://localhost:1", "http://evil.example", "null", ""]),
}


@st.composite
def request_headers(draw: st.DrawFn) -> dict[str, str]:
    base = modern_headers("tools/call", "echo") if draw(st.booleans()) else {}
    for name in draw(st.lists(st.sampled_from(sorted(_HEADER_CHOICES)), max_size=5)):
        base[name] = draw(_HEADER_CHOICES[name])
    return base


@request_settings
@given(_BODIES, request_headers())
def test_random_requests_never_break_the_gateway(
    live: LiveGateway, body: bytes, headers: dict[str, str]
) -> None:
    status, content_type, reply = live.post(body, headers)
    assert status < 500 or status in (502, 503, 504), (status, reply[:300])
    if status in (202, 405):
        return  # an accepted notification/response, or a method the endpoint does not allow
    if content_type.startswith("text/event-stream"):
        assert b"data: " in reply
        event("sse")
    else:
        message = json.loads(reply)
        assert message.get("jsonrpc") == "2.0" and ("result" in message or "error" in message)
        event(f"{status} {message.get('error', {}).get('code', 'result')}")


def test_the_fuzzed_gateway_is_still_healthy(live: LiveGateway) -> None:
    assert live.healthy()
    status, _, reply = live.post(_VALID[0].encode(), modern_headers("tools/call", "echo"))
    assert status == 200 and json.loads(reply)["result"]["content"][0]["text"] == "x"
