"""What the benchmarks share: the machine's description, percentiles, process CPU and RSS."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CMCP_CACHE", Path.home() / ".cache" / "cmcp"))


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples (q in 0..100)."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def quantiles(ordered: Sequence[float], points: int = 101) -> list[float]:
    """``points`` evenly spaced percentiles (0 … 100) of sorted samples: a CDF to plot."""
    return [percentile(ordered, 100 * i / (points - 1)) for i in range(points)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident set size of a process now, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine(disk_path: Path | None = None) -> dict[str, Any]:
    """The machine as lscpu, free, uname and df see it, with the load average right now."""
    lscpu = dict(
        (k.strip(), v.strip())
        for k, v in (line.split(":", 1) for line in _run(["lscpu"]).splitlines() if ":" in line)
    )
    mem = _run(["free", "-m"]).splitlines()
    total_mib = int(mem[1].split()[1]) if len(mem) > 1 else 0
    disk = ""
    if disk_path is not None:
        df = _run(["df", "-T", str(disk_path)]).splitlines()
        parts = df[-1].split() if len(df) > 1 else []
        disk = f"{parts[1]} on {parts[0]}" if len(parts) > 1 else ""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": lscpu.get("Model name", platform.processor() or "unknown"),
        "cpus": os.cpu_count(),
        "threads_per_core": lscpu.get("Thread(s) per core", "?"),
        "hypervisor": lscpu.get("Hypervisor vendor", "none"),
        "memory_mib": total_mib,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "disk": disk,
        "versions": {d: _version(d) for d in ("aiohttp", "cedarpy", "prometheus-client")},
    }


def describe(m: dict[str, Any]) -> str:
    """One paragraph for the report."""
    load = ", ".join(f"{x:.2f}" for x in m["loadavg"])
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    disk = f"; audit files on {m['disk']}" if m.get("disk") else ""
    return (
        f"{m['date']}: {m['cpus']} vCPUs ({m['cpu_model']}, {m['threads_per_core']} thread(s) "
        f"per core, hypervisor {m['hypervisor']}), {m['memory_mib'] / 1024:.1f} GiB RAM, "
        f"{m['kernel']}, CPython {m['python']}, {versions}{disk}. "
        f"Load average at the start (1, 5, 15 min): {load}."
    )


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)
