"""Policy engine benchmark: decision latency vs bundle size and tool count, load time, memory.

    python tests/bench/bench_policy.py [--quick] [--json FILE]

Each configuration runs in a fresh process (so memory figures are its own): build a bundle
of N policies on the contract schema, load it (parse + validate, as the sidecar does), build
the engine, decide once per distinct tool (cold: builds the per-bucket policy sets),
then time warm decisions. Configurations:

* ``scoped``    N forbid policies each scoped to one tool (``resource == Tool::"tool<i>"``)
                plus one unscoped permit — the issue's "10 000 policies scoped to individual
                tools" case; requests spread over every scoped tool.
* ``unscoped``  the same policies with the scope moved into the condition
                (``when { resource == Tool::"tool<i>" … }``): Cedar must evaluate all of them,
                so latency grows with N — what indexing avoids.
* ``full-set``  the scoped bundle with the index switched off (``indexed=False``).
* ``tools``     10 000 scoped policies, requests spread over T distinct tools.
* ``separate``  the scoped bundle with unscoped policies evaluated as a set of their own
                (``inline_budget=0``: what happens when there are too many to copy).
* ``memo``      the scoped bundle with the decision memo on (the gateway's default; every
                other configuration turns it off so that Cedar runs on every decision),
                requests over T tools: repeated requests are answered without Cedar.

Results: docs/benchmarks.md ("Policy scaling", written by `make bench`).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.graceful import sigterm_as_interrupt

REPO = Path(__file__).resolve().parents[2]
SCHEMA = (
    (REPO / "policies" / "schema.cedarschema")
    .read_text()
    .replace("type Arguments = {\n};", "type Arguments = {\n  q?: String,\n};")
)
MANIFEST = b'{"name": "bench", "version": "1", "description": "benchmark bundle"}'


def policies(kind: str, n: int) -> str:
    permit = '@id("allow-all")\npermit(principal, action, resource);\n'
    if kind == "unscoped":
        body = (
            f'@id("p{i}")\nforbid(principal, action == Action::"call_tool", resource)\n'
            f'  when {{ resource == Tool::"tool{i}" && context.arguments has q && '
            f'context.arguments.q == "x{i}" }};'
            for i in range(n)
        )
    else:
        body = (
            f'@id("p{i}")\nforbid(principal, action == Action::"call_tool", '
            f'resource == Tool::"tool{i}")\n'
            f'  when {{ context.arguments has q && context.arguments.q == "x{i}" }};'
            for i in range(n)
        )
    return permit + "\n".join(body) + "\n"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    """One configuration, measured in this (fresh) process."""
    from cmcp_sidecar.policy import PolicyEngine, PolicyRequest, ToolFacts
    from cmcp_sidecar.policy.engine import MEMO_SIZE
    from cmcp_verifier.bundle import BundleFiles
    from cmcp_verifier.cedar_bundle import load_bundle

    n, tools = config["policies"], config["tools"]
    files = BundleFiles(
        {
            "policies.cedar": policies(config["kind"], n).encode(),
            "schema.cedarschema": SCHEMA.encode(),
            "manifest.json": MANIFEST,
        }
    )
    rss0 = rss_mib()
    t0 = time.perf_counter()
    bundle = load_bundle(files)
    t1 = time.perf_counter()
    engine = PolicyEngine.from_bundle(
        bundle,
        indexed=config["indexed"],
        inline_budget=config.get("inline_budget", 50_000),
        memo_size=MEMO_SIZE if config.get("memo") else 0,
    )
    t2 = time.perf_counter()
    gc.collect()
    rss_loaded = rss_mib()
    facts = ToolFacts.of(["internal"], {"readOnlyHint": True})
    requests = [
        PolicyRequest.call_tool(
            "ns/agent",
            f"tool{i * max(1, n // tools) % max(n, 1)}",
            "crm",
            {"q": "hello", "limit": 10},
            tool=facts,
        )
        for i in range(tools)
    ]
    cold = []
    for request in requests:
        start = time.perf_counter_ns()
        engine.decide(request)
        cold.append(time.perf_counter_ns() - start)
    rss_warm = rss_mib()
    samples = []
    deadline = time.perf_counter() + config["seconds"]
    i = 0
    while time.perf_counter() < deadline or len(samples) < 50:
        request = requests[i % len(requests)]
        start = time.perf_counter_ns()
        engine.decide(request)
        samples.append(time.perf_counter_ns() - start)
        i += 1
    samples.sort()
    return {
        **config,
        "load_s": round(t1 - t0, 3),
        "engine_s": round(t2 - t1, 3),
        "rss_load_mib": round(rss_loaded - rss0, 1),
        "rss_warm_mib": round(rss_warm - rss0, 1),
        "cold_mean_us": round(statistics.fmean(cold) / 1000, 1),
        "p50_us": round(samples[len(samples) // 2] / 1000, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 1),
        "decisions": len(samples),
        "policy_sets": engine.stats().policy_sets,
    }


def configurations(quick: bool) -> list[dict[str, Any]]:
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
    seconds = 0.5 if quick else 2.0

    def config(kind: str, n: int, tools: int, **extra: Any) -> dict[str, Any]:
        indexed = kind != "full-set"
        return {"kind": kind, "policies": n, "tools": tools, "indexed": indexed,
                "seconds": seconds, **extra}  # fmt: skip

    out = [config("scoped", n, n) for n in sizes]
    # Without the index every decision evaluates all n policies: 1 000 distinct tools suffice.
    out += [config(kind, n, min(n, 1000)) for kind in ("unscoped", "full-set") for n in sizes]
    big = sizes[-1]
    out += [config("tools", big, t) for t in (10, 100, 1000, 10000) if t <= big]
    out.append(config("separate", big, big, inline_budget=0))
    # The gateway's default: repeated requests are answered from the decision memo.
    out += [config("memo", big, t, memo=True) for t in sorted({min(1000, big), big})]
    return out


def machine() -> dict[str, str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        cpu = f"{info['Model name'].strip()}, {info['CPU(s)'].strip()} CPUs"
    except (OSError, subprocess.CalledProcessError, KeyError):
        cpu = platform.processor() or "unknown"
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "cedarpy": metadata.version("cedarpy"),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| kind | policies | tools | load s | engine s | RSS load MiB | RSS warm MiB "
        "| policy sets | cold µs | p50 µs | p99 µs |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['policies']} | {r['tools']} | {r['load_s']} | {r['engine_s']} "
            f"| {r['rss_load_mib']} | {r['rss_warm_mib']} | {r['policy_sets']} "
            f"| {r['cold_mean_us']} | {r['p50_us']} | {r['p99_us']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = []
    for config in configurations(args.quick):
        with context.Pool(1) as pool:
            result = pool.apply(run_one, (config,))
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    print(f"machine: {json.dumps(machine())}\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    sigterm_as_interrupt()
    main()
