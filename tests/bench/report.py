"""docs/benchmarks.md and its plots (docs/bench/*.png) from one run of tests/bench/run_all.py.

    python -m tests.bench.report RESULTS_DIR [--docs DIR]    # re-render stored results

Tables and verdicts are computed from the run's results only (ratios within one run); the
hand-written analysis (profiles, explanations of missed targets) is kept in
docs/bench/analysis.md and included as it is.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .common import REPO, describe

IMG = "bench"  # plots go to <docs>/bench/
ANALYSIS = "analysis.md"
ROW = Callable[[dict[str, Any]], Iterable[Any]]


def _table(head: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "✔" if value else "✘"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.0f}".replace(",", " ") if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    return str(value)


def _result(summary: dict[str, Any], name: str) -> Any:
    return summary["benches"].get(name, {}).get("result")


# -- plots ---------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _styles(paths: list[str]) -> dict[str, dict[str, Any]]:
    """One distinct colour per path (tab20); the reference paths dashed."""
    cmap = _pyplot().get_cmap("tab20")
    return {
        p: {
            "color": cmap(i % 20),
            "linestyle": "--" if p == "direct" or "hop" in p else "-",
            "label": p,
        }
        for i, p in enumerate(paths)
    }


def plot_gateway(gw: dict[str, Any], out: Path) -> list[str]:
    """Latency CDFs (per concurrency) and throughput / p50 vs concurrency; file names."""
    plt = _pyplot()
    names: list[str] = []
    style = _styles(gw["paths"])
    levels = gw["settings"]["concurrency"]
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4.2), squeeze=False)
    points = [i / 100 for i in range(101)]
    for ax, c in zip(axes[0], levels, strict=True):
        for path in gw["paths"]:
            q = gw["cdf"].get(path, {}).get(str(c)) or gw["cdf"].get(path, {}).get(c)
            if q:
                ax.plot(q, points, linewidth=1.2, **style[path])
        ax.set_xscale("log")
        ax.set_xlabel("latency per tools/call, ms (log)")
        ax.set_title(f"{c} concurrent client{'s' if c > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of calls")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "gateway-cdf.png", dpi=110)
    plt.close(fig)
    names.append("gateway-cdf.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for path in gw["paths"]:
        rows = sorted((r for r in gw["rows"] if r["path"] == path), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["per_s"] for r in rows], marker="o", linewidth=1.2, **style[path])
        right.plot(xs, [r["p50_ms"] for r in rows], marker="o", linewidth=1.2, **style[path])
    for ax, label in ((left, "calls/s (log)"), (right, "p50 latency, ms (log)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    right.set_yscale("log")
    left.set_yscale("log")
    left.set_title("throughput vs concurrency")
    right.set_title("p50 latency vs concurrency")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gateway-throughput.png", dpi=110)
    plt.close(fig)
    names.append("gateway-throughput.png")
    return names


def plot_policy(results: list[dict[str, Any]], out: Path) -> str:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in ("scoped", "unscoped", "full-set"):
        rows = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["policies"])
        left.plot(
            [r["policies"] for r in rows], [r["p50_us"] for r in rows], marker="o", label=kind
        )
    tools = sorted((r for r in results if r["kind"] == "tools"), key=lambda r: r["tools"])
    if tools:
        right.plot(
            [r["tools"] for r in tools],
            [r["p50_us"] for r in tools],
            marker="o",
            label=f"p50, {tools[0]['policies']} scoped policies",
        )
        right.plot(
            [r["tools"] for r in tools], [r["p99_us"] for r in tools], marker="s", label="p99"
        )
    left.axhline(200, color="red", linestyle="--", linewidth=0.8, label="0.2 ms target (scoped)")
    left.set_title("decision p50 vs policies")
    left.set_xlabel("policies in the bundle (log)")
    right.set_title("decision latency vs tools requested")
    right.set_xlabel("distinct tools (log)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("µs (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "policy-scaling.png", dpi=110)
    plt.close(fig)
    return "policy-scaling.png"


def plot_audit(appends: list[dict[str, Any]], out: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    levels = sorted({r["concurrency"] for r in appends})
    width = 0.38
    on_thread = [r for r in appends if r.get("where", "thread") == "thread"]
    for i, fsync in enumerate(("every", "batch")):
        rows = {r["concurrency"]: r for r in on_thread if r["fsync"] == fsync}
        xs = [j + (i - 0.5) * width for j in range(len(levels))]
        ax.bar(xs, [rows[c]["appends_per_s"] for c in levels], width, label=f"fsync: {fsync}")
    ax.set_xticks(range(len(levels)), [f"{c} appenders" for c in levels])
    ax.set_ylabel("durable appends/s")
    ax.set_title("audit appends per second, syncs on the writer thread (each durable on return)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "audit-appends.png", dpi=110)
    plt.close(fig)
    return "audit-appends.png"


# -- sections ------------------------------------------------------------------------------


def targets(summary: dict[str, Any]) -> list[list[Any]]:
    """[target, measured, met] rows from whatever this run measured."""
    rows: list[list[Any]] = []
    gw = _result(summary, "gateway")
    if gw:
        v = gw["verdicts"]
        if "added_p50_over_hop_ms" in v:
            rows.append(
                [
                    "gateway p50 added over the bare hop ≤ 0.4 ms (c=1, enforcing, fsync batch)",
                    f"{v['added_p50_over_hop_ms']:+.3f} ms",
                    v["added_p50_over_hop_ok"],
                ]
            )
        if "throughput_c8_vs_hop" in v:
            rows.append(
                [
                    "gateway throughput at c=8 ≥ 75 % of the bare hop",
                    f"{v['throughput_c8_vs_hop'] * 100:.0f} %",
                    v["throughput_c8_vs_hop_ok"],
                ]
            )
        if "throughput_c8_durable_floor_vs_hop" in v:
            rows.append(
                [
                    "(context) c=8: the lightest hop with only a durable append, vs the bare hop",
                    f"{v['throughput_c8_durable_floor_vs_hop'] * 100:.0f} %",
                    None,
                ]
            )
        if "throughput_c8_vs_durable_floor" in v:
            rows.append(
                [
                    "(context) c=8: the gateway vs that durable-append floor",
                    f"{v['throughput_c8_vs_durable_floor'] * 100:.0f} %",
                    None,
                ]
            )
        if "added_p50_vs_seed" in v:
            d = v["added_p50_over_direct_ms"]
            rows.append(
                [
                    "p50 added over direct ≤ 1/3 of cmcp-runtime 0.7.1's",
                    f"{d['ours']:.3f} vs {d['cmcp-runtime']:.3f} ms "
                    f"(ratio {v['added_p50_vs_seed']})",
                    v["added_p50_vs_seed_ok"],
                ]
            )
        if "throughput_c8_vs_seed" in v:
            rows.append(
                [
                    "throughput at c=8 ≥ 5× cmcp-runtime 0.7.1's",
                    f"{v['throughput_c8_vs_seed']}×",
                    v["throughput_c8_vs_seed_ok"],
                ]
            )
    policy = _result(summary, "policy")
    if policy:
        big = [r for r in policy["results"] if r["kind"] == "scoped"]
        if big:
            top = max(big, key=lambda r: r["policies"])
            rows.append(
                [
                    f"policy decision p50 < 0.2 ms with {top['policies']} scoped policies",
                    f"{top['p50_us']} µs",
                    top["p50_us"] < 200,
                ]
            )
    memory = _result(summary, "memory")
    if memory:
        rows.append(
            ["sidecar RSS idle < 80 MiB", f"{memory['idle_mib']} MiB", memory["targets"]["idle_ok"]]
        )
        rows.append(
            [
                f"sidecar RSS with {memory['streams']} open streams < 150 MiB",
                f"{memory['streams_peak_mib']} MiB",
                memory["targets"]["streams_ok"],
            ]
        )
    for name in sorted(summary["benches"]):
        op = _result(summary, name) if name.startswith("operator_") else None
        if op:
            ok = op["all_injected_s"] is not None and op["all_injected_s"] <= 60
            rows.append(
                [
                    f"operator: {op['deployments']} Deployments injected ≤ 60 s, RSS < 300 MiB",
                    f"{op['all_injected_s']} s, {op['rss_peak_mib']} MiB",
                    ok and op["rss_peak_mib"] < 300,
                ]
            )
    return rows


def gateway_section(gw: dict[str, Any], img: Path) -> list[str]:
    by = {(r["path"], r["concurrency"]): r for r in gw["rows"]}
    rows = []
    for r in gw["rows"]:
        hop = by.get(("bare hop", r["concurrency"]))
        direct = by.get(("direct", r["concurrency"]))
        rows.append(
            [
                r["path"],
                r["concurrency"],
                r["per_s"],
                r["p50_ms"],
                r["p90_ms"],
                r["p99_ms"],
                r["cpu_us"],
                None
                if hop is None or r["path"] == "direct"
                else round(r["p50_ms"] - hop["p50_ms"], 3),
                None if hop is None else f"{r['per_s'] / hop['per_s'] * 100:.0f} %",
                None
                if direct is None or r["path"] == "direct"
                else round(r["p50_ms"] - direct["p50_ms"], 3),
            ]
        )
    s = gw["settings"]
    out = [
        "## Gateway overhead",
        "",
        f"`python -m tests.bench.bench_gateway` — {s['calls']} calls per path and concurrency "
        f"({s.get('seed_calls', s['calls'])} for cmcp-runtime, which serves about 50/s), in "
        f"{s['rounds']} interleaved rounds; one `tools/call` of `echo` (2026-07-28 stateless "
        "POST, JSON reply) against the same minimal aiohttp upstream. *Bare hop*: a minimal "
        "aiohttp pass-through on asyncio (the issue's floor; the uvloop row is the floor for the "
        "loop `cmcp start` uses; *our upstream client*: the same hop with the gateway's HTTP "
        "client in place of aiohttp's; *durable append (floor)*: that lightest hop appending a "
        "line per reply to a file on the disk under test by the simplest group commit, durable "
        "before the reply — what any proxy keeping that promise pays on this disk, with nothing "
        "parsed or decided). *Pass-through seam*: our proxy without policy, audit or "
        "claims. *Gateway*: `cmcp start` in dev mode with the demo bundle, the audit log on the "
        "disk under test (durable before the reply), claims per session. CPU µs/call: the proxy "
        "process's user + system time (all threads) per call.",
        "",
        _table(
            [
                "path",
                "clients",
                "calls/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "proxy CPU µs/call",
                "p50 over bare hop ms",
                "throughput vs bare hop",
                "p50 over direct ms",
            ],
            rows,
        ),
        "",
        "Raw `write` + `fdatasync` of one line on the same disk, measured before each block "
        '(the floor of "durable before the reply"): '
        + "; ".join(
            f"c={f['concurrency']}: p50 {f['p50_ms']} ms, " + _upper(f) for f in gw["sync_floor"]
        )
        + ".",
        "",
    ]
    for name in plot_gateway(gw, img):
        out += [f"![{name}]({IMG}/{name})", ""]
    rss = gw.get("peak_rss_mib") or {}
    if rss:
        out += [
            "Peak RSS of each proxy process during the run (VmHWM): "
            + ", ".join(f"{k} {v} MiB" for k, v in rss.items())
            + ".",
            "",
        ]
    stages = gw.get("timeline")
    if stages and stages.get("calls"):
        total = sum(stages["median_us"].values())
        out += [
            "**Where one call's time goes** (`--timeline`: the enforcing gateway with timestamps "
            f"at each stage, tests/bench/timeline_gateway.py; {stages['calls']} sequential calls, "
            "median per stage; the client saw a p50 of "
            f"{stages['client_p50_us'] / 1000:.3f} ms for these calls, aiohttp's request parsing "
            "and the client's own time are outside the stages):",
            "",
            _table(
                ["stage", "median µs", "share"],
                [[k, v, f"{v / total * 100:.0f} %"] for k, v in stages["median_us"].items()],
            ),
            "",
        ]
    prof = gw.get("profile")
    if prof and prof.get("samples"):
        out += [
            f"**Profile** (py-spy, GIL holder only, enforcing gateway under 8 clients, "
            f"{prof['seconds']:.0f} s, {prof['samples']} samples): share of samples by area",
            "",
            _table(["area", "share"], [[a, f"{s * 100:.1f} %"] for a, s in prof["areas"]]),
            "",
            "Self time, top functions:",
            "",
            _table(
                ["function", "share"], [[f"`{a}`", f"{s * 100:.1f} %"] for a, s in prof["self"]]
            ),
            "",
        ]
    return out


def _upper(floor: dict[str, Any]) -> str:
    """The floor's upper percentile (p99; results stored before it was kept give p90)."""
    key = "p99" if "p99_ms" in floor else "p90"
    return f"{key} {floor[key + '_ms']} ms"


def memory_section(m: dict[str, Any]) -> list[str]:
    out = [
        "## Sidecar memory",
        "",
        "`python -m tests.bench.bench_memory` — the enforcing gateway (`cmcp start`, dev mode, "
        "audit on disk), RSS from /proc.",
        "",
        _table(
            ["state", "RSS MiB"],
            [
                ["idle (after 100 calls and 2 s quiet)", m["idle_mib"]],
                [
                    f"peak with {m['streams']} open SSE streams ({m['stream_events']} progress "
                    "events relayed)",
                    m["streams_peak_mib"],
                ],
                [
                    f"peak under {m['clients']} concurrent clients ({m['client_calls']} calls)",
                    m["clients_peak_mib"],
                ],
                ["2 s after the load", m["after_mib"]],
            ],
        ),
        "",
    ]
    imports = m.get("imports")
    if imports:
        out += [
            "RSS of a fresh interpreter after each import `cmcp start` needs:",
            "",
            _table(
                ["after importing", "RSS MiB", "modules"],
                [[i["module"], i["rss_mib"], i["modules"]] for i in imports],
            ),
            "",
        ]
    traced = m.get("tracemalloc") or {}
    for name, snap in sorted(traced.items()):
        when = {"snapshot-1": "idle", "snapshot-2": "streams open"}.get(name, name)
        out += [
            f"tracemalloc ({when}): {snap['traced_mib']} MiB of Python allocations — "
            + ", ".join(f"{k} {v}" for k, v in list(snap["by_package_mib"].items())[:8])
            + " (MiB).",
            "",
        ]
    return out


def policy_section(p: dict[str, Any], img: Path) -> list[str]:
    rows = [
        [
            r["kind"],
            r["policies"],
            r["tools"],
            r["load_s"],
            r["rss_warm_mib"],
            r["policy_sets"],
            r["cold_mean_us"],
            r["p50_us"],
            r["p99_us"],
        ]
        for r in p["results"]
    ]
    name = plot_policy(p["results"], img)
    return [
        "## Policy scaling",
        "",
        "`python -m tests.bench.bench_policy` — `PolicyEngine.decide` on a `tools/call` request "
        "(context conversion + Cedar), each configuration in a fresh process. *scoped*: N "
        'policies each scoped to one tool (`resource == Tool::"tool<i>"`) plus one unscoped '
        "permit; *unscoped*: the tool test in the `when` clause (nothing can be indexed); "
        "*full-set*: the scoped bundle with the index off; *tools*: the largest scoped bundle, "
        "requests over T tools; *separate*: unscoped policies as their own set (two Cedar calls).",
        "",
        _table(
            [
                "kind",
                "policies",
                "tools",
                "load s",
                "RSS warm MiB",
                "policy sets",
                "cold µs",
                "p50 µs",
                "p99 µs",
            ],
            rows,
        ),
        "",
        f"![policy scaling]({IMG}/{name})",
        "",
    ]


def audit_section(a: dict[str, Any], img: Path) -> list[str]:
    name = plot_audit(a["appends"], img)
    floors = "; ".join(
        f"{r['syncs_per_s']}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms" for r in a["raw_sync"]
    )
    return [
        "## Audit appends and claims",
        "",
        "`python -m tests.bench.bench_audit` — durable appends of a typical `tools/call` entry "
        f"from 1, 8 or 64 concurrent tasks (audit file on {a['machine']['filesystem']}); latency "
        "from call to durable; *sync on*: the writer thread, or the event loop itself (what the "
        "gateway does when every call in flight waits for the group); CPU: the process's per "
        "append. Raw write + fdatasync floor before and after: " + floors + ".",
        "",
        _table(
            [
                "fsync",
                "sync on",
                "appenders",
                "appends/s",
                "p50 ms",
                "p99 ms",
                "CPU µs/append",
                "entries per sync",
            ],
            [
                [
                    r["fsync"],
                    r.get("where", "thread"),
                    r["concurrency"],
                    r["appends_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r.get("cpu_us", "–"),
                    r["entries_per_sync"],
                ]
                for r in a["appends"]
            ],
        ),
        "",
        f"![audit appends]({IMG}/{name})",
        "",
        "Claims (software evidence): build + sign + RFC 8785 encode, and the verifier's full "
        "check of the claim against the exported log (median):",
        "",
        _table(
            ["session entries", "build + sign ms", "verify with log ms", "claim bytes"],
            [
                [
                    r["session_entries"],
                    r["build_sign_ms"],
                    r["verify_with_log_ms"],
                    r["claim_bytes"],
                ]
                for r in a["claims"]
            ],
        ),
        "",
    ]


def verifier_section(summary: dict[str, Any]) -> list[str]:
    out = ["## Verifier", ""]
    va = _result(summary, "verifier_audit")
    if va:
        out += [
            "`python -m tests.bench.bench_verifier_audit` (audit-chain verification: strict "
            "parse and re-hash of every entry; library call, and the whole `cmcp-verify` "
            "process):",
            "",
            _table(
                ["entries", "MiB", "library s", "library CPU s", "CLI s", "CLI RSS MiB"],
                [
                    [
                        f"{r['entries']:,}".replace(",", " "),
                        round(r["bytes"] / 2**20, 1),
                        round(r["library_s"], 3),
                        round(r["library_cpu_s"], 3),
                        round(r["cli_s"], 3),
                        round(r["cli_rss_mib"], 1),
                    ]
                    for r in va["logs"]
                ],
            ),
            "",
            _table(
                ["claim verification", "library ms", "CLI ms", "CLI RSS MiB"],
                [
                    [
                        r["case"],
                        round(r["library_s"] * 1e3, 2),
                        round(r["cli_s"] * 1e3, 1),
                        round(r["cli_rss_mib"], 1),
                    ]
                    for r in va["claims"]
                ],
            ),
            "",
        ]
    else:
        error = summary["benches"].get("verifier_audit", {}).get("error", "not run")
        out += [
            f"Audit logs of 10³–10⁶ entries: not measured in this run ({error}); the "
            "verifier's `tests/bench/bench_verifier_audit.py` is run here once it is on "
            "the branch.",
            "",
        ]
    ev = _result(summary, "verifier_evidence")
    if ev:
        out += [
            "`python -m tests.bench.bench_verifier_evidence` (real samples, from bytes):",
            "",
            _table(
                ["case", "median ms", "p95 ms", "median CPU ms"],
                [[k, v["median_ms"], v["p95_ms"], v["median_cpu_ms"]] for k, v in ev.items()],
            ),
            "",
        ]
    tdx = _result(summary, "verifier_tdx")
    if tdx:
        out += ["`python -m tests.bench.bench_verifier_tdx`:", "", "```", tdx["text"], "```", ""]
    return out


def operator_section(summary: dict[str, Any]) -> list[str]:
    runs = [_result(summary, n) for n in sorted(summary["benches"]) if n.startswith("operator_")]
    runs = [r for r in runs if r]
    if not runs:
        return []
    return [
        "## Operator scale",
        "",
        "`python -m tests.bench.bench_operator --deployments N` — its own control plane with "
        "kwok nodes, one McpGateway per namespace created at once, time until every "
        "Deployment's template carries the sidecar (see the script's docstring).",
        "",
        _table(
            [
                "Deployments",
                "namespaces",
                "load before",
                "all injected s",
                "operator's last write s",
                "all Ready s",
                "operator CPU s",
                "RSS peak MiB",
                "API requests",
                "per workload",
            ],
            [
                [
                    r["deployments"],
                    r["namespaces"],
                    r["machine"]["load_before"][0],
                    r["all_injected_s"],
                    r["last_operator_write_s"],
                    r["all_ready_s"],
                    r["operator_cpu_s"],
                    r["rss_peak_mib"],
                    r["api_requests_total"],
                    r["requests_per_workload"],
                ]
                for r in runs
            ],
        ),
        "",
    ]


def render(summary: dict[str, Any], docs: Path) -> str:
    img = docs / IMG
    img.mkdir(parents=True, exist_ok=True)
    m = summary["machine"]
    kind = "quick run (`make bench-quick`)" if summary.get("quick") else "full run (`make bench`)"
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m tests.bench.run_all`; `make bench-quick` for small "
        "counts) — do not edit by hand; the analysis below the tables is "
        f"[docs/bench/{ANALYSIS}](bench/{ANALYSIS}). Earlier hand-run measurements and their "
        "method notes: [docs/bench/history.md](bench/history.md).",
        "",
        f"**This run**: {kind}, {summary.get('total_s', 0) / 60:.1f} min"
        + (f" (re-runs: {summary['rerun_s'] / 60:.1f} min)" if summary.get("rerun_s") else "")
        + ". **Machine**: "
        + describe(m),
        "",
        *(
            [
                "Re-run afterwards into this report (`run_all --only … --results DIR`): "
                + "; ".join(f"{', '.join(r['only'])} at {r['at']} UTC" for r in summary["reruns"])
                + ".",
                "",
            ]
            if summary.get("reruns")
            else []
        ),
        "The machine is a shared 2-vCPU VM: other engineers' test campaigns run on it at the same "
        "time, so absolute numbers move from run to run (the disk's sync latency most of all). "
        "Every comparison below is between paths measured in the same run, interleaved round by "
        "round, so load from elsewhere hits them alike; compare ratios, not absolute times "
        "across runs.",
        "",
        "## Targets",
        "",
        _table(["target", "measured (this run)", "met"], targets(summary)),
        "",
    ]
    failed = {k: v for k, v in summary["benches"].items() if "error" in v}
    gw, mem, pol, aud = (_result(summary, n) for n in ("gateway", "memory", "policy", "audit"))
    if gw:
        out += gateway_section(gw, img)
    if mem:
        out += memory_section(mem)
    if pol:
        out += policy_section(pol, img)
    if aud:
        out += audit_section(aud, img)
    out += verifier_section(summary)
    out += operator_section(summary)
    if failed:
        out += ["## Benchmarks that did not complete", ""]
        for name, v in failed.items():
            out += [f"* **{name}**: {v['error']}"]
            if v.get("log"):
                out += ["", "  ```", *("  " + line for line in v["log"].splitlines()), "  ```"]
        out.append("")
    analysis = img / ANALYSIS
    if analysis.exists():
        out += [analysis.read_text().rstrip(), ""]
    return "\n".join(out)


def write(summary: dict[str, Any], docs: Path) -> Path:
    path = docs / "benchmarks.md"
    path.write_text(render(summary, docs))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    summary = json.loads((args.results / "summary.json").read_text())
    print(write(summary, args.docs))


if __name__ == "__main__":
    main()
