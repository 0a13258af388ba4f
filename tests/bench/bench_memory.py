"""Sidecar memory: RSS idle, with 64 open streams, under 64 concurrent clients; where it goes.

    python -m tests.bench.bench_memory [--streams 64] [--seconds 4] [--json FILE]

The gateway is the real one (``cmcp start``, dev mode, enforcing, audit on disk) in front of
the benchmark upstream (tests/bench/peers.py). Measured from /proc:

* **idle** — after start-up and 100 calls (catalog reviewed, caches warm), then 2 s quiet;
* **open streams** — ``--streams`` concurrent ``tools/call`` of ``stream``: each answered
  with an SSE stream of progress notifications for ``--seconds`` (relayed event by event),
  peak RSS sampled every 50 ms;
* **64 clients** — 64 concurrent clients calling ``echo`` for ``--seconds``, peak RSS;
* **after** — 2 s after the load stopped (what stays).

Where it goes: the same gateway run with ``tracemalloc`` (tests/bench/traced_gateway.py) —
Python allocations by package at idle and at the peak of the streams — and the RSS each
import adds (``cmcp_sidecar.cli`` and what ``cmcp start`` loads). Targets (issue 6): under
80 MiB idle and under 150 MiB with 64 concurrent streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.graceful import sigterm_as_interrupt

from .bench_gateway import measure
from .common import CACHE, REPO, rss_mib
from .peers import GatewaySpec, Peer, call_body, call_headers, start_gateway, start_role

IDLE_TARGET_MIB = 80
STREAMS_TARGET_MIB = 150


async def open_streams(url: str, count: int, seconds: float) -> int:
    """``count`` concurrent streaming calls; the number of progress events received."""
    events = 0
    timeout = aiohttp.ClientTimeout(total=seconds * 4 + 30)
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int) -> None:
            nonlocal events
            body = call_body(i, "stream", seconds=seconds)
            async with http.post(url, data=body, headers=call_headers("stream")) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"stream {i}: HTTP {resp.status}")
                async for line in resp.content:
                    if line.startswith(b"data:") and b"notifications/progress" in line:
                        events += 1

        await asyncio.gather(*(one(i) for i in range(count)))
    return events


async def load_clients(url: str, clients: int, seconds: float) -> int:
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got, _ = await measure(url, clients * 10, clients)
        calls += len(got)
    return calls


async def peak_during(pid: int, work: Any) -> tuple[float, Any]:
    """Run ``work`` while sampling the RSS of ``pid``; (peak MiB, work's result)."""
    peak = rss_mib(pid)
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(0.05)
    return peak, task.result()


async def measure_gateway(gw: Peer, args: argparse.Namespace) -> dict[str, Any]:
    await measure(gw.url, 100, 1)
    await asyncio.sleep(2)
    idle = rss_mib(gw.pid)
    streams_peak, events = await peak_during(
        gw.pid, open_streams(gw.url, args.streams, args.seconds)
    )
    clients_peak, calls = await peak_during(gw.pid, load_clients(gw.url, 64, args.seconds))
    await asyncio.sleep(2)
    return {
        "idle_mib": round(idle, 1),
        "streams": args.streams,
        "stream_events": events,
        "streams_peak_mib": round(streams_peak, 1),
        "clients": 64,
        "client_calls": calls,
        "clients_peak_mib": round(clients_peak, 1),
        "after_mib": round(rss_mib(gw.pid), 1),
    }


def traced(upstream: Peer, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """tracemalloc's view of the same gateway: by package at idle and at the streams' peak."""
    spec = GatewaySpec("traced")
    env = {"CMCP_BENCH_TRACEMALLOC": str(work / "tracemalloc")}
    gw = start_gateway(
        spec, upstream.url, work / "traced", extra_env=env, wrapper="tests.bench.traced_gateway"
    )
    try:
        asyncio.run(measure(gw.url, 100, 1))
        os.kill(gw.pid, signal.SIGUSR1)  # snapshot: idle
        time.sleep(1)

        async def streams_then_snapshot() -> None:
            task = asyncio.ensure_future(open_streams(gw.url, args.streams, args.seconds))
            await asyncio.sleep(args.seconds / 2)
            os.kill(gw.pid, signal.SIGUSR1)  # snapshot: streams open
            await task

        asyncio.run(streams_then_snapshot())
        time.sleep(1)
    finally:
        gw.stop()
    snapshots = sorted((work / "tracemalloc").glob("snapshot-*.json"))
    return {p.stem: json.loads(p.read_text()) for p in snapshots}


def import_costs() -> list[dict[str, Any]]:
    """RSS after each import step of ``cmcp start``, in a fresh interpreter."""
    steps = [
        "cmcp_verifier",
        "cmcp_sidecar.cli",
        "cmcp_sidecar.config",
        "aiohttp",
        "cmcp_sidecar.gateway",
        "cedarpy",
        "cmcp_sidecar.enforce",
        "uvloop",
    ]
    code = (
        "import importlib, json, sys\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "out = [{'module': 'python', 'rss_mib': round(rss(), 1), 'modules': len(sys.modules)}]\n"
        f"for name in {steps!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    out.append({'module': name, 'rss_mib': round(rss(), 1), "
        "'modules': len(sys.modules)})\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return list(json.loads(result.stdout))


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = args.work or CACHE / "bench-work"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="memory-", dir=root))
    upstream = start_role("upstream")
    try:
        gw = start_gateway(GatewaySpec("gateway enforcing, fsync batch"), upstream.url, work / "gw")
        try:
            result = asyncio.run(measure_gateway(gw, args))
        finally:
            gw.stop()
        result["targets"] = {
            "idle_ok": result["idle_mib"] < IDLE_TARGET_MIB,
            "streams_ok": result["streams_peak_mib"] < STREAMS_TARGET_MIB,
        }
        result["imports"] = import_costs()
        if not args.no_trace:
            result["tracemalloc"] = traced(upstream, work, args)
        return result
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "tracemalloc"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sigterm_as_interrupt()
    main()
