"""Smoke test: the gateway benchmark runs end to end with tiny counts and the report renders.

Real processes (upstream, bare hops, our proxy, ``cmcp start``), a handful of calls each; the
numbers are not checked (they mean nothing at this size), the shape of the result is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.bench import bench_gateway, report
from tests.bench.common import machine


def test_gateway_bench_and_report(tmp_path: Path) -> None:
    args = bench_gateway.parse_args(
        [
            "--calls",
            "16",
            "--rounds",
            "1",
            "--concurrency",
            "1,2",
            "--no-seed",
            "--only",
            bench_gateway.MAIN,
            "--sync-samples",
            "5",
            "--timeline",
            "10",
            "--warmup",
            "4",
            "--work",
            str(tmp_path),
        ]
    )
    result = asyncio.run(bench_gateway.run(args))
    paths = {row["path"] for row in result["rows"]}
    assert {"direct", "bare hop", bench_gateway.DURABLE_HOP, bench_gateway.MAIN} <= paths
    assert len(result["rows"]) == 2 * len(result["paths"])
    assert all(row["calls"] == 16 for row in result["rows"])
    assert "added_p50_over_hop_ms" in result["verdicts"]
    assert result["timeline"]["calls"] >= 10
    assert result["timeline"]["median_us"]["audit: fdatasync"] > 0

    summary = {
        "machine": machine(tmp_path),
        "quick": True,
        "total_s": 1.0,
        "benches": {"gateway": {"result": result}, "policy": {"error": "not run here"}},
    }
    written = report.write(summary, tmp_path / "docs")
    text = written.read_text()
    assert "## Gateway overhead" in text and "## Targets" in text
    assert "audit: to the writer" in text
    assert "**policy**: not run here" in text
    assert (tmp_path / "docs" / "bench" / "gateway-cdf.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "bench" / "gateway-throughput.png").stat().st_size > 1000
