"""Benchmark: audit appends per second (fsync every vs batch) and claim build+sign time.

    python tests/bench/bench_audit.py [--appends 4096] [--dir DIR] [--json]

Appends: N durable appends of a typical call entry from C concurrent tasks (C = 1, 8, 64),
for ``fsync: every`` and ``fsync: batch`` (no extra delay), each with the syncs on the writer
thread and on the event loop (what the gateway does when every call in flight waits for the
group), on the file system of ``--dir`` (default: a temporary directory). Reports appends/s,
append latency p50/p99, the process's CPU per append and entries per sync, next to the floor:
raw ``write`` + ``fdatasync`` of one line on the same file system,
measured before and after (a shared disk's sync latency varies; compare within one run).
Claims: build + sign + RFC 8785 encode for sessions of 10, 100 and 1000 entries, and the
verifier's check of the same claim, median of repeated runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cmcp_sidecar.attest import Attestor, SigningIdentity
from cmcp_sidecar.attest.selfmeasure import self_measurement
from cmcp_sidecar.attest.software import SoftwareProvider
from cmcp_sidecar.audit import AuditLog, CallEntry, json_digest
from cmcp_sidecar.claims import (
    ChainPoint,
    ClaimSettings,
    PolicyStatus,
    SessionLedger,
    build_claim,
    default_subject,
    encode_claim,
)
from cmcp_verifier import audit
from cmcp_verifier.digests import ZERO_DIGEST, sha256_digest
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim
from tests.graceful import sigterm_as_interrupt

BUNDLE = sha256_digest(b"bench bundle")


def entry(i: int) -> CallEntry:
    return CallEntry(
        session=f"session-{i % 16}",
        principal="bench/agent",
        tool="salesforce.query",
        upstream="salesforce",
        decision="allow",
        mode="enforcing",
        forwarded=True,
        bundle=BUNDLE,
        policies=("policy0",),
        arguments=json_digest({"soql": "SELECT Id FROM Account", "limit": i}),
        result=json_digest({"records": [i]}),
        labels=("internal",),
    )


async def bench_appends(
    directory: Path, fsync: str, concurrency: int, total: int, where: str = "thread"
) -> dict[str, Any]:
    log = await AuditLog.open(directory, instance_id="bench", fsync=fsync)  # type: ignore[arg-type]
    if where == "loop":
        log.sync_here_when(lambda entries: True)
    latencies: list[float] = []
    per_task = total // concurrency

    async def worker(k: int) -> None:
        for i in range(per_task):
            started = time.perf_counter()
            await log.append(entry(k * per_task + i))
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    syncs = log.syncs
    await log.close()
    latencies.sort()
    n = len(latencies)
    return {
        "fsync": fsync,
        "where": where,
        "concurrency": concurrency,
        "appends": n,
        "cpu_us": round(cpu / n * 1e6, 1),
        "appends_per_s": round(n / elapsed),
        "p50_ms": round(latencies[n // 2] * 1000, 3),
        "p99_ms": round(latencies[min(n - 1, n * 99 // 100)] * 1000, 3),
        "entries_per_sync": round(n / max(syncs, 1), 1),
    }


def bench_raw_sync(directory: Path, count: int) -> dict[str, Any]:
    """The floor: one ``write`` + ``fdatasync`` of a 400-byte line, same file system."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, b"x" * 399 + b"\n")
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    times.sort()
    return {
        "syncs_per_s": round(count / sum(times)),
        "p50_ms": round(times[len(times) // 2] * 1000, 3),
        "p99_ms": round(times[len(times) * 99 // 100] * 1000, 3),
    }


async def bench_claims(sizes: tuple[int, ...], repeat: int) -> list[dict[str, Any]]:
    identity = SigningIdentity.generate()
    attestor = Attestor(
        SoftwareProvider(dev_mode=True),
        identity,
        bundle_hash=BUNDLE,
        catalog_hash=sha256_digest(b"catalog"),
        validity_seconds=3600,
    )
    bound = await attestor.start()
    settings = ClaimSettings(
        instance_id="bench",
        subject=default_subject(instance_id="bench"),
        build_digest=self_measurement().digest,
    )
    rows = []
    for size in sizes:
        lines: list[bytes] = []
        prev = ZERO_DIGEST
        ledger = SessionLedger("bench-session", "mcp-session")
        for seq in range(size):
            fields = {"v": 1, "seq": seq, "prev": prev, "ts_ms": seq, "instance": "bench"}
            line, prev = audit.encode_entry(
                {**fields, **entry(seq).fields(), "session": "bench-session"}
            )
            lines.append(line)
            ledger.add(audit.decode_line(line[:-1]))
        log = b"".join(lines)
        chain = ChainPoint(audit.decode_line(lines[0][:-1]).hash, prev, size)
        build_times, verify_times = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            claim = encode_claim(
                build_claim(
                    identity=identity,
                    settings=settings,
                    policy=PolicyStatus(),
                    ledger=ledger.snapshot(),
                    chain=chain,
                    attestation=bound,
                    stale=False,
                    reason="close",
                )
            )
            build_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = verify_claim(claim, ClaimPolicy(allow_software=True, audit_log=log))
            verify_times.append(time.perf_counter() - started)
            assert report.verified
        rows.append(
            {
                "session_entries": size,
                "build_sign_ms": round(statistics.median(build_times) * 1000, 3),
                "verify_with_log_ms": round(statistics.median(verify_times) * 1000, 3),
                "claim_bytes": len(claim),
            }
        )
    await attestor.close()
    return rows


def machine(directory: Path) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    fs = (
        subprocess.run(["df", "-T", str(directory)], capture_output=True, text=True)
        .stdout.splitlines()[-1]
        .split()
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "filesystem": f"{fs[1]} on {fs[0]}" if len(fs) > 1 else "unknown",
    }


async def main_async(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    raw_before = bench_raw_sync(root / "raw", 500)
    appends = []
    for fsync in ("every", "batch"):
        for concurrency in (1, 8, 64):
            for where in ("thread", "loop"):
                directory = root / f"{fsync}-{concurrency}-{where}"
                appends.append(
                    await bench_appends(directory, fsync, concurrency, args.appends, where)
                )
    raw_after = bench_raw_sync(root / "raw", 500)
    claims = await bench_claims((10, 100, 1000), args.repeat)
    return {
        "machine": machine(root),
        "raw_sync": [raw_before, raw_after],
        "appends": appends,
        "claims": claims,
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, "
        f"audit file on {m['filesystem']}.",
        "",
        "Floor, same file system, before and after the append runs: write + fdatasync of one "
        "400-byte line: "
        + "; ".join(
            f"{r['syncs_per_s']}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
            for r in result["raw_sync"]
        )
        + ".",
        "",
        "| fsync | concurrent appenders | appends/s | p50 ms | p99 ms | entries per sync |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["appends"]:
        out.append(
            f"| {r['fsync']} | {r['concurrency']} | {r['appends_per_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['entries_per_sync']} |"
        )
    out += [
        "",
        "| session entries | build + sign + encode ms | verify (with log) ms | claim bytes |",
        "|---|---|---|---|",
    ]
    for r in result["claims"]:
        out.append(
            f"| {r['session_entries']} | {r['build_sign_ms']} | {r['verify_with_log_ms']} | "
            f"{r['claim_bytes']} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=4096, help="appends per configuration")
    parser.add_argument("--repeat", type=int, default=20, help="claim builds per size")
    parser.add_argument("--dir", type=Path, help="where the audit files go (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmcp-bench-", dir=args.dir) as tmp:
        result = asyncio.run(main_async(args, Path(tmp)))
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    sigterm_as_interrupt()
    main()
