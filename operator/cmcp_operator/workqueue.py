"""A deduplicating, rate-limited work queue (the controller-runtime pattern, in asyncio).

Watch events only *enqueue keys*; a fixed number of workers reconcile them. A key queued many
times before a worker takes it is reconciled once; a key is never reconciled by two workers
at once (queued again while running, it runs once more afterwards); a failing key is retried
with exponential backoff per key. This keeps bursts (1 000 Deployment events at start-up)
cheap and makes every reconcile level-triggered: it reads the current state, not the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger("cmcp.operator.queue")


class Requeue(Exception):
    """Raise from a handler to run the key again after ``delay`` seconds (not a failure)."""

    def __init__(self, delay: float, why: str = "") -> None:
        super().__init__(why)
        self.delay = delay


class WorkQueue:
    """Keys in, one reconcile per key at a time out."""

    def __init__(
        self,
        handler: Callable[[Any], Awaitable[None]],
        *,
        workers: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        on_error: Callable[[Any, BaseException], None] | None = None,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.base_delay, self.max_delay = base_delay, max_delay
        self.on_error = on_error
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._later: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}  # earliest scheduled time per delayed key
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Queue ``key`` (now, or after ``delay`` seconds)."""
        if delay > 0:
            due = time.monotonic() + delay
            if key in self._due and self._due[key] <= due:
                return  # already scheduled at least as early: debounced
            self._due[key] = due
            heapq.heappush(self._later, (due, next(self._seq), key))
            self._wake.set()
            return
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def __len__(self) -> int:
        return len(self._queued) + len(self._running) + len(self._due)

    @property
    def idle(self) -> bool:
        return not self._queued and not self._running

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"cmcp-worker-{i}")
            for i in range(self.workers)
        ]
        self._tasks.append(asyncio.create_task(self._timer(), name="cmcp-queue-timer"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _timer(self) -> None:
        while True:
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                due, _, key = heapq.heappop(self._later)
                if self._due.get(key) == due:  # else superseded by an earlier entry
                    del self._due[key]
                    self.add(key)
            timeout = self._later[0][0] - now if self._later else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self.handler(key)
            except Requeue as again:
                self._failures.pop(key, None)
                self.add(key, again.delay)
            except Exception as exc:
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                delay = min(self.base_delay * 2 ** (n - 1), self.max_delay)
                if self.on_error is not None:
                    self.on_error(key, exc)
                log.warning(
                    "reconcile %s failed (attempt %d, retry in %.1fs): %s", key, n, delay, exc
                )
                self.add(key, delay)
            else:
                self._failures.pop(key, None)
            finally:
                self._running.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
