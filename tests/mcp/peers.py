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
from cmcp_sidecar.config import LoadedConfig, parse_config
from cmcp_sidecar.gateway import Gateway
from cmcp_sidecar.mcp.intercept import Interceptor, PassThrough
from cmcp_sidecar.server.app import Server
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@contextlib.contextmanager
def sdk_server(*flags: str) -> Iterator[str]:
    """Start tests/servers/sdk_server.py; yield its /mcp URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.sdk_server", "--port", str(port), *flags],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
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
    data: dict[str, Any] = {"listen_addr": "127.0.0.1:0", "upstreams": upstreams, "catalog_path": None}
    data.update(extra)
    loaded = LoadedConfig(parse_config(data), REPO, env=env or {})
    gateway = Gateway(loaded, interceptor=interceptor or PassThrough())
    server = Server(gateway, "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def transport(url: str, *, headers: dict[str, str] | None = None, max_event: int = 16 * 1024 * 1024) -> Any:
    """The SDK's Streamable HTTP client transport (optionally with headers, bigger SSE events)."""
    client = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(30, read=60))
    return streamable_http_client(url, http_client=client, max_sse_event_size=max_event)
