"""Policy-bypass probes beyond tests/mcp/test_bypass.py, against a real enforcing gateway
(``cmcp start``, the demo bundle: ``get_env`` forbidden) in front of the recording SDK server.

Each probe tries to reach ``get_env`` (or to make the gateway and the upstream read different
requests) and must be refused with a specific error, with nothing of it reaching the upstream:
look-alike tool names (full-width letters, case, NUL, trailing space, zero-width and
combining characters: names are matched exactly, never normalised — with one upstream the
name is not in the approved catalog, so the call is denied, ``reason: catalog``), method-name
variants (an unknown method is denied by the enforcement, or its header does not match),
HTTP request smuggling (Content-Length with Transfer-Encoding, two Content-Lengths: refused by
the HTTP parser before the gateway sees a request), and a nesting bomb.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from cmcp_sidecar.mcp.headers import encode_value
from tests.mcp.peers import modern_headers, modern_request, sdk_server

from .harness import GatewayProcess, GatewaySetup, get_json, upstream_requests, write_setup


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewaySetup, str]]:
    with sdk_server("--record") as upstream:
        setup = write_setup(tmp_path_factory.mktemp("probes"), upstream)
        with GatewayProcess(setup) as process:
            process.wait_ready()
            yield setup, upstream


def _raw(setup: GatewaySetup, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", setup.port), timeout=10) as sock:
        sock.sendall(request)  # every request says Connection: close
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def _post(setup: GatewaySetup, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{setup.port}\r\n{head}"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data
    return _raw(setup, request)


def _reached(upstream: str, marker: str) -> list[dict[str, Any]]:
    return [r for r in upstream_requests(upstream) if marker in json.dumps(r)]


def _error(response: bytes) -> dict[str, Any]:
    body = response.split(b"\r\n\r\n", 1)[1]
    if b"data: " in body:
        body = [line for line in body.split(b"\n") if line.startswith(b"data: ")][-1][6:]
    return dict(json.loads(body)["error"])


@pytest.mark.parametrize(
    "name",
    ["ｇｅｔ_ｅｎｖ", "GET_ENV", "Get_Env", "get_env\x00", "get_env ", " get_env", "get\u200b_env",
     "get_env\u0301", "get_env/", "get%5Fenv", "get\\u005fenv"],
)  # fmt: skip
def test_look_alike_tool_names_are_unknown_never_normalised(
    gateway: tuple[GatewaySetup, str], name: str
) -> None:
    setup, upstream = gateway
    marker = f"probe-name-{name.encode('unicode_escape').decode()}"
    body = modern_request(1, "tools/call", {"name": name, "arguments": {"name": marker}})
    response = _post(setup, body, modern_headers("tools/call", encode_value(name)))
    error = _error(response)
    assert (error["code"], error["data"]["reason"]) == (-32010, "catalog"), error
    assert _reached(upstream, marker) == []


@pytest.mark.parametrize("method", ["Tools/Call", "tools/call ", "tools/execute", "tools//call"])
def test_method_variants_are_denied_not_forwarded(
    gateway: tuple[GatewaySetup, str], method: str
) -> None:
    setup, upstream = gateway
    marker = f"probe-method-{method.strip().replace('/', '-')}"
    body = modern_request(2, method, {"name": "get_env", "arguments": {"name": marker}})
    response = _post(setup, body, modern_headers(method, "get_env"))
    error = _error(response)
    if error["code"] == -32020:  # HTTP trimmed the header's trailing space: a mismatch
        assert method != method.strip(), error
    else:
        assert (error["code"], error["data"]["reason"]) == (-32010, "unknown_method"), error
    assert _reached(upstream, marker) == []


def _smuggled(setup: GatewaySetup, marker: str) -> bytes:
    """A second request hidden after the first one's end, as a front end might misframe it."""
    inner = json.dumps(
        modern_request(3, "tools/call", {"name": "get_env", "arguments": {"name": marker}})
    ).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in modern_headers("tools/call", "get_env").items())
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{setup.port}\r\n{head}"
        f"Content-Length: {len(inner)}\r\n\r\n"
    ).encode() + inner


@pytest.mark.parametrize("framing", ["cl-te", "te-cl", "two-cl", "te-obfuscated"])
def test_request_smuggling_is_refused(gateway: tuple[GatewaySetup, str], framing: str) -> None:
    setup, upstream = gateway
    marker = f"probe-smuggle-{framing}"
    outer = json.dumps(modern_request(4, "tools/call", {"name": "echo", "arguments": {}}))
    hidden = _smuggled(setup, marker)
    chunked = f"{len(outer):x}\r\n{outer}\r\n0\r\n\r\n".encode() + hidden
    framings = {
        "cl-te": f"Content-Length: {len(outer)}\r\nTransfer-Encoding: chunked\r\n",
        "te-cl": f"Transfer-Encoding: chunked\r\nContent-Length: {len(chunked)}\r\n",
        "two-cl": f"Content-Length: {len(outer)}\r\nContent-Length: {len(chunked)}\r\n",
        "te-obfuscated": f"Transfer-Encoding: xchunked\r\nContent-Length: {len(outer)}\r\n",
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in modern_headers("tools/call", "echo").items())
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{setup.port}\r\n{head}{framings[framing]}"
        "Connection: close\r\n\r\n"
    ).encode() + chunked
    response = _raw(setup, request)
    assert response.split(b"\r\n", 1)[0].split()[1] == b"400", response[:300]
    assert _reached(upstream, marker) == []


def test_nesting_bomb_is_refused_and_the_gateway_stays_healthy(
    gateway: tuple[GatewaySetup, str],
) -> None:
    setup, upstream = gateway
    bomb = "[" * 100_000 + "]" * 100_000
    data = (
        '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo",'
        '"arguments":{"text":"probe-bomb","x":' + bomb + "}}}"
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in modern_headers("tools/call", "echo").items())
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{setup.port}\r\n{head}"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n{data}"
    ).encode()
    response = _raw(setup, request)
    assert response.startswith(b"HTTP/1.1 400") and _error(response)["code"] == -32700
    assert _reached(upstream, "probe-bomb") == []
    assert get_json(f"{setup.base}/healthz")[0] == 200


def test_probes_were_seen_by_a_live_upstream(gateway: tuple[GatewaySetup, str]) -> None:
    """The recording upstream does see what is forwarded (the probes' silence means something)."""
    setup, upstream = gateway
    body = modern_request(6, "tools/call", {"name": "echo", "arguments": {"text": "probe-ok"}})
    response = _post(setup, body, modern_headers("tools/call", "echo"))
    assert response.startswith(b"HTTP/1.1 200")
    assert len(_reached(upstream, "probe-ok")) == 1
