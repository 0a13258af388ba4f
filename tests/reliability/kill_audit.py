"""SIGKILL campaign for the audit log: no acknowledged entry is ever lost.

Each round starts a child (audit_child.py) appending concurrently to one chain, kills it with
SIGKILL at a random moment (about one round in ten before it even finished opening, i.e.
possibly during recovery), then reopens the chain the way the gateway does and checks:

* the chain verifies with ``cmcp-verify audit``;
* every append the child acknowledged — in this round and all earlier ones — is present with
  the same hash;
* a torn final record was set aside and recorded by a ``recovery`` entry, never accepted.

A SIGKILL tears a record only when it lands inside ``write`` — rare, since encoding takes far
longer than copying into the page cache. So in about a third of the rounds the campaign also
*simulates* what a power loss can leave: when the final line on disk was never acknowledged,
it is cut at a random byte (an unsynced tail partially persisted). Such rounds are counted
separately from real torn writes.

Usage: ``python tests/reliability/kill_audit.py --kills 50 [--mode every batch] [--seed N]
[--per-chain 10]`` (a fresh chain every ``--per-chain`` rounds keeps the logs small)
(``make test`` runs a few rounds per mode through tests/sidecar/test_audit_crash.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cmcp_sidecar.audit import LOG_FILE, AuditLog
from cmcp_verifier import audit
from tests.graceful import sigterm_as_interrupt

CHILD = Path(__file__).with_name("audit_child.py")


@dataclass
class RoundResult:
    round: int
    mode: str
    early_kill: bool
    acked: int
    chain_length: int
    torn_recorded: int
    verified: bool
    cut_simulated: bool = False
    missing: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.verified
            and not self.missing
            and (self.torn_recorded > 0 or not self.cut_simulated)
        )


@dataclass
class Campaign:
    """All rounds of one mode against one chain directory."""

    directory: Path
    mode: str
    rng: random.Random
    cut_probability: float = 0.3
    acked: dict[int, str] = field(default_factory=dict)
    rounds: list[RoundResult] = field(default_factory=list)

    def run_round(self) -> RoundResult:
        number = len(self.rounds) + 1
        early = self.rng.random() < 0.1
        acks = _run_child_until_killed(self.directory, self.mode, self.rng, early)
        for seq, digest in acks:
            self.acked[seq] = digest
        cut = self.rng.random() < self.cut_probability and _cut_unacknowledged_tail(
            self.directory / LOG_FILE, self.acked, self.rng
        )
        torn, length = asyncio.run(_reopen(self.directory))
        verified = _cmcp_verify(self.directory / LOG_FILE)
        present = _hashes_by_seq(self.directory / LOG_FILE)
        missing = sorted(s for s, h in self.acked.items() if present.get(s) != h)
        result = RoundResult(
            number, self.mode, early, len(acks), length, torn, verified, cut, missing
        )
        self.rounds.append(result)
        return result


def _run_child_until_killed(
    directory: Path, mode: str, rng: random.Random, early: bool
) -> list[tuple[int, str]]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), mode, str(rng.randrange(1 << 30))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: list[bytes] = []
    ready = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line == b"ready\n":
                ready.set()
            elif line.endswith(b"\n"):  # a partial line is not an acknowledgement
                lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if early:
        time.sleep(rng.uniform(0.0, 0.6))
    else:
        if not ready.wait(60):
            child.kill()
            raise RuntimeError(f"child never became ready: {child.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(rng.uniform(0.02, 0.3))
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join(10)
    stderr = child.stderr.read() if child.stderr else b""
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"child exited by itself ({child.returncode}): {stderr!r}")
    acks = []
    for line in lines:
        seq, digest = line.decode().split()
        acks.append((int(seq), digest))
    return acks


def _cut_unacknowledged_tail(path: Path, acked: dict[int, str], rng: random.Random) -> bool:
    """Cut the final line at a random byte if it ends the file and was never acknowledged."""
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        return False  # a real torn write is already there
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    if audit.decode_line(data[start:-1]).entry["seq"] in acked:
        return False
    with path.open("r+b") as f:
        f.truncate(rng.randrange(start + 1, len(data) - 1))
    return True


async def _reopen(directory: Path) -> tuple[int, int]:
    """Open the chain as a restarting gateway does; (torn tails recorded, chain length)."""
    log = await AuditLog.open(directory, instance_id="kill-test")
    torn, length = len(log.torn), log.length
    await log.close()
    return torn, length


def _hashes_by_seq(path: Path) -> dict[int, str]:
    """seq → hash of every line (streamed: campaign logs grow to tens of MB)."""
    found: dict[int, str] = {}
    if path.exists():
        with path.open("rb") as lines:
            for line in lines:
                record = audit.decode_line(line.rstrip(b"\n"))
                found[record.entry["seq"]] = record.hash
    return found


def _recoveries(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as lines:
        return sum(b'"kind":"recovery"' in line for line in lines)


def _cmcp_verify(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return True  # killed before the first entry: nothing to verify yet
    done = subprocess.run(
        [sys.executable, "-m", "cmcp_verifier", "audit", str(path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0


def run(kills: int, modes: list[str], seed: int, root: Path, per_chain: int) -> list[Campaign]:
    """``kills`` rounds per mode; a fresh chain every ``per_chain`` rounds keeps logs small."""
    campaigns = []
    for mode in modes:
        rng = random.Random(f"{seed}-{mode}")
        for first in range(0, kills, per_chain):
            directory = root / f"{mode}-{first // per_chain}"
            directory.mkdir(parents=True, exist_ok=True)
            campaign = Campaign(directory, mode, rng)
            campaigns.append(campaign)
            for _ in range(min(per_chain, kills - first)):
                if not campaign.run_round().ok:
                    return campaigns
    return campaigns


def summary(campaigns: list[Campaign]) -> dict[str, object]:
    out: dict[str, object] = {}
    for mode in sorted({c.mode for c in campaigns}):
        mine = [c for c in campaigns if c.mode == mode]
        rounds = [r for c in mine for r in c.rounds]
        out[mode] = {
            "kills": len(rounds),
            "chains": len(mine),
            "early_kills": sum(r.early_kill for r in rounds),
            "acknowledged": sum(len(c.acked) for c in mine),
            "entries_written": sum(c.rounds[-1].chain_length for c in mine if c.rounds),
            "torn_tails_recovered": sum(_recoveries(c.directory / LOG_FILE) for c in mine),
            "of_which_simulated_cuts": sum(r.cut_simulated for r in rounds),
            "all_verified": all(r.verified for r in rounds),
            "missing_acknowledged": sum(len(r.missing) for r in rounds),
            "failed_rounds": [asdict(r) for r in rounds if not r.ok],
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kills per mode (default 50)")
    parser.add_argument("--mode", nargs="+", default=["every", "batch"], choices=["every", "batch"])
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--per-chain", type=int, default=10, help="rounds per chain (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmcp-kill-") as tmp:
        root = args.dir or Path(tmp)
        started = time.monotonic()
        campaigns = run(args.kills, args.mode, args.seed, root, args.per_chain)
        result = summary(campaigns)
        result["seed"] = args.seed
        result["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(result, indent=2))
    ok = all(r.ok for c in campaigns for r in c.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
