"""The processes a gateway benchmark talks to, each started as its own process.

    python -m tests.bench.peers upstream --port P
    python -m tests.bench.peers hop --port P --target URL [--loop uvloop] [--durable FILE]
    python -m tests.bench.peers passthrough --port P --target URL

* ``upstream`` — a minimal stateless MCP server (2026-07-28, JSON replies) with two tools:
  ``echo`` answers at once; ``stream`` answers with an SSE stream of progress notifications
  over ``seconds`` before its result (open streams for the memory benchmark). Minimal, so
  that it does not hide the proxies' own cost.
* ``hop`` — the floor of any proxy: copies the request upstream over a pooled keep-alive
  session and streams the reply back; nothing parsed. On asyncio's loop (the issue's "bare
  aiohttp hop"), or on uvloop (``--loop uvloop``: the floor for the loop our gateway uses).
  With ``--durable FILE`` (uvloop and the gateway's upstream client, the lightest hop): the
  floor of *any* proxy that keeps "durable before the reply" — each reply's body is read whole
  and a line standing in for an audit entry is appended to FILE by the simplest group commit
  (a thread writes whatever is pending and syncs it with ``fdatasync``) before the reply is
  sent; no parsing, policy or hash chain.
* ``passthrough`` — our proxy with the pass-through seam (no policy, audit or claims): the
  proxy's own share of the gateway's cost.

The enforcing gateway is started through its real command line (:func:`start_gateway`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.mcp.peers import free_port, wait_port

from .common import REPO

MODERN = "2026-07-28"
ECHO_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}
STREAM_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "seconds": {"type": "number"}},
}
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": MODERN,
    "Mcp-Method": "tools/call",
}
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}


def call_body(i: int, tool: str = "echo", **arguments: Any) -> bytes:
    """A 2026-07-28 ``tools/call`` of ``tool`` with ``text: "hello <i>"``."""
    params = {"name": tool, "arguments": {"text": f"hello {i}", **arguments}, "_meta": META}
    message = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}
    return json.dumps(message).encode()


def call_headers(tool: str = "echo") -> dict[str, str]:
    return {**HEADERS, "Mcp-Name": tool}


# -- the roles ------------------------------------------------------------------------------


async def upstream(port: int) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        msg = json.loads(await request.read())
        method, params = msg.get("method"), msg.get("params") or {}
        if method == "server/discover":
            result: dict[str, Any] = {
                "supportedVersions": [MODERN],
                "capabilities": {"tools": {}},
                "cacheScope": "public",
                "ttlMs": 0,
                "resultType": "complete",
            }
        elif method == "tools/list":
            result = {
                "tools": [
                    {"name": "echo", "description": "echo", "inputSchema": ECHO_SCHEMA},
                    {"name": "stream", "description": "slow echo", "inputSchema": STREAM_SCHEMA},
                ]
            }
        elif method == "tools/call" and params.get("name") == "stream":
            return await _stream(request, msg)
        else:
            text = params["arguments"]["text"]
            result = {"content": [{"type": "text", "text": text}], "resultType": "complete"}
        return web.json_response({"jsonrpc": "2.0", "id": msg.get("id"), "result": result})

    app = web.Application()
    app.router.add_post("/mcp", handle)
    await _serve(app, port)


async def _stream(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    arguments = msg["params"]["arguments"]
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    seconds = float(arguments.get("seconds", 1.0))
    steps = max(1, int(seconds / 0.25))
    token = (msg["params"].get("_meta") or {}).get("progressToken", msg["id"])
    for step in range(steps):
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": step, "total": steps},
        }
        await out.write(b"data: " + json.dumps(note).encode() + b"\n\n")
        await asyncio.sleep(seconds / steps)
    result = {"content": [{"type": "text", "text": arguments["text"]}], "resultType": "complete"}
    reply = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
    await out.write(b"data: " + json.dumps(reply).encode() + b"\n\n")
    await out.write_eof()
    return out


async def _relay_reply(request: web.Request, up: Any) -> web.StreamResponse:
    """Stream an upstream reply (status, Content-Type, body chunks) back to the client."""
    out = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
    await out.prepare(request)
    async for chunk in up.content.iter_any():
        await out.write(chunk)
    await out.write_eof()
    return out


def _hop_app(handle: Any) -> web.Application:
    app = web.Application()
    app.router.add_post("/mcp", handle)
    return app


async def hop(port: int, target: str) -> None:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=300))

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.post(target, data=await request.read(), headers=headers) as up:
            return await _relay_reply(request, up)

    await _serve(_hop_app(handle), port)


ENTRY_BYTES = 600  # about the size of an enforcing gateway's audit line for the echo call


class GroupCommit:
    """Lines appended to a file, durable (``fdatasync``) before ``append`` returns; whatever is
    pending when the writer thread comes round shares one write and one sync."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self.ready = threading.Condition()
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self._writer, daemon=True).start()

    async def append(self, line: bytes) -> None:
        done = self.loop.create_future()
        with self.ready:
            self.pending.append((line, done))
            self.ready.notify()
        await done

    def _writer(self) -> None:
        while True:
            with self.ready:
                self.ready.wait_for(lambda: self.pending)
                group, self.pending = self.pending, []
            failure = None
            try:
                os.write(self.fd, b"".join(line for line, _ in group))
                os.fdatasync(self.fd)
            except OSError as exc:  # the calls fail with it rather than hang
                failure = exc
            self.loop.call_soon_threadsafe(_resolve, [done for _, done in group], failure)


def _resolve(futures: list[asyncio.Future[None]], failure: OSError | None) -> None:
    for done in futures:
        if done.done():
            continue
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(failure)


async def hop_ours(port: int, target: str, durable: str | None = None) -> None:
    """The bare hop with the gateway's own upstream client in place of aiohttp's (what that
    client costs, next to aiohttp's, in the same run); with ``durable``, each reply is made
    durable in that file before it is sent."""
    import hashlib

    from cmcp_sidecar.mcp.http_client import HttpPool

    pool = HttpPool(target)
    log = GroupCommit(durable) if durable else None
    skip = ("host", "content-length", "accept-encoding")

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        up = await pool.send("POST", headers, await request.read(), 300)
        try:
            if log is None:
                return await _relay_reply(request, up)
            body = b"".join([chunk async for chunk in up.content.iter_any()])
            status, content_type = up.status, up.headers["Content-Type"]
        finally:
            pool.release(up)
        line = hashlib.sha256(body).hexdigest().encode().ljust(ENTRY_BYTES - 1, b" ") + b"\n"
        await log.append(line)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    await _serve(_hop_app(handle), port)


async def passthrough(port: int, target: str) -> None:
    from cmcp_sidecar.config import LoadedConfig, parse_config
    from cmcp_sidecar.gateway import Gateway
    from cmcp_sidecar.mcp.intercept import PassThrough
    from cmcp_sidecar.server.app import Server

    data = {
        "listen_addr": f"127.0.0.1:{port}",
        "upstreams": [{"name": "bench", "url": target}],
        "catalog_path": None,
    }
    loaded = LoadedConfig(parse_config(data), REPO, env={})
    server = Server(Gateway(loaded, interceptor=PassThrough()), "127.0.0.1", port)
    await server.start()
    await asyncio.Event().wait()


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# -- starting them -----------------------------------------------------------------------------


@dataclass
class Peer:
    """A started process and where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_role(role: str, *extra: str, name: str | None = None) -> Peer:
    """Start one of this module's roles on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.peers", role, "--port", str(port), *extra]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port, proc)
    return Peer(name or role, proc, port)


ARGS_POLICY = """// Benchmark bundle: decisions depend on the arguments, so none can be shared.
@id("allow-all")
permit(principal, action, resource);

@id("deny-forbidden-text")
forbid(principal, action == Action::"call_tool", resource)
when { context.arguments has text && context.arguments.text == "forbidden" };
"""


def args_bundle(directory: Path) -> Path:
    """A valid bundle whose forbid reads ``context.arguments`` (no decision is memoizable)."""
    schema = (REPO / "policies" / "schema.cedarschema").read_text()
    schema = schema.replace("type Arguments = {\n};", "type Arguments = {\n  text?: String,\n};")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "schema.cedarschema").write_text(schema)
    (directory / "policies.cedar").write_text(ARGS_POLICY)
    manifest = {"name": "bench-args", "version": "1", "description": "reads arguments"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@dataclass(frozen=True)
class GatewaySpec:
    """One configuration of the real gateway (``cmcp start``)."""

    name: str
    mode: str = "enforcing"
    fsync: str = "batch"
    bundle: str = "demo"  # demo | args
    audit_dir: str | None = None  # None: in the work directory (the disk under test)
    loop: str | None = None  # CMCP_EVENT_LOOP; None: the gateway's default

    def config(self, work: Path, port: int, upstream_url: str) -> dict[str, Any]:
        audit = Path(self.audit_dir) / f"{work.name}-audit" if self.audit_dir else work / "audit"
        bundle = (
            REPO / "policies" / "demo" if self.bundle == "demo" else args_bundle(work / "bundle")
        )
        return {
            "listen_addr": f"127.0.0.1:{port}",
            "upstreams": [{"name": "bench", "url": upstream_url}],
            "policy_bundle_path": str(bundle),
            "catalog_path": str(work / "catalog.json"),
            "attestation": {"enforcement_mode": self.mode},
            "audit": {"path": str(audit), "fsync": self.fsync},
            "claims": {"dir": str(work / "claims")},
        }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cmcp_sidecar.cli", *args]


def start_gateway(
    spec: GatewaySpec,
    upstream_url: str,
    work: Path,
    *,
    extra_env: dict[str, str] | None = None,
    wrapper: str | None = None,
) -> Peer:
    """Pin the upstream's catalog with ``cmcp catalog pin``, then ``cmcp start`` in dev mode
    (through ``wrapper``, a module run in place of ``cmcp_sidecar.cli``, e.g.
    ``tests.bench.traced_gateway``)."""
    work.mkdir(parents=True, exist_ok=True)
    catalog = subprocess.run(
        cli("catalog", "pin", "--upstream", upstream_url, "--name", "bench"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        check=True,
    ).stdout
    (work / "catalog.json").write_bytes(catalog)
    port = free_port()
    (work / "cmcp-config.yaml").write_text(json.dumps(spec.config(work, port, upstream_url)))
    env = {**_env(), "CMCP_DEV_MODE": "1", **(extra_env or {})}
    if spec.loop:
        env["CMCP_EVENT_LOOP"] = spec.loop
    start = cli("start", "--config", str(work / "cmcp-config.yaml"))
    if wrapper:
        start[2] = wrapper
    proc = subprocess.Popen(
        start,
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "gateway.log").open("wb"),
    )
    wait_port(port, proc, timeout=60)
    return Peer(spec.name, proc, port, work, {"spec": spec.__dict__})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("upstream", "hop", "passthrough"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--client", choices=("aiohttp", "ours"), default="aiohttp")
    parser.add_argument("--durable", help="hop: append a line per reply here, durably")
    args = parser.parse_args()
    if args.role == "upstream":
        asyncio.run(upstream(args.port))
    elif args.role == "hop" and args.durable:
        __import__("uvloop").run(hop_ours(args.port, args.target, args.durable))
    elif args.role == "hop":
        run = asyncio.run if args.loop == "asyncio" else __import__("uvloop").run
        run((hop if args.client == "aiohttp" else hop_ours)(args.port, args.target))
    else:
        from cmcp_sidecar import eventloop

        eventloop.run(passthrough(args.port, args.target))  # the loop cmcp start uses


if __name__ == "__main__":
    main()
