"""Every benchmark, one after the other, then docs/benchmarks.md with its tables and plots.

    python -m tests.bench.run_all [--quick] [--operator 100,1000] [--only gateway,policy]
                                  [--results DIR] [--docs DIR]

Each benchmark runs as its own process (``python -m tests.bench.<module>``) with bounded counts;
its result (JSON) lands in ``--results`` (default ``$CMCP_CACHE/bench-results/<time>``), its
stderr in ``<name>.log`` beside it. A benchmark that fails is reported as failed (with the
end of its log) and the others still run. Then :mod:`tests.bench.report` writes the report:
``python -m tests.bench.report DIR`` re-renders it from stored results.

``--only NAMES --results DIR`` re-runs some benchmarks into a stored run and re-renders it.

``--quick`` (``make bench-quick``, a few minutes): small counts, concurrency 1 and 8, no
operator run. The full run (``make bench``, about 15 minutes on the 2-core build machine)
includes the operator at N = 100 and 1 000 Deployments (``--operator 100,1000,5000`` adds
5 000).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.graceful import run_tool, sigterm_as_interrupt

from . import report
from .common import CACHE, REPO, machine

Argv = Callable[[bool, Path], list[str]]


@dataclass(frozen=True)
class Bench:
    """One benchmark: its module, its arguments (quick?, where its JSON goes), how it answers."""

    name: str
    module: str
    argv: Argv
    output: str = "file"  # file: writes --json PATH; stdout: prints JSON; text: prints lines
    timeout_s: float = 900


def _gateway(quick: bool, out: Path) -> list[str]:
    if quick:
        return [
            "--calls",
            "600",
            "--rounds",
            "2",
            "--concurrency",
            "1,8",
            "--seed-calls",
            "150",
            "--profile-seconds",
            "4",
            "--timeline",
            "500",
            "--json",
            str(out),
        ]
    return [
        "--calls",
        "3000",
        "--rounds",
        "3",
        "--concurrency",
        "1,8,32,64",
        "--seed-calls",
        "600",
        "--profile-seconds",
        "8",
        "--timeline",
        "2000",
        "--json",
        str(out),
    ]


def _memory(quick: bool, out: Path) -> list[str]:
    if quick:
        return ["--streams", "64", "--seconds", "1", "--no-trace", "--json", str(out)]
    return ["--streams", "64", "--seconds", "4", "--json", str(out)]


BENCHES: tuple[Bench, ...] = (
    Bench("gateway", "bench_gateway", _gateway, timeout_s=1500),
    Bench("memory", "bench_memory", _memory),
    Bench(
        "policy",
        "bench_policy",
        lambda quick, out: [*(["--quick"] if quick else []), "--json", str(out)],
    ),
    Bench(
        "audit",
        "bench_audit",
        lambda quick, out: [
            "--appends",
            "512" if quick else "4096",
            "--repeat",
            "5" if quick else "20",
            "--json",
        ],
        output="stdout",
    ),
    Bench(
        "verifier_audit",
        "bench_verifier_audit",
        lambda quick, out: ["--repeat", "1", "--json"] if quick else ["--million", "--json"],
        output="stdout",
        timeout_s=1200,
    ),
    Bench(
        "verifier_evidence",
        "bench_verifier_evidence",
        lambda quick, out: ["--runs", "30" if quick else "200"],
        output="stdout",
    ),
    Bench(
        "verifier_tdx",
        "bench_verifier_tdx",
        lambda quick, out: ["30" if quick else "300"],
        output="text",
    ),
)


def operator_bench(n: int) -> Bench:
    namespaces = max(1, min(50, n // 20))
    return Bench(
        f"operator_{n}",
        "bench_operator",
        lambda quick, out: [
            "--deployments",
            str(n),
            "--namespaces",
            str(namespaces),
            "--json",
            str(out),
        ],
        timeout_s=1200,
    )


def run_one(bench: Bench, quick: bool, results: Path) -> dict[str, Any]:
    """Run one benchmark; its result, or ``{"error": ...}`` when it failed or is absent."""
    out = results / f"{bench.name}.json"
    if not (REPO / "tests" / "bench" / f"{bench.module}.py").exists():
        return {"error": f"tests/bench/{bench.module}.py is not on this branch"}
    cmd = [sys.executable, "-m", f"tests.bench.{bench.module}", *bench.argv(quick, out)]
    log = results / f"{bench.name}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    began = time.monotonic()
    print(f"== {bench.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    try:
        with log.open("wb") as err:
            proc = run_tool(
                cmd, timeout=bench.timeout_s, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err
            )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {bench.timeout_s:.0f} s", "log": _tail(log)}
    seconds = round(time.monotonic() - began, 1)
    stdout = proc.stdout.decode(errors="replace")
    try:
        if bench.output == "file":
            data: Any = json.loads(out.read_text())
        elif bench.output == "stdout":
            data = json.loads(stdout)
        else:
            data = {"text": stdout.strip()}
    except (OSError, ValueError) as exc:
        return {"error": f"exit {proc.returncode}, no result ({exc})", "log": _tail(log)}
    result = {"result": data, "seconds": seconds, "exit": proc.returncode}
    if proc.returncode:  # a benchmark may exit 1 for a missed budget, with a result
        result["log"] = _tail(log)
    return result


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a few minutes")
    parser.add_argument(
        "--operator",
        type=lambda s: [int(x) for x in s.split(",") if x],
        help="operator scale runs, Deployments (full default 100,1000; quick: none)",
    )
    parser.add_argument("--only", type=lambda s: set(s.split(",")), help="benchmarks to run")
    parser.add_argument("--results", type=Path, help="where results go")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where the report goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    results = args.results or CACHE / "bench-results" / stamp
    results.mkdir(parents=True, exist_ok=True)
    sizes = args.operator if args.operator is not None else ([] if args.quick else [100, 1000])
    benches = [*BENCHES, *(operator_bench(n) for n in sizes)]
    if args.only:
        benches = [b for b in benches if b.name in args.only or b.name.split("_")[0] in args.only]
    began = time.monotonic()
    summary: dict[str, Any] = {
        "machine": machine(results),
        "quick": args.quick,
        "started": stamp,
        "benches": {},
    }
    earlier = results / "summary.json"
    rerun = bool(args.only) and earlier.exists()
    if rerun:  # re-running some benchmarks of a stored run
        summary = json.loads(earlier.read_text())
        summary.setdefault("reruns", []).append({"only": sorted(args.only), "at": stamp})
    for bench in benches:
        summary["benches"][bench.name] = outcome = run_one(bench, args.quick, results)
        state = "FAILED: " + outcome["error"] if "error" in outcome else f"{outcome['seconds']} s"
        print(f"   {bench.name}: {state}", file=sys.stderr, flush=True)
    spent = round(time.monotonic() - began, 1)
    if rerun:
        summary["rerun_s"] = summary.get("rerun_s", 0) + spent
    else:
        summary["total_s"] = spent
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    written = report.write(summary, args.docs)
    print(f"results: {results}\nreport: {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sigterm_as_interrupt()
    raise SystemExit(main())
