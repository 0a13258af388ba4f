"""Unit tests of the proxy's small pure parts: SSE parsing, tokens, header codec, parsing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcp_sidecar.mcp import headers as mh
from cmcp_sidecar.mcp import tokens
from cmcp_sidecar.mcp.jsonrpc import ProtocolError, parse_message, strict_loads
from cmcp_sidecar.mcp.sse import SSEError, SSEParser, encode_event
from cmcp_sidecar.server.security import host_allowed, origin_allowed, principal_for
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.errors import InputError

STREAM = (
    b": comment\r\n"
    b'event: message\r\nid: e1\r\ndata: {"a":1}\r\n\r\n'
    b"id: prime\ndata: \n\n"
    b"data: line1\rdata: line2\r\r"
    b"retry: 500\nevent: message\ndata:no-space\n\n"
)


def parse_all(chunks: list[bytes]) -> list[tuple[bytes, str, str | None, int | None]]:
    parser = SSEParser(max_event_bytes=1 << 20)
    return [(e.data, e.event, e.id, e.retry) for c in chunks for e in parser.feed(c)]


EXPECTED = [
    (b'{"a":1}', "message", "e1", None),
    (b"", "message", "prime", None),
    (b"line1\nline2", "message", None, None),
    (b"no-space", "message", None, 500),
]


def test_sse_line_ends_comments_fields() -> None:
    assert parse_all([STREAM]) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert parse_all(chunks) == EXPECTED


def test_sse_bounds() -> None:
    parser = SSEParser(max_event_bytes=100)
    with pytest.raises(SSEError):
        parser.feed(b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 60 + b"\n")
    with pytest.raises(SSEError):
        SSEParser(max_event_bytes=100).feed(b"data: " + b"z" * 500)  # a line without an end
    with pytest.raises(SSEError):
        SSEParser(max_event_bytes=10_000).feed(b"id: " + b"i" * 2000 + b"\n")


def test_sse_encode_round_trips() -> None:
    frame = encode_event(b"a\nb", event_id="p.x", retry=3)
    assert parse_all([frame]) == [(b"a\nb", "message", "p.x", 3)]


def test_tokens_round_trip_and_refuse_tampering() -> None:
    assert tokens.parse_event_id(tokens.stream_event_id(1, "e9"), 2) == (False, {1: "e9"})
    assert tokens.parse_event_id(tokens.standalone_event_id({0: "a", 1: "b"}), 2) == (
        True,
        {0: "a", 1: "b"},
    )
    assert tokens.parse_list_cursor(tokens.list_cursor(1, None), 2) == (1, None)
    for bad in (
        "p.",
        "p.e30",
        "x.abc",
        tokens.stream_event_id(5, "e"),
        "g." + "A" * 9000,
        tokens.list_cursor(-1, "c"),
    ):
        with pytest.raises(tokens.TokenError):
            tokens.parse_event_id(bad, 2) if not bad.startswith("c.") else tokens.parse_list_cursor(
                bad, 2
            )


@pytest.mark.parametrize(
    "value", ["us-west1", "Hello, 世界", " padded ", "line1\nline2", "=?base64?literal?="]
)
def test_header_value_codec(value: str) -> None:
    encoded = mh.encode_value(value)
    assert encoded.isascii() and "\n" not in encoded
    assert mh.decode_value(encoded) == value


def test_header_value_codec_refuses_bad_sentinels() -> None:
    assert mh.decode_value("=?base64?!!!?=") is None
    assert mh.decode_value("=?base64?" + base64.b64encode(b"\xff").decode() + "?=") is None


def test_param_tokens_only_on_plain_property_chains() -> None:
    schema = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "nested": {
                "type": "object",
                "properties": {"n": {"type": "integer", "x-mcp-header": "N"}},
            },
        },
    }
    assert mh.param_tokens(schema) == {("region",): "Region", ("nested", "n"): "N"}
    assert mh.param_headers(
        mh.param_tokens(schema) or {}, {"region": "eu", "nested": {"n": 7}}
    ) == {"Mcp-Param-Region": "eu", "Mcp-Param-N": "7"}
    bad = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}},
    }
    assert mh.param_tokens(bad) is None
    dup = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "x-mcp-header": "X"},
            "b": {"type": "string", "x-mcp-header": "x"},
        },
    }
    assert mh.param_tokens(dup) is None


SAMPLES = [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[1,2.5,true,null]}}}',
    b'{"a":1,"a":2}',
    b'{"a":{"b":1,"b":1}}',
    b'{"a":"\\ud800"}',
    b'{"a":"\\u0041"}',
    b'{"a":123456789012345678}',
    b'{"a":NaN}',
    b'{"a":1e400}',
    b"[" * 300 + b"]" * 300,
    b'{"a":"x"} trailing',
    b"\xef\xbb\xbf{}",
]


@pytest.mark.parametrize("data", SAMPLES)
def test_fast_parse_agrees_with_the_shared_strict_parser(data: bytes) -> None:
    def outcome(fn: object) -> object:
        try:
            return ("ok", json.dumps(fn(data), sort_keys=True))  # type: ignore[operator]
        except InputError as exc:
            return ("error", exc.code)

    assert outcome(lambda d: strict_loads(d, max_bytes=1 << 20)) == outcome(
        lambda d: parse_json(d, allow_floats=True, max_bytes=1 << 20)
    )


def test_parse_message_envelopes() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', max_bytes=1000)
    assert (info.value.code, info.value.reason) == (-32600, "jsonrpc.batch")
    assert parse_message(
        b'{"jsonrpc":"2.0","method":"notifications/x"}', max_bytes=1000
    ).is_notification
    assert parse_message(b'{"jsonrpc":"2.0","id":"a","result":{}}', max_bytes=1000).is_response
    assert parse_message(
        b'{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}', max_bytes=1000
    ).is_response
    with pytest.raises(ProtocolError):
        parse_message(b'{"jsonrpc":"2.0","id":null,"result":{}}', max_bytes=1000)


def test_security_helpers() -> None:
    hosts = ("127.0.0.1:*", "localhost:*", "[::1]:*", "gw.internal:8443")
    assert host_allowed("127.0.0.1:9", hosts) and host_allowed("LOCALHOST", hosts)
    assert host_allowed("[::1]:80", hosts) and host_allowed("gw.internal:8443", hosts)
    assert not host_allowed("gw.internal:9", hosts) and not host_allowed(None, hosts)
    assert not host_allowed("127.0.0.1.evil.com:80", hosts)
    origins = ("http://localhost:*", "https://app.example")
    assert origin_allowed(None, origins) and origin_allowed("http://localhost:3000", origins)
    assert not origin_allowed("https://localhost:3000", origins) and not origin_allowed(
        "null", origins
    )
    tokens_ = {"t-1": "a", "t-2": "b"}
    assert principal_for(None, {}, "p") == "p"
    assert (
        principal_for("Bearer t-2", tokens_, "p") == "b"
        and principal_for("bearer t-1", tokens_, "p") == "a"
    )
    assert (
        principal_for("Bearer t-3", tokens_, "p") is None
        and principal_for("Basic t-1", tokens_, "p") is None
    )
