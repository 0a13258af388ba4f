"""Every upstream fault against a real gateway, in one place, repeated to show bounded memory.

A real ``cmcp start`` (development mode, enforcing, the demo bundle) fronts two misbehaving
upstreams (tests/servers/faulty_server.py, each its own process): ``faulty`` over HTTP and
``tls`` over HTTPS with a certificate from a CA the gateway trusts (``tls.ca_file``). One
round calls every misbehaving tool at once, each call with a unique marker argument, and
checks for each: the agent's specific JSON-RPC error (``error.data.cmcp_code``), a ``call``
audit entry carrying that code, and ``/healthz`` still answering. After the rounds: the
gateway's RSS and open file descriptors against the values after the first round, then the
TLS faults: the ``tls`` upstream restarted with a certificate from a CA nobody trusts
(``upstream.tls``), then stopped (``upstream.unreachable``, connection refused).

Usage: ``python -m tests.reliability.upstream_faults --rounds 200`` (results in
docs/reliability.md); tests/reliability/test_upstream_faults.py runs a few rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cmcp_e2e.pki import ClusterPKI
from cmcp_sidecar.audit import json_digest
from cmcp_sidecar.config import UpstreamConfig
from cmcp_sidecar.mcp.client import ControlClient
from cmcp_sidecar.mcp.upstream import Upstream
from cmcp_sidecar.policy.catalog_guard import pin_catalog
from tests.graceful import sigterm_as_interrupt
from tests.mcp.peers import free_port, modern_headers, modern_request, peer, sdk_server

from .harness import (
    GatewayProcess,
    GatewaySetup,
    audit_records,
    get_json,
    upstream_requests,
    write_setup,
)

# tool → (JSON-RPC error code, cmcp_code); None: answered normally.
EXPECTED: dict[str, tuple[int, str] | None] = {
    "invalid_json": (-32012, "upstream.invalid"),
    "wrong_type": (-32012, "upstream.invalid"),
    "dup_keys": (-32012, "upstream.invalid"),
    "wrong_id": (-32012, "upstream.invalid"),
    "accepted": (-32012, "upstream.invalid"),
    "status_500": (-32012, "upstream.status"),
    "reset": (-32012, "upstream.reset"),
    "huge": (-32013, "upstream.too_large"),
    "huge_event": (-32013, "upstream.too_large"),
    "slow_loris": (-32011, "upstream.timeout"),
    "sse_trickle": (-32011, "upstream.timeout"),
    "redirect": (-32012, "upstream.redirect"),
    "sse_no_end": None,  # the reply arrives; the gateway closes the never-ending stream
    "sse_forever": None,  # no reply ever: the agent gives up; audited as client.disconnected
    "ok": None,
}
# Replies that never end on their own: the gateway must close each (the server counts them).
STREAMS_CLOSED_BY_GATEWAY = ("slow_loris", "sse_trickle", "sse_no_end", "sse_forever")
AGENT_PATIENCE = 1.5  # seconds an agent waits for sse_forever before cancelling
BODY_SECONDS = 0.5  # timeouts.body_seconds of the faulty upstream
SETTLE_SECONDS = 2.0  # how long a sample waits for closing connections to go


@dataclass
class Outcome:
    tool: str
    marker: str
    reply: Any  # the JSON-RPC message, or None when the agent gave up


@dataclass
class Sample:
    round: int
    rss_kib: int
    fds: int


@dataclass
class Bench:
    setup: GatewaySetup
    gateway: GatewayProcess
    tls_upstream: contextlib.ExitStack  # closing it stops the tls upstream
    tls_port: int
    recorder: str
    faulty_url: str
    pki_dir: Path
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def sample(self, number: int) -> Sample:
        """RSS and open descriptors after a round; descriptors as the fewest seen over
        ``SETTLE_SECONDS``, since connections of the round's faults may still be closing
        (on a loaded machine they were, by one or two, when sampled at once)."""
        status = Path(f"/proc/{self.gateway.pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
        fds = len(list(Path(f"/proc/{self.gateway.pid}/fd").iterdir()))
        settled = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settled:
            time.sleep(0.1)
            fds = min(fds, len(list(Path(f"/proc/{self.gateway.pid}/fd").iterdir())))
        taken = Sample(number, rss, fds)
        self.samples.append(taken)
        return taken

    def run_round(self, number: int) -> list[Outcome]:
        outcomes = asyncio.run(_call_all(self.setup.url, number))
        deadline = time.monotonic() + 10  # an agent that gave up is recorded asynchronously
        while True:
            entries = {e.get("arguments"): e for e in audit_records(self.setup.audit_log)}
            problems = [p for out in outcomes for p in check(out, entries)]
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.problems.extend(f"round {number}: {p}" for p in problems)
        if get_json(f"{self.setup.base}/healthz")[0] != 200:
            self.problems.append(f"round {number}: /healthz failed")
        if upstream_requests(self.recorder):
            self.problems.append(f"round {number}: a redirect was followed")
        return outcomes

    def tls_faults(self) -> None:
        """Swap the tls upstream's certificate for an untrusted one, then stop it."""
        rogue = ClusterPKI(self.pki_dir / "rogue").issue("server", "127.0.0.1", ips=("127.0.0.1",))
        self.tls_upstream.close()
        with _faulty(self.tls_port, tls=(rogue.cert, rogue.key)):
            self._expect_tls_fault("tls-untrusted", "upstream.tls")
        self._expect_tls_fault("tls-refused", "upstream.unreachable")

    def _expect_tls_fault(self, marker: str, code: str) -> None:
        out = asyncio.run(_call(self.setup.url, "tls.ok", marker, 1))
        entries = {e.get("arguments"): e for e in audit_records(self.setup.audit_log)}
        error = (out.reply or {}).get("error") or {}
        if (error.get("code"), error.get("data", {}).get("cmcp_code")) != (-32011, code):
            self.problems.append(f"{marker}: expected -32011 {code}, got {out.reply}")
        entry = entries.get(json_digest({"marker": marker}))
        if entry is None or entry.get("error") != code:
            self.problems.append(f"{marker}: audit entry {entry}")


def check(out: Outcome, entries: dict[Any, dict[str, Any]]) -> list[str]:
    """What is wrong with one outcome (empty: as expected)."""
    entry = entries.get(json_digest({"marker": out.marker}))
    want = EXPECTED[out.tool]
    problems = []
    if out.tool == "sse_forever":
        if out.reply is not None:
            problems.append(f"{out.tool}: a reply came: {out.reply}")
        if entry is None or entry.get("error") != "client.disconnected":
            problems.append(f"{out.tool}: audit entry {entry}")
        return problems
    reply = out.reply or {}
    if want is None:
        if "result" not in reply:
            problems.append(f"{out.tool}: expected a result, got {reply}")
        if entry is None or entry.get("error") is not None or not entry.get("result"):
            problems.append(f"{out.tool}: audit entry {entry}")
        return problems
    error = reply.get("error") or {}
    got = (error.get("code"), (error.get("data") or {}).get("cmcp_code"))
    if got != want:
        problems.append(f"{out.tool}: expected {want}, got {reply}")
    if "smuggled" in json.dumps(reply):
        problems.append(f"{out.tool}: smuggled content reached the agent")
    if entry is None or entry.get("error") != want[1] or entry.get("forwarded") is not True:
        problems.append(f"{out.tool}: audit entry {entry}")
    return problems


async def _call_all(url: str, number: int) -> list[Outcome]:
    return await asyncio.gather(
        *(_call(url, tool, f"r{number}-{tool}", i) for i, tool in enumerate(EXPECTED))
    )


async def _call(url: str, tool: str, marker: str, request_id: int) -> Outcome:
    body = modern_request(request_id, "tools/call", {"name": tool, "arguments": {"marker": marker}})
    timeout = aiohttp.ClientTimeout(total=AGENT_PATIENCE if tool == "sse_forever" else 30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, data=json.dumps(body), headers=modern_headers("tools/call", tool)) as r,
        ):
            text = await r.text()
            if not r.headers.get("Content-Type", "").startswith("text/event-stream"):
                return Outcome(tool, marker, json.loads(text))
            for line in text.splitlines():
                if line.startswith("data: ") and json.loads(line[6:]).get("id") == request_id:
                    return Outcome(tool, marker, json.loads(line[6:]))
            return Outcome(tool, marker, {"stream": text})
    except TimeoutError:
        await asyncio.sleep(0.3)  # the gateway records the disconnect
        return Outcome(tool, marker, None)


@contextlib.contextmanager
def _faulty(port: int, tls: tuple[Path, Path] | None = None, redirect: str = "") -> Iterator[str]:
    cmd = [sys.executable, "-m", "tests.servers.faulty_server", "--port", str(port)]
    if tls:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    if redirect:
        cmd += ["--redirect-to", redirect]
    with peer(cmd, port) as url:
        yield url.replace("http://", "https://") if tls else url


async def _pin(upstreams: dict[str, tuple[str, str | None]]) -> Any:
    tools = {}
    for name, (url, ca) in upstreams.items():
        up = Upstream(0, UpstreamConfig(name=name, url=url), {}, max_response_bytes=1 << 24)
        up._ca_file = ca
        await up.start()
        try:
            async with ControlClient(up) as client:
                tools[name] = await client.list_all("tools/list", "tools")
        finally:
            await up.close()
    return pin_catalog(tools)


@contextlib.contextmanager
def bench(root: Path) -> Iterator[Bench]:
    """The gateway in front of both faulty upstreams (and the redirect target), started."""
    pki = ClusterPKI(root / "pki")
    trusted = pki.issue("server", "127.0.0.1", ips=("127.0.0.1",))
    tls_port = free_port()
    with (
        sdk_server("--record") as recorder,
        _faulty(free_port(), redirect=recorder) as faulty,
        contextlib.ExitStack() as tls,
    ):
        tls_url = tls.enter_context(_faulty(tls_port, tls=(trusted.cert, trusted.key)))
        ca = str(pki.ca.cert)
        catalog = asyncio.run(_pin({"faulty": (faulty, None), "tls": (tls_url, ca)}))
        setup = write_setup(
            root / "gateway",
            faulty,
            catalog=catalog,
            max_response_size_bytes=1 << 20,
            upstreams=[
                {"name": "faulty", "url": faulty, "timeouts": {"body_seconds": BODY_SECONDS}},
                {"name": "tls", "url": tls_url, "prefix": "tls", "tls": {"ca_file": ca}},
            ],
        )
        with GatewayProcess(setup) as gateway:
            gateway.wait_ready()
            yield Bench(setup, gateway, tls, tls_port, recorder, faulty, root / "pki")


def run(root: Path, rounds: int) -> dict[str, Any]:
    with bench(root) as b:
        started = time.monotonic()
        b.run_round(0)
        first = b.sample(0)
        for number in range(1, rounds + 1):
            b.run_round(number)
            if number % 10 == 0 or number == rounds:
                b.sample(number)
        last = b.samples[-1]
        time.sleep(0.5)
        gone = get_json(b.faulty_url.replace("/mcp", "/state"))[1]["client_gone"]
        if gone != len(STREAMS_CLOSED_BY_GATEWAY) * (rounds + 1):
            b.problems.append(f"upstream streams the gateway closed: {gone}, not all of them")
        b.tls_faults()
        seconds = round(time.monotonic() - started, 1)
    return {
        "rounds": rounds,
        "faults_per_round": sum(1 for v in EXPECTED.values() if v) + 1,
        "seconds": seconds,
        "rss_kib_after_first_round": first.rss_kib,
        "rss_kib_at_end": last.rss_kib,
        "rss_growth_percent": round(100 * (last.rss_kib - first.rss_kib) / first.rss_kib, 1),
        "fds_after_first_round": first.fds,
        "fds_at_end": last.fds,
        "upstream_streams_closed_by_gateway": gone,
        "samples": [vars(s) for s in b.samples],
        "problems": b.problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmcp-faults-") as tmp:
        result = run(Path(tmp), args.rounds)
    print(json.dumps(result, indent=2))
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
