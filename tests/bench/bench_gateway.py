"""Gateway overhead: tools/call latency and throughput, direct vs a bare hop vs the gateway.

    python tests/bench/bench_gateway.py [--calls 2000] [--upstream sdk|fast] [--enforce]

In one run it measures the same ``tools/call`` (2026-07-28 stateless POST, JSON reply) sent

* **direct** to the upstream,
* through a **bare hop**: a minimal aiohttp pass-through that copies the request to the
  upstream and streams the reply back, with a pooled client session (the floor any proxy
  pays), and
* through the **gateway** (``cmcp_sidecar``) with the pass-through seam, or with the
  enforcement implementation when ``--enforce`` is given and available,

at concurrency 1 and 8, and prints p50/p99 latency, throughput and the ratios. Each peer is its
own process; the client is this one. ``--upstream sdk`` is the Python SDK test server;
``--upstream fast`` a minimal aiohttp echo server, so the upstream does not hide the proxies'
cost. Results go to docs/benchmarks.md ("Gateway overhead").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.mcp.peers import free_port, wait_port  # noqa: E402

MODERN = "2026-07-28"
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": MODERN,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


def call_body(i: int) -> bytes:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
    }
    params = {"name": "echo", "arguments": {"text": f"hello {i}"}, "_meta": meta}
    return json.dumps(
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}
    ).encode()


# -- peers (each runs in its own process) ---------------------------------------------------


async def fast_upstream(port: int) -> None:
    """A minimal stateless MCP echo server (JSON replies), to keep the upstream out of the way."""

    async def handle(request: web.Request) -> web.Response:
        msg = json.loads(await request.read())
        if msg.get("method") == "server/discover":
            result: dict[str, Any] = {
                "supportedVersions": [MODERN],
                "capabilities": {"tools": {}},
                "cacheScope": "public",
                "ttlMs": 0,
                "resultType": "complete",
            }
        elif msg.get("method") == "tools/list":
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            result = {"tools": [{"name": "echo", "description": "echo", "inputSchema": schema}]}
        else:
            text = msg["params"]["arguments"]["text"]
            result = {"content": [{"type": "text", "text": text}], "resultType": "complete"}
        return web.json_response({"jsonrpc": "2.0", "id": msg.get("id"), "result": result})

    app = web.Application()
    app.router.add_post("/mcp", handle)
    await _serve(app, port)


async def bare_hop(port: int, target: str) -> None:
    """The floor: copy the request upstream, stream the reply back, nothing else."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=300))

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.post(target, data=await request.read(), headers=headers) as up:
            out = web.StreamResponse(
                status=up.status, headers={"Content-Type": up.headers["Content-Type"]}
            )
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application()
    app.router.add_post("/mcp", handle)
    await _serve(app, port)


async def gateway(port: int, target: str, enforce: bool, audit_dir: str | None) -> None:
    from cmcp_sidecar.config import LoadedConfig, parse_config
    from cmcp_sidecar.gateway import Gateway
    from cmcp_sidecar.mcp.intercept import PassThrough
    from cmcp_sidecar.server.app import Server

    data: dict[str, Any] = {
        "listen_addr": f"127.0.0.1:{port}",
        "upstreams": [{"name": "bench", "url": target}],
        "catalog_path": None,
    }
    if not enforce:
        loaded = LoadedConfig(parse_config(data), REPO, env={})
        server = Server(Gateway(loaded, interceptor=PassThrough()), "127.0.0.1", port)
        await server.start()
        await asyncio.Event().wait()
    # The enforcement implementation: the demo bundle (allow-all decides echo), a catalog
    # pinned from the upstream, the audit log durable on disk (or on --audit-dir), claims.
    import tempfile

    from cmcp_sidecar.attest import select_provider
    from cmcp_sidecar.config import UpstreamConfig
    from cmcp_sidecar.enforce import Enforcement
    from cmcp_sidecar.mcp.client import ControlClient
    from cmcp_sidecar.mcp.upstream import Upstream
    from cmcp_sidecar.policy.catalog_guard import pin_catalog

    work = Path(tempfile.mkdtemp(prefix="cmcp-bench-", dir=audit_dir))
    up = Upstream(0, UpstreamConfig(name="bench", url=target), {}, max_response_bytes=1 << 24)
    await up.start()
    async with ControlClient(up) as client:
        tools = await client.list_all("tools/list", "tools")
    await up.close()
    (work / "catalog.json").write_text(json.dumps(pin_catalog({"bench": tools})))
    data.update(
        policy_bundle_path=str(REPO / "policies" / "demo"),
        catalog_path="catalog.json",
        audit={"path": "audit", "fsync": "batch"},
        claims={"dir": "claims"},
    )
    loaded = LoadedConfig(parse_config(data), work, env={"CMCP_DEV_MODE": "1"})
    async with Enforcement.open(loaded, await select_provider("auto", True)) as enforcement:
        server = Server(enforcement.gateway(), "127.0.0.1", port)
        await server.start()
        await asyncio.Event().wait()


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def start(role: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--role", role, "--port", str(port), *extra]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


# -- the load --------------------------------------------------------------------------------


async def measure(
    url: str, calls: int, concurrency: int, warmup: int = 0
) -> tuple[list[float], float]:
    """(latencies in seconds, elapsed seconds) of ``calls`` calls from ``concurrency`` workers."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> None:
            start = time.perf_counter()
            async with http.post(url, data=call_body(i), headers=HEADERS) as resp:
                body = await resp.read()
            latencies.append(time.perf_counter() - start)
            if resp.status != 200 or b'"hello' not in body:
                raise RuntimeError(f"bad reply {resp.status}: {body[:200]!r}")

        for i in range(warmup):
            await one(i)
        latencies.clear()
        queue = iter(range(calls))

        async def worker() -> None:
            for i in queue:
                await one(i)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} vCPU ({cpu}), Python {platform.python_version()}, {system}"


async def run(args: argparse.Namespace) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.upstream == "sdk":
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.servers.sdk_server", "--port", str(port)],
                    cwd=REPO,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_port(port, procs[-1])
        else:
            port = free_port()
            procs.append(start("upstream-fast", port))
        upstream = f"http://127.0.0.1:{port}/mcp"
        hop_port, gw_port = free_port(), free_port()
        procs.append(start("hop", hop_port, "--target", upstream))
        procs.append(
            start(
                "gateway",
                gw_port,
                "--target",
                upstream,
                *(["--enforce"] if args.enforce else []),
                *(["--audit-dir", args.audit_dir] if args.audit_dir else []),
            )
        )
        targets = {
            "direct": upstream,
            "bare hop": f"http://127.0.0.1:{hop_port}/mcp",
            "gateway": f"http://127.0.0.1:{gw_port}/mcp",
        }
        print(f"machine: {machine()}")
        print(
            f"upstream: {args.upstream}; seam: {'enforcement' if args.enforce else 'pass-through'};"
            " "
            f"{args.calls} calls per row\n"
        )
        pids = {"direct": None, "bare hop": procs[-2].pid, "gateway": procs[-1].pid}
        per_round = max(1, args.calls // args.rounds)
        for url in targets.values():  # warm-up: connections, lazy imports, directories
            await measure(url, 0, 1, warmup=200)
        print("| path | concurrency | calls/s | p50 ms | p99 ms | proxy CPU µs/call |")
        print("|---|---|---|---|---|---|")
        results: dict[tuple[str, int], dict[str, float]] = {}
        for concurrency in (1, 8):
            lat: dict[str, list[float]] = {n: [] for n in targets}
            busy = dict.fromkeys(targets, 0.0)
            cpu = dict.fromkeys(targets, 0.0)
            for _ in range(args.rounds):  # interleaved, so load from elsewhere hits all paths alike
                for name, url in targets.items():
                    pid = pids[name]
                    before = cpu_seconds(pid) if pid else 0.0
                    got, elapsed = await measure(url, per_round, concurrency)
                    cpu[name] += (cpu_seconds(pid) - before) if pid else 0.0
                    lat[name] += got
                    busy[name] += elapsed
            for name in targets:
                ordered = sorted(lat[name])
                row = {
                    "per_s": len(ordered) / busy[name],
                    "p50_ms": statistics.median(ordered) * 1000,
                    "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000,
                    "cpu_us": cpu[name] / len(ordered) * 1e6,
                }
                results[(name, concurrency)] = row
                cpu_text = f"{row['cpu_us']:.0f}" if pids[name] else "–"
                print(
                    f"| {name} | {concurrency} | {row['per_s']:.0f} | {row['p50_ms']:.3f} | "
                    f"{row['p99_ms']:.3f} | {cpu_text} |"
                )
        print()
        for concurrency in (1, 8):
            hop, gw = results[("bare hop", concurrency)], results[("gateway", concurrency)]
            print(
                f"concurrency {concurrency}: gateway − bare hop: "
                f"p50 {gw['p50_ms'] - hop['p50_ms']:+.3f} ms, "
                f"CPU {gw['cpu_us'] - hop['cpu_us']:+.0f} µs/call; gateway throughput "
                f"{gw['per_s'] / hop['per_s']:.0%} of the bare hop's"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role", choices=("bench", "upstream-fast", "hop", "gateway"), default="bench"
    )
    parser.add_argument("--port", type=int)
    parser.add_argument("--target")
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--upstream", choices=("sdk", "fast"), default="fast")
    parser.add_argument(
        "--enforce", action="store_true", help="policy + audit + claims behind the seam"
    )
    parser.add_argument(
        "--audit-dir", help="where the enforced gateway keeps its audit log (default: /tmp)"
    )
    args = parser.parse_args()
    if args.role == "upstream-fast":
        asyncio.run(fast_upstream(args.port))
    elif args.role == "hop":
        asyncio.run(bare_hop(args.port, args.target))
    elif args.role == "gateway":
        asyncio.run(gateway(args.port, args.target, args.enforce, args.audit_dir))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
