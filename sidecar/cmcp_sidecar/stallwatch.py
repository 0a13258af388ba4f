"""Naming what holds the event loop: a watchdog thread for a loop that stops turning.

Some waits cannot be made asynchronous. The audit log's write check before every forwarded
call (and its writes) on a volume that hangs instead of failing — a frozen file system, a
lost network volume — hold the event loop, and with it ``/healthz`` and ``/readyz``: the
kubelet takes the pod out of service without a reason anyone could read. Nothing unaudited
goes out meanwhile (docs/reliability.md); this watchdog only says why.

A callback on the loop stamps a heartbeat every ``tick`` seconds; a daemon thread checks it.
When the heartbeat is older than ``threshold`` the thread logs once, as an error, where the
loop's thread is held (its innermost frames, read with :func:`sys._current_frames`) with a
hint when that is the audit storage, and counts the stall; when the loop turns again it logs
how long it was held.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_S = 5.0
_AUDIT_HINT = (
    "the audit volume does not answer (frozen or lost?): no call is forwarded until it does"
)


class StallWatch:
    """Watch ``loop`` (running in the calling thread) from a daemon thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float = DEFAULT_THRESHOLD_S,
        tick: float = 0.5,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._threshold, self._tick = threshold, tick
        self._on_stall = on_stall
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cmcp-stallwatch", daemon=True)

    def start(self) -> None:
        """Start beating and watching (call on the loop's thread)."""
        self._heartbeat()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        self._timer = self._loop.call_later(self._tick, self._heartbeat)

    def _watch(self) -> None:
        held_since: float | None = None
        while not self._stopped.wait(self._tick):
            beat = self._beat
            age = time.monotonic() - beat
            if held_since is None and age > self._threshold:
                held_since = beat
                self._report(age)
            elif held_since is not None and beat > held_since:
                log.warning(
                    "event loop turns again after %.1f s",
                    beat - held_since,
                    extra={"event": "loop_recovered", "held_s": round(beat - held_since, 1)},
                )
                held_since = None

    def _report(self, age: float) -> None:
        stack = self._stack()
        where = stack[-1] if stack else "unknown"
        audit = any("/audit/" in frame for frame in stack)
        log.error(
            "event loop held for %.1f s at %s",
            age,
            where,
            extra={
                "event": "loop_stalled",
                "where": where,
                "stack": " < ".join(reversed(stack)),
                **({"hint": _AUDIT_HINT} if audit else {}),
            },
        )
        if self._on_stall is not None:
            self._on_stall()

    def _stack(self, depth: int = 6) -> list[str]:
        """The innermost ``depth`` frames of the loop's thread, outermost first."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return []
        summary = traceback.extract_stack(frame)[-depth:]
        return [f"{f.name} ({_short(f.filename)}:{f.lineno})" for f in summary]


def _short(path: str) -> str:
    """``cmcp_sidecar/audit/log.py`` rather than the whole install path."""
    for package in ("cmcp_sidecar", "cmcp_verifier"):
        at = path.rfind(f"/{package}/")
        if at >= 0:
            return path[at + 1 :]
    return path.rsplit("/", 2)[-1] if "/" in path else path
