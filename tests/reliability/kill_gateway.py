"""SIGKILL campaign for the whole gateway: no call the agent saw answered is missing.

Extends the audit-writer campaign (kill_audit.py, one process appending) to the real thing:
``cmcp start`` (development mode) in front of the Python SDK test server, under concurrent MCP
load over raw HTTP in both protocol eras (stateless 2026-07-28 requests and 2025 sessions
whose replies come as SSE). Every call carries a unique argument, so the audit entry of each
call is found by the digest of its arguments. Each round:

1. **restart** ``cmcp start`` on the same files and wait for ``/readyz`` (about one round in
   ten is killed while still starting, possibly during recovery, and checked next round);
2. **check** the chain with ``cmcp-verify audit``, and that every call the agent saw answered
   — a result (echo: allow; lookup_customer: redact) or a policy denial (get_env: -32010) —
   is in it with the decision the agent saw, ``forwarded`` matching, a result digest for
   forwarded calls; when the previous round cut the tail, that a ``recovery`` entry records it;
3. **load and kill**: 8 workers call as fast as they can; after a random 50–1000 ms the
   gateway gets SIGKILL; answers received until then are recorded.

As in kill_audit.py, about a third of the rounds also simulate a partially persisted,
unacknowledged final record after the kill (cut at a random byte), because a SIGKILL
rarely lands inside ``write``; such rounds are counted separately.

Usage: ``python -m tests.reliability.kill_gateway --kills 50 [--fsync every batch]
[--seed N] [--per-chain 25]``; ``make test`` runs a few rounds
(tests/reliability/test_kill_gateway.py); results in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cmcp_sidecar.audit.entries import json_digest
from cmcp_verifier import audit
from tests.graceful import sigterm_as_interrupt
from tests.mcp.peers import (
    legacy_headers,
    legacy_session,
    modern_headers,
    modern_request,
    sdk_server,
)

from .harness import GatewayProcess, GatewaySetup, audit_records, pin_catalog, write_setup
from .kill_audit import _cmcp_verify, _recoveries

WORKERS = 8
# (tool, argument name, what the agent sees when it is answered, weight)
CALLS = (
    ("echo", "text", "allow", 6),
    ("get_env", "name", "deny", 2),
    ("lookup_customer", "customer_id", "redact", 2),
)


@dataclass(frozen=True)
class Answer:
    """A call the agent saw answered: its argument digest, tool and decision."""

    digest: str
    tool: str
    decision: str
    era: str  # "stateless" (2026-07-28) or "session" (2025)


@dataclass
class RoundResult:
    round: int
    fsync: str
    early_kill: bool
    answered: int  # answers received in this round
    chain_length: int
    verified: bool
    cut_simulated: bool = False
    recovery_recorded: bool = True
    missing: list[str] = field(default_factory=list)  # "tool:digest" of lost answered calls
    wrong: list[str] = field(default_factory=list)  # entries that disagree with the answer

    @property
    def ok(self) -> bool:
        return self.verified and not self.missing and not self.wrong and self.recovery_recorded


@dataclass
class GatewayCampaign:
    """Rounds against one gateway setup (one audit chain)."""

    setup: GatewaySetup
    fsync: str
    rng: random.Random
    cut_probability: float = 0.3
    answers: dict[str, Answer] = field(default_factory=dict)
    rounds: list[RoundResult] = field(default_factory=list)
    _cut_pending: bool = False
    _recoveries_before: int = 0

    def run_round(self) -> RoundResult:
        number = len(self.rounds) + 1
        gateway = GatewayProcess(self.setup).start()
        early = self.rng.random() < 0.1
        if early:
            time.sleep(self.rng.uniform(0.0, 0.8))
            gateway.kill()  # the log may end torn: the next restart recovers and checks it
            result = RoundResult(number, self.fsync, True, 0, 0, True)
        else:
            try:
                gateway.wait_ready()
                result = self._check(number)
                got = asyncio.run(self._load_and_kill(gateway, number))
            finally:
                gateway.kill()
            result.answered = len(got)
            for answer in got:
                self.answers[answer.digest] = answer
        self._recoveries_before = _recoveries(self.setup.audit_log)
        self._cut_pending = self.rng.random() < self.cut_probability and _cut_unanswered_tail(
            self.setup.audit_log, self.answers, self.rng
        )
        result.cut_simulated = self._cut_pending
        self.rounds.append(result)
        return result

    def finish(self) -> RoundResult:
        """Restart once more, check, and stop gracefully (the chain ends with ``stop``)."""
        with GatewayProcess(self.setup) as gateway:
            gateway.wait_ready()
            result = self._check(len(self.rounds) + 1)
        result.verified = result.verified and _cmcp_verify(self.setup.audit_log)
        self.rounds.append(result)
        return result

    def _check(self, number: int) -> RoundResult:
        """After a restart: the chain verifies and holds every answered call."""
        log = self.setup.audit_log
        verified = _cmcp_verify(log)
        calls: dict[str, dict[str, Any]] = {}
        entries = audit_records(log)
        for entry in entries:
            if entry.get("kind") == "call" and entry.get("arguments"):
                calls[entry["arguments"]] = entry
        missing, wrong = [], []
        for answer in self.answers.values():
            entry = calls.get(answer.digest)
            if entry is None:
                missing.append(f"{answer.tool}:{answer.digest}")
            elif not _agrees(entry, answer):
                wrong.append(
                    f"{answer.tool}:{answer.digest} answered {answer.decision}, audited "
                    f"{entry.get('decision')} forwarded={entry.get('forwarded')}"
                )
        recorded = not self._cut_pending or _recoveries(log) > self._recoveries_before
        self._cut_pending = False
        return RoundResult(
            number,
            self.fsync,
            False,
            0,
            len(entries),
            verified,
            recovery_recorded=recorded,
            missing=missing,
            wrong=wrong,
        )

    async def _load_and_kill(self, gateway: GatewayProcess, number: int) -> list[Answer]:
        answers: list[Answer] = []
        stop = asyncio.Event()
        seed = self.rng.randrange(1 << 30)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            workers = [
                asyncio.create_task(
                    _worker(http, self.setup.url, k, f"{number}-{seed}", answers, stop)
                )
                for k in range(WORKERS)
            ]
            await asyncio.sleep(self.rng.uniform(0.05, 1.0))
            os.kill(gateway.pid, signal.SIGKILL)
            stop.set()
            await asyncio.gather(*workers)
        return answers


def _agrees(entry: dict[str, Any], answer: Answer) -> bool:
    forwarded = answer.decision != "deny"
    return (
        entry.get("tool") == answer.tool
        and entry.get("decision") == answer.decision
        and entry.get("forwarded") is forwarded
        and (entry.get("result") is not None) is forwarded
        and entry.get("error") == (None if forwarded else "policy.denied")
    )


async def _worker(
    http: aiohttp.ClientSession,
    url: str,
    k: int,
    tag: str,
    answers: list[Answer],
    stop: asyncio.Event,
) -> None:
    """Call tools until the gateway dies; record every answered call."""
    rng = random.Random(f"{tag}-{k}")
    legacy = k % 2 == 1
    n = 0
    try:
        sid = await legacy_session(http, url) if legacy else None
        while not stop.is_set():
            n += 1
            tool, arg, decision, _ = rng.choices(CALLS, weights=[c[3] for c in CALLS])[0]
            arguments = {arg: f"kill-{tag}-{k}-{n}"}
            params = {"name": tool, "arguments": arguments}
            if sid is None:
                body = modern_request(n, "tools/call", params)
                headers = modern_headers("tools/call", tool)
            else:
                body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
                headers = legacy_headers(sid)
            reply = await _post(http, url, body, headers, n)
            if reply is not None and _answered(reply, decision):
                era = "stateless" if sid is None else "session"
                answers.append(Answer(json_digest(arguments), tool, decision, era))
    except (TimeoutError, aiohttp.ClientError, ConnectionError, ValueError):
        return  # the gateway was killed under this worker


def _answered(reply: dict[str, Any], decision: str) -> bool:
    if decision == "deny":
        return reply.get("error", {}).get("code") == -32010
    result = reply.get("result")
    return isinstance(result, dict) and not result.get("isError")


async def _post(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    request_id: int,
) -> dict[str, Any] | None:
    """The JSON-RPC response to ``request_id`` (JSON or SSE reply), None if there is none."""
    async with http.post(url, data=json.dumps(body), headers=headers) as resp:
        text = await resp.text()
        if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            reply = json.loads(text)
            return reply if isinstance(reply, dict) else None
    for line in text.splitlines():
        if line.startswith("data: ") and line[6:]:  # an empty data line primes resumption
            message = json.loads(line[6:])
            if message.get("id") == request_id and "method" not in message:
                return dict(message)
    return None


def _cut_unanswered_tail(path: Path, answers: dict[str, Answer], rng: random.Random) -> bool:
    """Cut the final line at a random byte when it is an entry no agent saw answered."""
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data.endswith(b"\n") or len(data) < 2:
        return False  # empty, or a real torn write is already there
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    entry = audit.decode_line(data[start:-1]).entry
    if entry.get("kind") not in ("call", "fault") or entry.get("arguments") in answers:
        return False
    with path.open("r+b") as f:
        f.truncate(rng.randrange(start + 1, len(data) - 1))
    return True


def run(
    root: Path, kills: int, modes: list[str], seed: int, per_chain: int
) -> list[GatewayCampaign]:
    """Run ``kills`` rounds per fsync mode (a fresh chain every ``per_chain`` rounds)."""
    out: list[GatewayCampaign] = []
    with sdk_server() as upstream:
        catalog = pin_catalog(upstream, labels={"lookup_customer": ["pii"]})
        for mode in modes:
            rng = random.Random(f"{seed}-{mode}")
            for first in range(0, kills, per_chain):
                setup = write_setup(
                    root / f"{mode}-{first // per_chain}",
                    upstream,
                    catalog=catalog,
                    audit={"fsync": mode},
                )
                campaign = GatewayCampaign(setup, mode, rng)
                out.append(campaign)
                for _ in range(min(per_chain, kills - first)):
                    if not campaign.run_round().ok:
                        return out
                campaign.finish()
    return out


def summary(found: list[GatewayCampaign]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in sorted({c.fsync for c in found}):
        mine = [c for c in found if c.fsync == mode]
        rounds = [r for c in mine for r in c.rounds]
        kills = [r for c in mine for r in c.rounds[: len(c.rounds) - 1]] if mine else []
        out[mode] = {
            "kills": len(kills),
            "chains": len(mine),
            "early_kills": sum(r.early_kill for r in rounds),
            "answered_calls": sum(len(c.answers) for c in mine),
            "answered_denied": sum(
                1 for c in mine for a in c.answers.values() if a.decision == "deny"
            ),
            "answered_in_sessions": sum(
                1 for c in mine for a in c.answers.values() if a.era == "session"
            ),
            "entries_written": sum(c.rounds[-1].chain_length for c in mine if c.rounds),
            "recovery_entries": sum(_recoveries(c.setup.audit_log) for c in mine),
            "of_which_simulated_cuts": sum(r.cut_simulated for r in rounds),
            "all_verified": all(r.verified for r in rounds),
            "answered_missing": sum(len(r.missing) for r in rounds),
            "answered_disagreeing": sum(len(r.wrong) for r in rounds),
            "failed_rounds": [asdict(r) for r in rounds if not r.ok],
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kills per fsync mode (default 50)")
    parser.add_argument(
        "--fsync", nargs="+", default=["every", "batch"], choices=["every", "batch"]
    )
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--per-chain", type=int, default=25, help="rounds per chain (default 25)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmcp-killgw-") as tmp:
        started = time.monotonic()
        found = run(args.dir or Path(tmp), args.kills, args.fsync, args.seed, args.per_chain)
        result = summary(found)
        result["seed"] = args.seed
        result["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(result, indent=2))
    ok = all(not m["failed_rounds"] for m in result.values() if isinstance(m, dict))
    return 0 if ok else 1


if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
