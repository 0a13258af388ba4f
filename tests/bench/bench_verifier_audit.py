"""Benchmark: the verifier on audit logs of 10^3 … 10^6 entries, and claims checked against them.

Run from the repository root:  python tests/bench/bench_verifier_audit.py [--million] [--json]
(or ``python -m tests.bench.bench_verifier_audit``).

Logs are hash chains of entries shaped exactly as the gateway writes them (the sidecar's
``CallEntry``/``OperationEntry``/``FaultEntry``/``LifecycleEntry`` members plus the chain
fields, encoded with :func:`cmcp_verifier.audit.encode_entry`): 16 sessions, mostly tool calls
(80 % allow, 10 % deny, 5 % redact, 5 % error), some ``tools/list`` operations, faults and
lifecycle events. Each log is written to a temporary file, then verified

- as a library call: :func:`cmcp_verifier.audit.verify_log_file` on the open file (streaming)
  and, up to 10^5 entries, ``verify_chain(read_log(bytes))`` on the log held in memory;
- as the command line: ``python -m cmcp_verifier audit FILE`` in a fresh process (wall time
  including interpreter start, and the process's peak RSS).

Claims (software evidence, session ``session-0``): the claim alone, and with the 10^5-entry
log as the whole chain and as the session's own export, as a library call
(:func:`verify_claim` with the log's path) and as ``cmcp-verify claim --audit``.

Budget (issue 2): 10^5 entries verify in under 2 s; the script exits 1 when the library call
is over it: its best wall time, or, on a machine shared with other jobs (where wall time mostly
measures waiting for a CPU), its CPU time (``library_cpu_s``, the mean of the runs).
``--million`` adds the 10^6-entry log (about a minute to generate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmcp_sidecar.audit import CallEntry, FaultEntry, LifecycleEntry, OperationEntry
from cmcp_verifier import audit
from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.digests import ZERO_DIGEST, sha256_digest
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository's tests package
    sys.path.insert(0, str(REPO))

from tests.bench.bench_audit import machine  # noqa: E402
from tests.graceful import sigterm_as_interrupt  # noqa: E402
from tests.verifier.claimfactory import BUNDLE, make_claim  # noqa: E402

BUDGET_S = 2.0
SESSIONS = 16
DECISIONS = ["allow"] * 16 + ["deny"] * 2 + ["redact", "error"]


def _digest(*parts: object) -> str:
    return sha256_digest(repr(parts).encode())


def entry_fields(i: int) -> dict[str, Any]:
    """The members of the i-th entry, as the gateway's entry builders produce them."""
    session = f"session-{i % SESSIONS}"
    kind = i % 100
    if kind < 85:
        decision = DECISIONS[i % len(DECISIONS)]
        return CallEntry(
            session=session,
            principal="bench/agent",
            tool="salesforce.query",
            upstream="salesforce",
            decision=decision,  # type: ignore[arg-type]
            mode="enforcing",
            forwarded=decision in ("allow", "redact"),
            bundle=BUNDLE,
            policies=("policy0",),
            arguments=_digest("args", i),
            result=_digest("result", i) if decision != "deny" else None,
            error="upstream.timeout" if decision == "error" else None,
            labels=("internal", "pii") if decision == "redact" else ("internal",),
        ).fields()
    if kind < 95:
        return OperationEntry(
            kind="list",
            session=session,
            principal="bench/agent",
            method="tools/list",
            decision="allow",
            mode="enforcing",
            forwarded=True,
            bundle=BUNDLE,
            result=_digest("list", i),
        ).fields()
    if kind < 99:
        return FaultEntry(
            session=session, error="request.invalid_json", forwarded=False, params=None
        ).fields()
    return LifecycleEntry(event="attested", details={"platform": "software-only"}).fields()


def write_log(path: Path, n: int) -> None:
    """A chain of ``n`` entries, written as the gateway writes them (line by line)."""
    prev = ZERO_DIGEST
    with path.open("wb") as out:
        for seq in range(n):
            chain = {"v": 1, "seq": seq, "prev": prev, "ts_ms": 1_767_000_000_000 + seq}
            line, prev = audit.encode_entry({**chain, "instance": "gw-bench", **entry_fields(seq)})
            out.write(line)


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, min) wall seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


# Runs the CLI module and, at exit, prints the process's peak RSS (VmHWM: unlike the rusage of
# a child, it does not include the forking parent's memory from before exec).
_WITH_PEAK_RSS = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    kib = next(l.split()[1] for l in status.splitlines() if l.startswith('VmHWM:'))\n"
    "    print('peak-rss-kib', kib, file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "sys.argv[0] = 'cmcp-verify'\n"
    "runpy.run_module('cmcp_verifier', run_name='__main__')\n"
)


def run_cli(*argv: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit status) of ``cmcp-verify ARGV`` in a fresh process."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WITH_PEAK_RSS, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    kib = next(x.split()[1] for x in proc.stderr.splitlines() if x.startswith("peak-rss-kib"))
    return wall, int(kib) / 1024, proc.returncode


def bench_log(path: Path, n: int, repeat: int) -> dict[str, Any]:
    def streamed() -> None:
        with path.open("rb") as f:
            assert audit.verify_log_file(f).length == n

    def in_memory() -> None:
        assert audit.verify_chain(audit.read_log(path.read_bytes())).length == n

    row: dict[str, Any] = {"entries": n, "bytes": path.stat().st_size}
    cpu_started = time.process_time()
    row["library_s"], row["library_min_s"] = _best(streamed, repeat)
    row["library_cpu_s"] = (time.process_time() - cpu_started) / repeat
    if n <= 100_000:
        row["in_memory_s"] = _best(in_memory, repeat)[0]
    cli = [run_cli("audit", str(path)) for _ in range(repeat)]
    assert all(code == 0 for _, _, code in cli)
    row["cli_s"] = statistics.median(wall for wall, _, _ in cli)
    row["cli_rss_mib"] = max(rss for _, rss, _ in cli)
    return row


def bench_claims(directory: Path, log_path: Path, repeat: int) -> list[dict[str, Any]]:
    log = log_path.read_bytes()
    claim, _ = make_claim(session="session-0", log=log)
    claim_path = directory / "claim.json"
    claim_path.write_bytes(canonical_bytes(claim))
    export = directory / "session-0.log"
    export.write_bytes(
        b"".join(
            r.line + b"\n" for r in audit.iter_records(log) if r.entry["session"] == "session-0"
        )
    )
    rows = []
    entries = log.count(b"\n")
    for label, audit_log in (
        ("claim alone", None),
        (f"claim + whole chain ({entries:,} entries)", log_path),
        ("claim + its session's export", export),
    ):
        policy = ClaimPolicy(allow_software=True, audit_log=audit_log)
        data = claim_path.read_bytes()
        assert verify_claim(data, policy).verified

        def verify(data: bytes = data, policy: ClaimPolicy = policy) -> None:
            verify_claim(data, policy)

        median, _ = _best(verify, repeat)
        argv = ["claim", str(claim_path), "--allow-software"]
        argv += ["--audit", str(audit_log)] if audit_log else []
        cli = [run_cli(*argv) for _ in range(repeat)]
        assert all(code == 0 for _, _, code in cli)
        rows.append(
            {
                "case": label,
                "library_s": median,
                "cli_s": statistics.median(w for w, _, _ in cli),
                "cli_rss_mib": max(r for _, r, _ in cli),
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f'Machine: {m["cpus"]} vCPUs, `lscpu` model "{m["cpu_model"]}", Python {m["python"]}; '
        f"load average (1/5/15 min) {m['load_before']} before, {m['load_after']} after.",
        "",
        "| entries | log size | library, streamed (median / best wall; CPU) | library, in memory | "
        "`cmcp-verify audit` (wall) | CLI peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["logs"]:
        mem = f"{r['in_memory_s']:.3f} s" if "in_memory_s" in r else "—"
        out.append(
            f"| {r['entries']:,} | {r['bytes'] / 2**20:.1f} MiB | {r['library_s']:.3f} / "
            f"{r['library_min_s']:.3f} s; {r['library_cpu_s']:.3f} s | {mem} | "
            f"{r['cli_s']:.3f} s | {r['cli_rss_mib']:.0f} MiB |"
        )
    out += [
        "",
        "| claim | library | `cmcp-verify claim` (wall) | CLI peak RSS |",
        "|---|---|---|---|",
    ]
    for r in result["claims"]:
        out.append(
            f"| {r['case']} | {r['library_s'] * 1000:.1f} ms | {r['cli_s'] * 1000:.0f} ms | "
            f"{r['cli_rss_mib']:.0f} MiB |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also 10^6 entries")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--dir", type=Path, help="where the logs go (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    sizes = [1_000, 10_000, 100_000] + ([1_000_000] if args.million else [])
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="cmcp-bench-", dir=args.dir) as tmp:
        directory = Path(tmp)
        result: dict[str, Any] = {
            "machine": {**machine(directory), "load_before": load_before},
            "logs": [],
        }
        for n in sizes:
            path = directory / f"audit-{n}.log"
            write_log(path, n)
            result["logs"].append(bench_log(path, n, 1 if n > 100_000 else args.repeat))
            if n != 100_000:
                path.unlink()
        result["claims"] = bench_claims(directory, directory / "audit-100000.log", args.repeat)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    row = next(r for r in result["logs"] if r["entries"] == 100_000)
    return 0 if min(row["library_min_s"], row["library_cpu_s"]) < BUDGET_S else 1


if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
