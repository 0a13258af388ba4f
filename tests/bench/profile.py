"""Sampling a running gateway with py-spy and summarising where its CPU goes.

py-spy records only the thread holding the GIL (``--gil``): on a CPython server that is where
the CPU time of Python code goes, and waiting (epoll, fdatasync, the GIL itself) drops out.
The summary gives shares of samples: per function (inclusive, with everything it calls),
per function itself (self), and per area of the code (first matching rule of :data:`AREAS`,
looking from the leaf of each stack towards its root).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

AREAS: tuple[tuple[str, str], ...] = (
    ("Cedar decision (cedarpy, Rust)", "cedarpy/"),
    ("policy engine (context, memo)", "cmcp_sidecar/policy/"),
    ("RFC 8785 digests and audit encoding", "cmcp_verifier/canonical.py"),
    ("audit log (hand-off, writer thread)", "cmcp_sidecar/audit/"),
    ("claims ledger", "cmcp_sidecar/claims/"),
    ("enforcement (seam implementation)", "cmcp_sidecar/enforce.py"),
    ("JSON-RPC parsing and writing", "cmcp_sidecar/mcp/jsonrpc.py"),
    ("metrics (prometheus_client)", "prometheus_client/"),
    ("upstream HTTP client (ours, httptools)", "cmcp_sidecar/mcp/http_client.py"),
    ("aiohttp client", "aiohttp/client"),
    ("aiohttp server (from the agent)", "aiohttp/web"),
    ("aiohttp HTTP parsing/writing", "aiohttp/"),
    ("proxy (cmcp_sidecar.mcp, server)", "cmcp_sidecar/"),
    ("asyncio event loop", "asyncio/"),
)
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """Start recording ``pid`` for ``seconds`` into ``out`` (collapsed stacks); None without
    py-spy (the ``bench`` extra) or permission to trace."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
    cmd += ["--gil", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match:
            path = match["file"]
            short = path.split("site-packages/")[-1].split("/sidecar/")[-1].split("/verifier/")[-1]
            out.append((match["fn"], short))
    return out


def summarize(raw: str, top: int = 15) -> dict[str, Any]:
    """Shares of samples (0..1) by area, by function (inclusive) and by function (self)."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        if not frames:
            continue
        total += n
        for name in {f"{fn} ({path})" for fn, path in frames}:
            inclusive[name] += n
        fn, path = frames[-1]
        own[f"{fn} ({path})"] += n
        areas[_area(frames)] += n
    if not total:
        return {"samples": 0}

    def shares(counter: collections.Counter[str], limit: int) -> list[list[Any]]:
        return [[k, round(v / total, 4)] for k, v in counter.most_common(limit)]

    ours = collections.Counter({k: v for k, v in inclusive.items() if "cmcp_" in k})
    return {
        "samples": total,
        "areas": shares(areas, len(AREAS) + 1),
        "inclusive_ours": shares(ours, top),
        "self": shares(own, top),
    }


def _area(frames: list[tuple[str, str]]) -> str:
    for _, path in reversed(frames):
        for name, marker in AREAS:
            if marker in path:
                return name
    return "other (stdlib, threads)"
