"""``cmcp start`` under tracemalloc: each SIGUSR1 writes where Python memory is allocated.

    CMCP_BENCH_TRACEMALLOC=DIR python -m tests.bench.traced_gateway start --config FILE

Snapshots go to ``DIR/snapshot-<n>.json``: the traced total, the allocations grouped by
package (site-packages distribution, the standard library, or our packages) and the largest
allocation sites. Used by tests/bench/bench_memory.py; tracing slows the gateway down.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

from cmcp_sidecar.cli import main

_taken = 0


def package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    for ours in ("cmcp_sidecar", "cmcp_verifier"):
        if f"/{ours}/" in filename:
            return ours
    if filename.startswith("<"):
        return "interpreter (code objects, imports)"
    return "standard library"


def snapshot(directory: Path) -> dict[str, Any]:
    snap = tracemalloc.take_snapshot()
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    by_package: collections.Counter[str] = collections.Counter()
    for stat in stats:
        by_package[package(stat.traceback[0].filename)] += stat.size
    return {
        "traced_mib": round(total / 2**20, 2),
        "by_package_mib": {k: round(v / 2**20, 2) for k, v in by_package.most_common(15)},
        "top_sites": [
            {
                "site": f"{s.traceback[0].filename.split('site-packages/')[-1]}:"
                f"{s.traceback[0].lineno}",
                "kib": round(s.size / 1024, 1),
            }
            for s in stats[:12]
        ],
    }


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _taken
    directory = Path(os.environ["CMCP_BENCH_TRACEMALLOC"])
    directory.mkdir(parents=True, exist_ok=True)
    _taken += 1
    (directory / f"snapshot-{_taken}.json").write_text(json.dumps(snapshot(directory)))


if __name__ == "__main__":
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _on_signal)
    raise SystemExit(main())
