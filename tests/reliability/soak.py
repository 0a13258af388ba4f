"""Soak: a real gateway under steady MCP load with periodic policy reloads; memory and file
descriptors must not grow.

``cmcp start`` (development mode, enforcing, the demo bundle, ``policy_reload_interval_seconds``
short) fronts the SDK test server on loopback. Load: ``--rate`` calls per second spread over
workers in both protocol eras — stateless 2026-07-28 calls, and 2025 sessions that are opened,
used for a while and closed (DELETE: a claim is issued for each) — a mix of allowed, denied and
redacted calls. Every ``--reload-every`` seconds the bundle on disk is switched between two
valid variants, so the gateway re-reads, re-attests and swaps it. Every ``--sample-every``
seconds the gateway's RSS (``/proc/<pid>/status`` VmRSS) and open descriptors
(``/proc/<pid>/fd``) are sampled.

Verdict: after the warm-up (``--warmup``, default a sixth of the run), the median of the last
minute may exceed the median of the first minute after warm-up by at most 10 % for RSS and
for descriptors; every call must have been answered as expected; reloads must have happened.

With ``--heap-profile`` the gateway traces its allocations (``tracemalloc`` from start-up,
through ``heapsnap/sitecustomize.py``), a heap snapshot is taken at the end of the warm-up and
one at the end, and their difference — what Python objects were still growing, by where they
were allocated — goes to ``heap.txt`` and ``soak.json`` (``heap``). Tracing costs CPU and
memory of its own, so RSS in such a run is not comparable with a plain one.

Usage: ``python -m tests.reliability.soak [--minutes 30] [--rate 100] [--heap-profile]
[--out DIR]`` (``make soak``); writes ``soak.json``, ``soak.csv`` and, when matplotlib is
installed, ``soak.png``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.graceful import sigterm_as_interrupt
from tests.mcp.peers import (
    REPO,
    legacy_headers,
    legacy_session,
    modern_headers,
    modern_request,
    sdk_server,
)

from .harness import GatewayProcess, audit_records, write_setup
from .kill_gateway import _post

GROWTH_LIMIT = 0.10
HEAPSNAP = Path(__file__).parent / "heapsnap"
SNAPSHOT_SECONDS = 300.0  # how long a heap snapshot may take to be written
HEAP_TOP = 15  # allocation sites listed in the heap report
CALLS = (
    ("echo", "text", "allow"),
    ("get_env", "name", "deny"),
    ("lookup_customer", "customer_id", "redact"),
)


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_kib: int
    fds: int
    calls: int


@dataclass
class SoakResult:
    seconds: float
    warmup_seconds: float
    calls: int = 0
    unexpected: int = 0
    sessions_closed: int = 0
    reloads_written: int = 0
    reloads_loaded: int = 0
    samples: list[Sample] = field(default_factory=list)
    rss_reference_kib: float = 0
    rss_final_kib: float = 0
    rss_growth: float = 0
    fds_reference: float = 0
    fds_final: float = 0
    fds_growth: float = 0
    problems: list[str] = field(default_factory=list)
    heap: dict[str, Any] | None = None  # --heap-profile: growth between the two snapshots

    @property
    def ok(self) -> bool:
        return not self.problems


class Soak:
    def __init__(
        self,
        url: str,
        seconds: float,
        rate: float,
        reload_every: float,
        heap_dir: Path | None = None,
    ) -> None:
        self.url, self.seconds, self.rate, self.reload_every = url, seconds, rate, reload_every
        self.heap_dir = heap_dir
        self.snapshots: list[Path] = []
        self.result = SoakResult(seconds, seconds / 6)
        self.started = 0.0
        self.stop = asyncio.Event()

    async def run(self, gateway: GatewayProcess, sample_every: float, warmup: float) -> None:
        self.result.warmup_seconds = warmup
        self.started = time.monotonic()
        tasks = [asyncio.create_task(self._stateless(k)) for k in range(3)]
        tasks += [asyncio.create_task(self._sessions(k)) for k in range(2)]
        tasks.append(asyncio.create_task(self._reloads(gateway)))
        try:
            while (elapsed := time.monotonic() - self.started) < self.seconds:
                self.result.samples.append(_sample(gateway.pid, elapsed, self.result.calls))
                if self.heap_dir and not self.snapshots and elapsed >= warmup:
                    await self._snapshot(gateway.pid)
                await asyncio.sleep(min(sample_every, self.seconds - elapsed))
            self.result.samples.append(_sample(gateway.pid, self.seconds, self.result.calls))
            if self.heap_dir:
                await self._snapshot(gateway.pid)
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)

    async def _snapshot(self, pid: int) -> None:
        """Have the gateway write its next heap snapshot; wait until it is there."""
        assert self.heap_dir is not None
        path = self.heap_dir / f"heap-{len(self.snapshots) + 1}.snapshot"
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + SNAPSHOT_SECONDS
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway wrote no heap snapshot {path.name}")
            await asyncio.sleep(0.2)
        self.snapshots.append(path)

    async def _pace(self, share: float) -> None:
        await asyncio.sleep(share / self.rate)

    async def _call(self, http: aiohttp.ClientSession, url: str, sid: str | None, n: int) -> None:
        tool, arg, decision = CALLS[n % len(CALLS)]
        params = {"name": tool, "arguments": {arg: f"soak-{n}-{random.random()}"}}
        if sid is None:
            body, headers = (
                modern_request(n, "tools/call", params),
                modern_headers("tools/call", tool),
            )
        else:
            body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
            headers = legacy_headers(sid)
        reply = await _post(http, url, body, headers, n)
        self.result.calls += 1
        error = (reply or {}).get("error")
        expected = (error or {}).get("code") == -32010 if decision == "deny" else error is None
        if not expected:
            self.result.unexpected += 1
            if len(self.result.problems) < 20:
                self.result.problems.append(f"{tool}: unexpected reply {reply}")

    async def _stateless(self, k: int) -> None:
        url = self.url
        async with aiohttp.ClientSession() as http:
            n = k * 10_000_000
            while not self.stop.is_set():
                n += 1
                await self._call(http, url, None, n)
                await self._pace(5)

    async def _sessions(self, k: int) -> None:
        url = self.url
        async with aiohttp.ClientSession() as http:
            n = (k + 5) * 10_000_000
            while not self.stop.is_set():
                sid = await legacy_session(http, url)
                for _ in range(50):
                    if self.stop.is_set():
                        break
                    n += 1
                    await self._call(http, url, sid, n)
                    await self._pace(5)
                async with http.delete(url, headers=legacy_headers(sid)) as resp:
                    if resp.status == 200:
                        self.result.sessions_closed += 1

    async def _reloads(self, gateway: GatewayProcess) -> None:
        policies = gateway.setup.root / "bundle" / "policies.cedar"
        variants = [policies.read_text(), policies.read_text() + "\n// soak variant\n"]
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.reload_every)
            except TimeoutError:
                self.result.reloads_written += 1
                policies.write_text(variants[self.result.reloads_written % 2])


def _sample(pid: int, t: float, calls: int) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Sample(round(t, 1), rss, len(list(Path(f"/proc/{pid}/fd").iterdir())), calls)


def verdict(result: SoakResult, window: float = 60.0) -> None:
    """Fill in the growth figures and problems (see the module docs)."""
    after = [s for s in result.samples if s.t >= result.warmup_seconds]
    if len(after) < 2:
        result.problems.append("too few samples after the warm-up")
        return
    window = min(window, (after[-1].t - after[0].t) / 3)
    first = [s for s in after if s.t <= after[0].t + window] or after[:1]
    last = [s for s in after if s.t >= after[-1].t - window] or after[-1:]
    result.rss_reference_kib = statistics.median(s.rss_kib for s in first)
    result.rss_final_kib = statistics.median(s.rss_kib for s in last)
    result.fds_reference = statistics.median(s.fds for s in first)
    result.fds_final = statistics.median(s.fds for s in last)
    result.rss_growth = round(result.rss_final_kib / result.rss_reference_kib - 1, 4)
    result.fds_growth = round(result.fds_final / result.fds_reference - 1, 4)
    if result.rss_growth > GROWTH_LIMIT:
        result.problems.append(f"RSS grew {result.rss_growth:.1%} after the warm-up")
    if result.fds_growth > GROWTH_LIMIT:
        result.problems.append(f"open descriptors grew {result.fds_growth:.1%} after the warm-up")
    if result.reloads_written and not result.reloads_loaded:
        result.problems.append("the gateway never reloaded the bundle")


def heap_growth(before: Path, after: Path, top: int = HEAP_TOP) -> dict[str, Any]:
    """What the traced heap gained between two snapshots, by allocation site (tracemalloc's
    own frames and the import machinery left out)."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)
    stats = new.compare_to(old, "traceback")
    return {
        "traced_before_kib": round(sum(t.size for t in old.traces) / 1024, 1),
        "traced_after_kib": round(sum(t.size for t in new.traces) / 1024, 1),
        "top": [
            {
                "size_diff_kib": round(s.size_diff / 1024, 1),
                "count_diff": s.count_diff,
                "traceback": [f"{f.filename}:{f.lineno}" for f in s.traceback],
            }
            for s in stats[:top]
        ],
    }


def heap_report(heap: dict[str, Any]) -> str:
    """heap.txt: the growth by allocation site, most recent frame first."""
    lines = [
        f"traced heap: {heap['traced_before_kib']} KiB after the warm-up, "
        f"{heap['traced_after_kib']} KiB at the end",
        "",
    ]
    for row in heap["top"]:
        lines.append(f"{row['size_diff_kib']:+.1f} KiB, {row['count_diff']:+d} blocks")
        lines += [f"    {frame}" for frame in reversed(row["traceback"])]
    return "\n".join(lines) + "\n"


def soak(
    root: Path,
    seconds: float,
    *,
    rate: float = 100.0,
    reload_every: float = 30.0,
    sample_every: float = 10.0,
    warmup: float | None = None,
    heap_dir: Path | None = None,
) -> SoakResult:
    with sdk_server() as upstream:
        setup = write_setup(
            root,
            upstream,
            policy_reload_interval_seconds=max(1, int(reload_every / 3)),
            claims={"idle_timeout_seconds": 60},
        )
        runner = Soak(setup.url, seconds, rate, reload_every, heap_dir)
        env = None
        if heap_dir is not None:
            heap_dir.mkdir(parents=True, exist_ok=True)
            env = {
                "PYTHONPATH": f"{HEAPSNAP}{os.pathsep}{REPO}",
                "CMCP_HEAP_SNAPSHOTS": str(heap_dir),
            }
        with GatewayProcess(setup, env=env) as gateway:
            gateway.wait_ready()
            asyncio.run(
                runner.run(gateway, sample_every, seconds / 6 if warmup is None else warmup)
            )
        entries = audit_records(setup.audit_log)
    result = runner.result
    result.reloads_loaded = sum(1 for e in entries if e.get("event") == "bundle_loaded")
    if len(runner.snapshots) == 2:
        result.heap = heap_growth(runner.snapshots[0], runner.snapshots[1])
    verdict(result)
    return result


def plot(result: SoakResult, path: Path) -> bool:
    """soak.png: RSS and descriptors over time (False when matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s.t / 60 for s in result.samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    ax1.plot(t, [s.rss_kib / 1024 for s in result.samples])
    ax1.set_ylabel("gateway RSS (MiB)")
    ax2.plot(t, [s.fds for s in result.samples], color="tab:orange")
    ax2.set_ylabel("open descriptors")
    ax2.set_xlabel("minutes")
    for ax in (ax1, ax2):
        ax.axvline(result.warmup_seconds / 60, color="grey", linestyle=":")
        ax.set_ylim(bottom=0)
    fig.suptitle(f"soak: {result.calls} calls, {result.reloads_loaded} policy reloads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second (about)")
    parser.add_argument("--reload-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--out", type=Path, default=Path("."), help="where results go")
    parser.add_argument(
        "--heap-profile", action="store_true", help="trace allocations; heap growth to heap.txt"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmcp-soak-") as tmp:
        result = soak(
            Path(tmp),
            args.minutes * 60,
            rate=args.rate,
            reload_every=args.reload_every,
            sample_every=args.sample_every,
            heap_dir=Path(tmp) / "heap" if args.heap_profile else None,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    if result.heap is not None:
        (args.out / "heap.txt").write_text(heap_report(result.heap))
    (args.out / "soak.csv").write_text(
        "t_seconds,rss_kib,fds,calls\n"
        + "".join(f"{s.t},{s.rss_kib},{s.fds},{s.calls}\n" for s in result.samples)
    )
    summary = {k: v for k, v in asdict(result).items() if k != "samples"}
    summary["ok"] = result.ok
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    plotted = plot(result, args.out / "soak.png")
    print(json.dumps({**summary, "png": plotted}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
