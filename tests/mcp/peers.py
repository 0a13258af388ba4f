"""Real peers for gateway tests: SDK servers in subprocesses, gateways in-process.

Nothing here is a stand-in: servers are the official Python SDK's (or npm's), started on
loopback ports, and the gateway is the real one with the pass-through seam (the enforcement
implementation is tested on its own and wired in by ``cmcp_sidecar.enforce``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from cmcp_sidecar.config import LoadedConfig, parse_config
from cmcp_sidecar.gateway import Gateway
from cmcp_sidecar.mcp.intercept import Interceptor, PassThrough
from cmcp_sidecar.server.app import Server

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@contextlib.contextmanager
def peer(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a peer process listening on loopback ``port``; yield its /mcp URL, stop it after."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sdk_server(*flags: str) -> contextlib.AbstractContextManager[str]:
    """tests/servers/sdk_server.py on a free port; its /mcp URL."""
    port = free_port()
    return peer(
        [sys.executable, "-m", "tests.servers.sdk_server", "--port", str(port), *flags], port
    )


@contextlib.asynccontextmanager
async def running_gateway(
    upstreams: list[dict[str, Any]] | str,
    *,
    interceptor: Interceptor | None = None,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> AsyncIterator[Server]:
    """A started gateway on a free loopback port in front of ``upstreams``."""
    if isinstance(upstreams, str):
        upstreams = [{"name": "main", "url": upstreams}]
    data: dict[str, Any] = {
        "listen_addr": "127.0.0.1:0",
        "upstreams": upstreams,
        "catalog_path": None,
    }
    data.update(extra)
    loaded = LoadedConfig(parse_config(data), REPO, env=env or {})
    gateway = Gateway(loaded, interceptor=interceptor or PassThrough())
    server = Server(gateway, "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def transport(
    url: str, *, headers: dict[str, str] | None = None, max_event: int = 16 * 1024 * 1024
) -> Any:
    """The SDK's Streamable HTTP client transport (optionally with headers, bigger SSE events)."""
    client = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(30, read=60))
    return streamable_http_client(url, http_client=client, max_sse_event_size=max_event)


# -- a raw HTTP client, for what the SDK client does not let a test control ----------------

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def modern_request(
    request_id: Any, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"},
    }
    params = dict(params or {})
    params["_meta"] = {**params.get("_meta", {}), **meta}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def modern_headers(method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
    }
    if name is not None:
        headers["Mcp-Name"] = name
    headers.update(extra)
    return headers


async def legacy_session(http: Any, url: str, **headers: str) -> str:
    """initialize + notifications/initialized over raw HTTP; the session id."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    base = {"Content-Type": "application/json", "Accept": ACCEPT, **headers}
    async with http.post(url, json=init, headers=base) as resp:
        assert resp.status == 200, await resp.text()
        sid = resp.headers["Mcp-Session-Id"]
        await resp.read()
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http.post(
        url, json=note, headers={**base, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
    ) as resp:
        assert resp.status == 202
    return sid


def legacy_headers(sid: str, **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": LEGACY,
        **extra,
    }


async def sse_messages(resp: Any) -> AsyncIterator[tuple[float, Any]]:
    """(arrival time, event) for each SSE event of an aiohttp response, as it arrives."""
    from cmcp_sidecar.mcp.sse import SSEParser

    parser = SSEParser(max_event_bytes=64 * 1024 * 1024)
    async for chunk in resp.content.iter_any():
        for event in parser.feed(chunk):
            yield time.monotonic(), event


def node_peers() -> Path:
    """The pinned Node peers (installed once by tests/tools/install-node-peers.sh)."""
    script = REPO / "tests" / "tools" / "install-node-peers.sh"
    out = subprocess.run(
        ["bash", str(script)], check=True, capture_output=True, text=True, timeout=600
    )
    return Path(out.stdout.strip().splitlines()[-1])


def server_everything() -> contextlib.AbstractContextManager[str]:
    """@modelcontextprotocol/server-everything in streamableHttp mode on a loopback port."""
    entry = node_peers() / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist"
    port = free_port()
    preload = REPO / "tests" / "tools" / "loopback.mjs"
    cmd = ["node", "--import", str(preload), str(entry / "index.js"), "streamableHttp"]
    return peer(cmd, port, {"PORT": str(port)})
