"""Writing and syncing the chain: on the event loop when nothing else waits, else on a thread.

Entries submitted in one step of the event loop are given ``seq``/``prev``/``ts_ms`` and
encoded on the loop, in order (the chain position lives there). Then they are made durable
with one ``write`` and one ``fdatasync`` — per entry (``every``) or per group of entries that
arrived together (``batch``: group commit) — in one of two places:

* **on the loop**, when every request in flight is waiting for this very group (one agent
  calling at a time): nothing else could run meanwhile, so handing the work to a thread would
  only add two cross-thread wake-ups (≈ 90 µs on a VM) to every call; and whenever the
  storage syncs faster than such a hand-off costs (tmpfs, NVMe with power-loss protection),
  since then blocking the loop for the sync is the cheaper of the two. The loop times its
  own syncs (a thread's timing would include its wait for the GIL) and, while the thread
  does the work, still syncs one group in :data:`PROBE_EVERY` itself to notice when the
  storage got faster;
* **on the writer thread** otherwise, so the loop goes on serving other requests while the
  disk syncs; the thread hands written records back with one ``call_soon_threadsafe`` per
  sync, and entries that arrive meanwhile share the next sync.

Only after the sync are records delivered (the appenders' futures resolve). A storage error
stops the writer for good: every taken and queued entry gets the error.

The writer also keeps disk space reserved ahead of the log (:mod:`.space`) and reports when the
reserve cannot be renewed (the volume is full) and when it can be again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmcp_verifier import audit
from cmcp_verifier.errors import CmcpError, InputError

from ..canonical import canonical_bytes
from . import space
from .errors import AuditUnavailable, storage_error
from .recovery import ChainState


@dataclass(slots=True)
class Pending:
    """One entry waiting to be written, the future its caller awaits, and what to run once
    the entry is durable (``then``, run even when the caller stopped waiting)."""

    fields: dict[str, Any]
    future: asyncio.Future[Any]
    then: Callable[[Any], None] | None = None


@dataclass(slots=True)
class Outcome:
    """What happened to one pending entry: written (``record``) or refused (``error``)."""

    pending: Pending
    record: audit.AuditRecord | None = None
    error: CmcpError | None = None
    end_offset: int = 0
    line: bytes = b""  # the encoded line, newline included (written records only)


#: Storage whose sync takes less than this (moving average, timed on the loop) is synced on
#: the loop even with other requests in flight: the thread hand-off and hand-back cost the
#: loop about this much CPU per group.
FAST_SYNC_SECONDS = 40e-6
#: While the thread syncs, every this many groups one is synced on the loop to time it.
PROBE_EVERY = 256
_SMOOTHING = 8  # the moving average's weight of the newest sample is 1/8

Deliver = Callable[[list[Outcome]], None]
Fail = Callable[[AuditUnavailable, list[Pending]], None]
_STOP = object()  # queued by stop(): write what came before, then end
Space = Callable[[AuditUnavailable | None], None]
#: Whether the event loop has nothing to do but wait for a group of this many entries.
Idle = Callable[[int], bool]


class ChainWriter:
    """Sequences and encodes entries on the event loop; writes and syncs them there or on a
    dedicated thread (see the module docs)."""

    def __init__(
        self,
        *,
        fd: int,
        path: Path,
        state: ChainState,
        instance_id: str,
        group_commit: bool,
        max_delay_s: float,
        max_entries: int,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        fail: Fail,
        space_changed: Space | None = None,
        reserve_bytes: int = space.DEFAULT_RESERVE_BYTES,
    ) -> None:
        self.fd, self._path, self._instance = fd, path, instance_id
        self._seq, self._prev, self._size = state.length, state.tip, state.size
        self._max_entries = max_entries if group_commit else 1
        self._max_delay = max_delay_s if group_commit else 0.0
        self._loop, self._deliver, self._fail = loop, deliver, fail
        self._outbox: list[Pending] = []  # submitted in this loop step (event loop only)
        self._with_thread = 0  # entries handed to the thread, not yet delivered (loop only)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._held: deque[Outcome] = deque()  # taken off the queue, not yet written (thread)
        self._stopping = False  # the thread saw _STOP
        self._space_changed = space_changed
        self._reserve = reserve_bytes
        self._reserved_to = 0
        self._reserve_lock = threading.Lock()  # the loop and the thread both renew
        self.low_space: AuditUnavailable | None = None
        self._closing = False
        self.failure: AuditUnavailable | None = None
        self.idle: Idle | None = None  # None: always sync on the thread
        self.syncs = 0  # write+sync rounds so far (metrics; shows group commit at work)
        self.syncs_here = 0  # of which on the event loop
        self.sync_seconds: float | None = None  # moving average of a sync timed on the loop
        self._unprobed = 0  # groups synced by the thread since the loop last synced one
        self._thread = threading.Thread(target=self._run, name="cmcp-audit-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        """Queue an entry (called on the event loop); raises once the writer has failed."""
        if self.failure is not None:
            raise self.failure.again()
        if self._closing:
            raise AuditUnavailable("the audit log is closed", code="audit.closed")
        if not self._outbox:
            self._loop.call_soon(self.flush)
        self._outbox.append(pending)

    def flush(self) -> None:
        """Encode what this loop step submitted and have it written (on the event loop)."""
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        if self.failure is not None:
            self._fail(self.failure, batch)
            return
        outcomes = self._encode(batch)
        refused = [o for o in outcomes if o.record is None]
        if refused:
            self._deliver(refused)
            outcomes = [o for o in outcomes if o.record is not None]
        if not outcomes:
            return
        if not self._with_thread and not self._max_delay and self._here(len(outcomes)):
            self._write_here(outcomes)
            return
        self._unprobed += 1
        self._with_thread += len(outcomes)
        self._queue.put(outcomes)

    def stop(self) -> None:
        """Write what is queued, then end the thread (blocking: call from a worker thread
        after :meth:`flush` on the event loop)."""
        self._closing = True
        self._queue.put(_STOP)
        self._thread.join()
        late = [o.pending for items in self._drain_queue() for o in items]  # never left hanging
        if late:
            error = self.failure or AuditUnavailable("the audit log is closed", code="audit.closed")
            self._call_loop(self._fail, error, late)

    # -- on the event loop --------------------------------------------------------------

    def _here(self, entries: int) -> bool:
        """Whether the loop writes and syncs this group itself (see the module docs)."""
        if self.idle is None:
            return False
        fast = self.sync_seconds is not None and self.sync_seconds < FAST_SYNC_SECONDS
        if fast or self._unprobed >= PROBE_EVERY:
            return True
        try:
            return self.idle(entries)
        except Exception:  # a broken hint must not lose entries: the thread is always safe
            return False

    def _write_here(self, outcomes: list[Outcome]) -> None:
        syncs, started = self.syncs, time.perf_counter()
        try:
            self._write(outcomes)
        except Exception as exc:
            error = self._storage_failure(exc)
            self.failure = error
            self._fail(error, [o.pending for o in outcomes])
            return
        took = (time.perf_counter() - started) / (self.syncs - syncs)
        average = self.sync_seconds
        self.sync_seconds = took if average is None else average + (took - average) / _SMOOTHING
        self.syncs_here += self.syncs - syncs
        self._unprobed = 0
        self._delivered(outcomes)
        self._keep_reserve()

    def _delivered(self, outcomes: list[Outcome], from_thread: bool = False) -> None:
        if from_thread:
            self._with_thread -= len(outcomes)
        self._deliver(outcomes)

    def _encode(self, batch: list[Pending]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        now_ms = time.time_ns() // 1_000_000
        for pending in batch:
            entry = {
                "v": audit.FORMAT_VERSION,
                "seq": self._seq,
                "prev": self._prev,
                "ts_ms": now_ms,
                "instance": self._instance,
                **pending.fields,
            }
            try:
                line, digest = audit.encode_entry(entry, encode=canonical_bytes)
                if len(line) > audit.MAX_LINE_BYTES:
                    raise InputError(
                        f"audit entry is larger than {audit.MAX_LINE_BYTES} bytes",
                        code="audit.entry_too_large",
                    )
            except CmcpError as exc:
                outcomes.append(Outcome(pending, error=exc))
                continue
            self._seq, self._prev, self._size = self._seq + 1, digest, self._size + len(line)
            record = audit.AuditRecord(entry=entry, hash=digest, line=line[:-1])
            outcomes.append(Outcome(pending, record=record, end_offset=self._size, line=line))
        return outcomes

    # -- on the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        self._keep_reserve()
        while batch := self._take():
            try:
                self._write(batch)
            except Exception as exc:
                self._stop_with(self._storage_failure(exc), batch)
                return
            self._call_loop(self._delivered, batch, True)
            self._keep_reserve()

    def _take(self) -> list[Outcome]:
        """The next group to write (empty: stopped and nothing left)."""
        held = self._held
        while not held and not self._stopping:
            if self.low_space is None:
                self._receive(self._queue.get())
                continue
            try:  # low on space: wake up now and then to see whether space was freed
                self._receive(self._queue.get(timeout=1.0))
            except queue.Empty:
                self._keep_reserve()
        self._receive_all(self._drain_queue())
        if self._max_delay and len(held) < self._max_entries and not self._stopping:
            deadline = time.monotonic() + self._max_delay
            while len(held) < self._max_entries and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._receive(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        count = min(len(held), self._max_entries)
        return [held.popleft() for _ in range(count)]

    def _receive(self, item: Any) -> None:
        if item is _STOP:
            self._stopping = True
        else:
            self._held.extend(item)

    def _receive_all(self, items: list[Any]) -> None:
        for item in items:
            self._receive(item)

    def _drain_queue(self) -> list[Any]:
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self._queue.get_nowait())
        return items

    def _stop_with(self, error: AuditUnavailable, batch: list[Outcome]) -> None:
        """Fail the batch, everything held and queued, and whatever arrives until stop()."""
        self.failure = error
        self._receive_all(self._drain_queue())
        failed = [o.pending for o in batch] + [o.pending for o in self._held]
        self._held.clear()
        self._call_loop(self._fail, error, failed)
        while not self._stopping:  # flush() may have checked failure just before it was set
            self._receive(self._queue.get())
            if self._held:
                self._call_loop(self._fail, error, [o.pending for o in self._held])
                self._held.clear()

    # -- either -------------------------------------------------------------------------

    def _write(self, outcomes: list[Outcome]) -> None:
        """One ``write`` and one ``fdatasync`` per group of at most ``max_entries`` lines
        (``every``: per entry)."""
        size = self._max_entries
        for group in (outcomes[i : i + size] for i in range(0, len(outcomes), size)):
            view = memoryview(b"".join(o.line for o in group))
            while view:
                view = view[os.write(self.fd, view) :]
            os.fdatasync(self.fd)
            self.syncs += 1
        if os.fstat(self.fd).st_nlink == 0:
            raise AuditUnavailable(
                f"the audit log {self._path} was removed while in use",
                code="audit.file_removed",
                hint="restore the audit volume and restart the gateway",
            )

    def _storage_failure(self, exc: Exception) -> AuditUnavailable:
        if isinstance(exc, AuditUnavailable):
            return exc
        if isinstance(exc, OSError):
            return storage_error(exc, str(self._path))
        return AuditUnavailable(  # a bug must fail the appends, not hang them
            f"the audit writer failed: {type(exc).__name__}: {exc}",
            code="audit.writer_failed",
            hint="restart the gateway; report this as a bug",
        )

    def _keep_reserve(self) -> None:
        """Renew the reserve past the end of the log when half of it is used."""
        with self._reserve_lock:
            if not self._reserve or self._reserved_to - self._size >= self._reserve // 2:
                return
            end = self._size
            try:
                space.reserve(self.fd, end, self._reserve)
            except OSError as exc:
                if exc.errno in space.UNSUPPORTED:
                    self._reserve = 0  # no fallocate here: a full disk shows at the write
                elif exc.errno in space.FULL and self.low_space is None:
                    self.low_space = storage_error(exc, str(self._path))
                    self._queue.put([])  # the thread starts polling for freed space
                    self._report_space(self.low_space)
                return
            self._reserved_to = end + self._reserve
            if self.low_space is not None:
                self.low_space = None
                self._report_space(None)

    def _report_space(self, error: AuditUnavailable | None) -> None:
        if self._space_changed is not None:
            self._call_loop(self._space_changed, error)

    def _call_loop(self, fn: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the event loop is gone, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)
