"""Gateway overhead: one tools/call, every path, in one run, at several concurrencies.

    python -m tests.bench.bench_gateway [--calls 3000] [--rounds 3] [--concurrency 1,8,32,64]
                                        [--no-seed | --seed-calls 600] [--profile-seconds 8]
                                        [--timeline 2000] [--json FILE]

The same ``tools/call`` of ``echo`` (2026-07-28 stateless POST, JSON reply) goes

* **direct** to the upstream (tests/bench/peers.py: a minimal aiohttp MCP server);
* through the **bare hop** — a minimal aiohttp pass-through, the floor of any proxy (also on
  uvloop, and on uvloop with the gateway's own upstream client in place of aiohttp's; and that
  lightest hop appending a line per reply by group commit, durable on the disk under test
  before the reply: the floor of any proxy that keeps "durable before the reply");
* through **our proxy with the pass-through seam** (no policy, audit, claims): its own share;
* through **our gateway** started as ``cmcp start`` in dev mode, in each enforcement mode
  (enforcing, advisory, silent) and audit durability (``fsync: batch`` and ``every``), with
  the audit log on the disk under test (``--work``); plus two diagnostic rows: a bundle whose
  policy reads the arguments (no decision can be shared: Cedar runs on every call) and the
  audit log on tmpfs (no sync: the CPU cost alone);
* through **cmcp-runtime 0.7.1** (tests/bench/seed.py) in dev mode, same upstream;

at each concurrency, in interleaved rounds (load from elsewhere hits every path alike). Each
peer is its own process; the client is this one. Per path and concurrency: calls/s, p50, p90,
p99 latency, and the proxy process's CPU per call (user + system, from /proc — the measure
least disturbed by a busy machine). The raw fdatasync latency of the disk under test is
measured between the blocks (the floor of "durable before the reply"). With
``--profile-seconds``, py-spy samples the enforcing gateway under load (8 clients) and the
result is summarised; with ``--timeline N``, N sequential calls through a gateway with
timestamps at each stage (tests/bench/timeline_gateway.py) give the median time per stage.
Results: JSON (``--json``); docs/benchmarks.md is written by
``python -m tests.bench.run_all``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.graceful import sigterm_as_interrupt

from . import seed
from .bench_audit import bench_raw_sync
from .common import CACHE, cpu_seconds, machine, percentile, quantiles
from .peers import GatewaySpec, Peer, call_body, call_headers, start_gateway, start_role
from .profile import py_spy, summarize

CONCURRENCY = (1, 8, 32, 64)
SPECS = (
    GatewaySpec("gateway enforcing, fsync batch"),
    GatewaySpec("gateway enforcing, fsync every", fsync="every"),
    GatewaySpec("gateway advisory, fsync batch", mode="advisory"),
    GatewaySpec("gateway silent, fsync batch", mode="silent"),
    GatewaySpec("gateway enforcing, policy reads arguments", bundle="args"),
    GatewaySpec("gateway enforcing, audit on tmpfs", audit_dir="/dev/shm"),
)
MAIN = SPECS[0].name  # the configuration the targets are about
UVLOOP_HOP = "bare hop, uvloop"
OURS_HOP = "bare hop, uvloop, our upstream client"
DURABLE_HOP = "bare hop, uvloop, our client, durable append (floor)"


async def measure(
    url: str, calls: int, concurrency: int, tool: str = "echo"
) -> tuple[list[float], float]:
    """(latencies in s, elapsed s) of ``calls`` calls from ``concurrency`` clients, each on its
    own keep-alive connection, after one warm-up call per client."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    headers = call_headers(tool)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, record: bool = True) -> None:
            start = time.perf_counter()
            async with http.post(url, data=call_body(i, tool), headers=headers) as resp:
                body = await resp.read()
            if record:
                latencies.append(time.perf_counter() - start)
            if resp.status != 200 or b'"hello' not in body:
                raise RuntimeError(f"{url}: bad reply {resp.status}: {body[:300]!r}")

        await asyncio.gather(*(one(i, record=False) for i in range(concurrency)))
        queue = iter(range(calls))

        async def worker() -> None:
            for i in queue:
                await one(i)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, elapsed


@contextlib.contextmanager
def peers(work: Path, specs: tuple[GatewaySpec, ...], with_seed: bool) -> Iterator[list[Peer]]:
    """Start the upstream, then every path in front of it; stop them all at the end."""
    started: list[Peer] = []
    try:
        upstream = start_role("upstream", name="direct")
        started.append(upstream)
        started.append(start_role("hop", "--target", upstream.url, name="bare hop"))
        started.append(
            start_role("hop", "--target", upstream.url, "--loop", "uvloop", name=UVLOOP_HOP)
        )
        started.append(
            start_role(
                "hop",
                "--target",
                upstream.url,
                "--loop",
                "uvloop",
                "--client",
                "ours",
                name=OURS_HOP,
            )
        )
        (work / "floor").mkdir()
        durable = ("--loop", "uvloop", "--durable", str(work / "floor" / "entries.log"))
        started.append(start_role("hop", "--target", upstream.url, *durable, name=DURABLE_HOP))
        started.append(
            start_role("passthrough", "--target", upstream.url, name="proxy, pass-through seam")
        )
        for i, spec in enumerate(specs):
            started.append(start_gateway(spec, upstream.url, work / f"gw{i}"))
        if with_seed:
            started.append(seed.start(upstream.url, work / "seed"))
        yield started
    finally:
        for peer in reversed(started):
            peer.stop()


def hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sweep(
    paths: list[Peer], work: Path, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, dict[int, list[float]]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    cdf: dict[str, dict[int, list[float]]] = {p.name: {} for p in paths}
    floors: list[dict[str, Any]] = []
    for peer in paths:  # warm-up: connections, lazy imports, the catalog review, memo
        await measure(peer.url, args.warmup, 1)
    for concurrency in args.concurrency:
        floor = bench_raw_sync(work / "sync-floor", args.sync_samples)
        floors.append({"concurrency": concurrency, **floor})
        lat: dict[str, list[float]] = {p.name: [] for p in paths}
        busy = dict.fromkeys(lat, 0.0)
        cpu = dict.fromkeys(lat, 0.0)
        for _ in range(args.rounds):
            for peer in paths:
                calls = args.seed_calls if peer.name == seed.NAME else args.calls
                own = peer.name != "direct"
                # Other paths' audit logs still being written back would land in this block.
                await asyncio.to_thread(os.sync)
                before = cpu_seconds(peer.pid) if own else 0.0
                got, elapsed = await measure(
                    peer.url, max(concurrency, calls // args.rounds), concurrency
                )
                cpu[peer.name] += cpu_seconds(peer.pid) - before if own else 0.0
                lat[peer.name] += got
                busy[peer.name] += elapsed
        for peer in paths:
            ordered = sorted(lat[peer.name])
            n = len(ordered)
            row = {
                "path": peer.name,
                "concurrency": concurrency,
                "calls": n,
                "per_s": round(n / busy[peer.name], 1),
                "p50_ms": round(percentile(ordered, 50) * 1000, 3),
                "p90_ms": round(percentile(ordered, 90) * 1000, 3),
                "p99_ms": round(percentile(ordered, 99) * 1000, 3),
                "cpu_us": round(cpu[peer.name] / n * 1e6, 1) if peer.name != "direct" else None,
            }
            rows.append(row)
            cdf[peer.name][concurrency] = [round(x * 1000, 4) for x in quantiles(ordered)]
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows, cdf, floors


async def profile(peer: Peer, seconds: float) -> dict[str, Any] | None:
    """py-spy (GIL holder only: where the CPU goes) on ``peer`` while 8 clients call it."""
    out = peer.workdir / "profile.txt" if peer.workdir else Path(tempfile.mktemp())
    spy = py_spy(peer.pid, out, seconds)
    if spy is None:
        return None
    calls = 0
    began = time.monotonic()
    while spy.poll() is None and time.monotonic() - began < seconds + 30:
        got, _ = await measure(peer.url, 400, 8)
        calls += len(got)
    spy.wait(60)
    if not out.exists():
        return None
    return {"calls": calls, "seconds": seconds, **summarize(out.read_text())}


async def timeline(upstream_url: str, work: Path, calls: int) -> dict[str, Any]:
    """Stage-by-stage median times of one enforcing call (tests/bench/timeline_gateway.py),
    ``calls`` sequential calls, with the client's own p50 for the same calls."""
    out = work / "timeline.json"
    spec = SPECS[0]
    gw = start_gateway(
        spec,
        upstream_url,
        work / "timeline",
        extra_env={"CMCP_BENCH_TIMELINE": str(out)},
        wrapper="tests.bench.timeline_gateway",
    )
    try:
        await measure(gw.url, min(100, calls), 1)
        os.kill(gw.pid, signal.SIGUSR1)  # discard the warm-up
        await asyncio.sleep(0.5)
        latencies, _ = await measure(gw.url, calls, 1)
        os.kill(gw.pid, signal.SIGUSR1)
        await asyncio.sleep(0.5)
        result: dict[str, Any] = json.loads(out.read_text())
    finally:
        gw.stop()
    result["client_p50_us"] = round(percentile(sorted(latencies), 50) * 1e6, 1)
    return result


def verdicts(rows: list[dict[str, Any]], floors: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets of issues 9 and 6, computed from one run's rows."""
    by = {(r["path"], r["concurrency"]): r for r in rows}
    out: dict[str, Any] = {}

    def get(path: str, c: int, key: str) -> float | None:
        row = by.get((path, c))
        return None if row is None else row[key]

    hop1, gw1 = get("bare hop", 1, "p50_ms"), get(MAIN, 1, "p50_ms")
    floor1 = next((f["p50_ms"] for f in floors if f["concurrency"] == 1), None)
    if hop1 is not None and gw1 is not None:
        out["added_p50_over_hop_ms"] = round(gw1 - hop1, 3)
        out["added_p50_over_hop_ok"] = gw1 - hop1 <= 0.4
        tmp1 = get(SPECS[-1].name, 1, "p50_ms")
        if tmp1 is not None:
            out["added_p50_over_hop_tmpfs_ms"] = round(tmp1 - hop1, 3)
        if floor1 is not None:
            out["sync_floor_p50_ms"] = floor1
    uv1 = get(UVLOOP_HOP, 1, "p50_ms")
    if uv1 is not None and gw1 is not None:
        out["added_p50_over_uvloop_hop_ms"] = round(gw1 - uv1, 3)
    hop8, gw8 = get("bare hop", 8, "per_s"), get(MAIN, 8, "per_s")
    if hop8 and gw8:
        out["throughput_c8_vs_hop"] = round(gw8 / hop8, 3)
        out["throughput_c8_vs_hop_ok"] = gw8 / hop8 >= 0.75
        tmp8 = get(SPECS[-1].name, 8, "per_s")
        if tmp8:
            out["throughput_c8_vs_hop_tmpfs"] = round(tmp8 / hop8, 3)
        floor8 = get(DURABLE_HOP, 8, "per_s")
        if floor8:
            out["throughput_c8_durable_floor_vs_hop"] = round(floor8 / hop8, 3)
            out["throughput_c8_vs_durable_floor"] = round(gw8 / floor8, 3)
        uv8 = get(UVLOOP_HOP, 8, "per_s")
        if uv8:
            out["throughput_c8_vs_uvloop_hop"] = round(gw8 / uv8, 3)
    seed_name = seed.NAME
    d1, s1, s8 = get("direct", 1, "p50_ms"), get(seed_name, 1, "p50_ms"), get(seed_name, 8, "per_s")
    if d1 is not None and s1 is not None and gw1 is not None:
        ours, theirs = gw1 - d1, s1 - d1
        out["added_p50_over_direct_ms"] = {"ours": round(ours, 3), "cmcp-runtime": round(theirs, 3)}
        out["added_p50_vs_seed"] = round(ours / theirs, 3) if theirs > 0 else None
        out["added_p50_vs_seed_ok"] = theirs > 0 and ours <= theirs / 3
    if s8 and gw8:
        out["throughput_c8_vs_seed"] = round(gw8 / s8, 2)
        out["throughput_c8_vs_seed_ok"] = gw8 / s8 >= 5
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = args.work or CACHE / "bench-work"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gateway-", dir=root))
    specs = tuple(s for s in SPECS if not args.only or s.name in args.only)
    try:
        info = machine(work)
        with peers(work, specs, not args.no_seed) as started:
            rows, cdf, floors = await sweep(started, work, args)
            memory = {p.name: round(hwm_mib(p.pid), 1) for p in started if p.name != "direct"}
            main = next((p for p in started if p.name == MAIN), None)
            prof = None
            if main is not None and args.profile_seconds:
                prof = await profile(main, args.profile_seconds)
            stages = None
            if args.timeline:
                stages = await timeline(started[0].url, work, args.timeline)
        return {
            "machine": info,
            "settings": {
                "calls": args.calls,
                "seed_calls": args.seed_calls,
                "rounds": args.rounds,
                "concurrency": list(args.concurrency),
                "sync_samples": args.sync_samples,
            },
            "paths": [p.name for p in started],
            "rows": rows,
            "cdf": cdf,
            "sync_floor": floors,
            "peak_rss_mib": memory,
            "verdicts": verdicts(rows, floors),
            "profile": prof,
            "timeline": stages,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(result: dict[str, Any]) -> str:
    lines = [
        "| path | clients | calls/s | p50 ms | p90 ms | p99 ms | proxy CPU µs/call |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cpu = "–" if r["cpu_us"] is None else f"{r['cpu_us']:.0f}"
        lines.append(
            f"| {r['path']} | {r['concurrency']} | {r['per_s']:.0f} | {r['p50_ms']:.3f} | "
            f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {cpu} |"
        )
    return "\n".join(lines)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a count (at least 1)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=_count, default=3000, help="calls per path and concurrency")
    parser.add_argument(
        "--seed-calls", type=_count, default=600, help="calls for cmcp-runtime (about 50/s)"
    )
    parser.add_argument("--rounds", type=_count, default=3)
    parser.add_argument(
        "--concurrency",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=CONCURRENCY,
    )
    parser.add_argument("--only", action="append", help="gateway configurations to include")
    parser.add_argument("--no-seed", action="store_true", help="leave cmcp-runtime out")
    parser.add_argument("--profile-seconds", type=float, default=0)
    parser.add_argument(
        "--sync-samples", type=_count, default=200, help="write+fdatasync rounds of the disk floor"
    )
    parser.add_argument(
        "--timeline", type=int, default=0, help="calls of the stage-by-stage timing (0: none)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="calls per path before measuring")
    parser.add_argument("--work", type=Path, help="where gateways keep their audit logs")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print(table(result))
    print(json.dumps(result["verdicts"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sigterm_as_interrupt()
    main()
