"""``cmcp start`` with timestamps at the stages of a ``tools/call``: where one call's time goes.

    CMCP_BENCH_TIMELINE=FILE python -m tests.bench.timeline_gateway start --config FILE

For one client calling sequentially, each call passes the same marks in order; SIGUSR1 writes
the median time between consecutive marks over the calls so far to FILE (JSON) and starts
over. The marks wrap the gateway's own methods (a few µs of overhead per call); nothing of
the gateway changes. Used by ``bench_gateway --timeline``.

Stages (each the time since the previous mark):

* ``proxy: parse, route`` — from the proxy's handler to the seam's ``admit`` (aiohttp's own
  request parsing is before the handler and not in here);
* ``admit: catalog, digest, policy`` — the seam's admission;
* ``forward: upstream round trip`` — request to the upstream, its reply read and parsed;
* ``complete: result digest, entry`` — up to the audit append;
* ``audit: to the writer`` — until the loop step ends and the writer encodes the entry;
* ``audit: encode`` — chain fields, RFC 8785, SHA-256 (on the event loop);
* ``audit: write`` — ``os.write`` (on the loop when nothing else waits, else the writer thread);
* ``audit: fdatasync``;
* ``audit: hand-back to loop`` — until the event loop runs the delivery (≈ 0 when the loop
  wrote the entry itself);
* ``complete: deliver, resume`` — observers (claims ledger), the append's ``await`` returns;
* ``proxy: reply`` — metrics and the response object, to the handler's return.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from cmcp_sidecar import enforce
from cmcp_sidecar.audit import log as audit_log
from cmcp_sidecar.audit import writer
from cmcp_sidecar.cli import main
from cmcp_sidecar.mcp import proxy

MARKS = (
    "post",
    "admit",
    "admitted",
    "complete",
    "append",
    "write",
    "encoded",
    "written",
    "synced",
    "delivered",
    "completed",
    "replied",
)
STAGES = (
    "proxy: parse, route",
    "admit: catalog, digest, policy",
    "forward: upstream round trip",
    "complete: result digest, entry",
    "audit: to the writer",
    "audit: encode",
    "audit: write",
    "audit: fdatasync",
    "audit: hand-back to loop",
    "complete: deliver, resume",
    "proxy: reply",
)
_lock = threading.Lock()
_current: dict[str, int] = {}
_calls: list[dict[str, int]] = []


def mark(name: str) -> None:
    with _lock:
        if name == "post":
            _current.clear()
        _current.setdefault(name, time.perf_counter_ns())
        if name == "replied":
            if len(_current) == len(MARKS):
                _calls.append(dict(_current))
            _current.clear()


def _wrap_async(cls: Any, attr: str, before: str, after: str) -> None:
    original = getattr(cls, attr)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        mark(before)
        try:
            return await original(*args, **kwargs)
        finally:
            mark(after)

    setattr(cls, attr, wrapped)


def _wrap(cls: Any, attr: str, before: str | None, after: str | None) -> None:
    original: Callable[..., Any] = getattr(cls, attr)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            mark(before)
        try:
            return original(*args, **kwargs)
        finally:
            if after:
                mark(after)

    setattr(cls, attr, wrapped)


def install() -> None:
    _wrap_async(proxy.Proxy, "post", "post", "replied")
    _wrap_async(enforce.Enforcement, "admit", "admit", "admitted")
    _wrap_async(enforce.Enforcement, "complete", "complete", "completed")
    _wrap(audit_log.AuditLog, "append", "append", None)  # a coroutine function: marks the call
    _wrap(writer.ChainWriter, "_encode", "write", "encoded")
    _wrap(audit_log.AuditLog, "_on_written", "delivered", None)
    real_write, real_sync = os.write, os.fdatasync

    def timed_write(fd: int, data: Any) -> int:
        try:
            return real_write(fd, data)
        finally:
            if len(data):  # not check_writable()'s empty write
                mark("written")

    def timed_sync(fd: int) -> None:
        try:
            real_sync(fd)
        finally:
            mark("synced")

    writer.os.write = timed_write  # type: ignore[assignment]
    writer.os.fdatasync = timed_sync  # type: ignore[assignment]


def summary() -> dict[str, Any]:
    with _lock:
        calls = list(_calls)
        _calls.clear()
    if not calls:
        return {"calls": 0}
    stages = {}
    for i, stage in enumerate(STAGES):
        a, b = MARKS[i], MARKS[i + 1]
        stages[stage] = round(statistics.median(c[b] - c[a] for c in calls) / 1000, 1)
    total = statistics.median(c["replied"] - c["post"] for c in calls) / 1000
    return {"calls": len(calls), "median_us": stages, "handler_total_us": round(total, 1)}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    Path(os.environ["CMCP_BENCH_TIMELINE"]).write_text(json.dumps(summary()))


if __name__ == "__main__":
    install()
    signal.signal(signal.SIGUSR1, _on_signal)
    raise SystemExit(main())
