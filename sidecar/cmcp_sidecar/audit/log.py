"""The gateway's durable, hash-chained audit log (one chain per gateway instance).

Usage (all on the event loop; entries are written and synced on a dedicated writer thread,
or on the loop itself when nothing else waits — see :mod:`.writer`)::

    log = await AuditLog.open("./audit", fsync="batch", instance_id="gw-1")
    appended = await log.append(CallEntry(...))   # durable (fdatasync'd) when it returns
    log.root, log.tip, log.length                 # the chain as far as it is durable
    async for line in log.export(session_id=sid): ...   # GET /audit/export?session_id=
    await log.close()

``open`` verifies the existing chain (:mod:`cmcp_verifier.audit`) and continues it; a torn
final record (a crash inside ``write``) is saved to ``audit.log.torn-<offset>``, truncated and
recorded by a ``recovery`` entry (``log.torn`` lists what this open recorded); any other
damage raises :class:`AuditCorrupt` naming the line. ``fsync="every"`` syncs each entry on
its own; ``"batch"`` lets entries that arrive together share one write and one sync (group
commit), waiting at most ``batch_max_delay_ms`` for companions (0: no waiting — entries that
arrive during a sync share the next one).

Storage failures (disk full, read-only, permission, file removed, I/O error) raise a typed
:class:`AuditUnavailable` to every pending and later append; ``healthy`` turns false and
``failure`` says why (for ``/readyz``). The log stays failed until it is reopened: after a
failed sync the kernel may have dropped the data, so only a fresh verification is safe.

Before a call is forwarded the gateway asks :meth:`AuditLog.check_writable`: it fails when the
log has failed, when the disk space reserved ahead of the log cannot be renewed (the volume is
full, ``low_space``; see :mod:`.space`), or when a zero-byte write to the log fails (a file
system shut down after an I/O error, a log made immutable), so no call goes out whose entry
could not be written.

Observers registered with :meth:`AuditLog.subscribe` see every durable record, in chain
order, before the appender's ``await`` returns and in the same loop step that moves
``length`` — so a claim snapshot of (chain state, session ledger) is always consistent.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cmcp_verifier import audit
from cmcp_verifier.digests import ZERO_DIGEST
from cmcp_verifier.errors import CmcpError

from .entries import CHAIN_FIELDS, AuditFields
from .errors import AuditUnavailable, storage_error
from .recovery import TornTail, open_log
from .space import DEFAULT_RESERVE_BYTES
from .writer import ChainWriter, Outcome, Pending

FsyncMode = Literal["every", "batch"]
Observer = Callable[[audit.AuditRecord], None]
LOG_FILE = "audit.log"
_EXPORT_CHUNK = 1 << 20
logger = logging.getLogger("cmcp.audit")


@dataclass(frozen=True)
class Appended:
    """Where an entry landed in the chain."""

    seq: int
    hash: str


class AuditLog:
    """An open audit chain. Create with :meth:`open`; see the module docs."""

    def __init__(self, path: Path, instance_id: str, torn: tuple[TornTail, ...]) -> None:
        self.path = path
        self.instance_id = instance_id
        self.torn = torn  # torn tails open() set aside and recorded
        self.root: str | None = None
        self.tip: str = ZERO_DIGEST
        self.length = 0
        self.failure: AuditUnavailable | None = None
        self.low_space: AuditUnavailable | None = None  # the reserve cannot be renewed
        self._size = 0
        self._observers: list[Observer] = []
        self._writer: ChainWriter | None = None

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        instance_id: str,
        fsync: FsyncMode = "batch",
        batch_max_delay_ms: float = 0,
        batch_max_entries: int = 256,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> AuditLog:
        """Open (or create) ``directory/audit.log``, verify it, and start the writer."""
        if fsync not in ("every", "batch"):
            raise ValueError(f"fsync must be 'every' or 'batch', not {fsync!r}")
        if batch_max_entries < 1 or batch_max_delay_ms < 0:
            raise ValueError("batch_max_entries must be >= 1 and batch_max_delay_ms >= 0")
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(None, open_log, Path(directory) / LOG_FILE)
        log = cls(opened.path, instance_id, tuple(opened.unrecorded))
        state = opened.state
        log.root, log.tip, log.length, log._size = state.root, state.tip, state.length, state.size
        log._writer = ChainWriter(
            fd=opened.fd,
            path=opened.path,
            state=state,
            instance_id=instance_id,
            group_commit=fsync == "batch",
            max_delay_s=batch_max_delay_ms / 1000,
            max_entries=batch_max_entries,
            loop=loop,
            deliver=log._on_written,
            fail=log._on_failure,
            space_changed=log._on_space,
            reserve_bytes=reserve_bytes,
        )
        log._writer.start()
        try:
            for torn in opened.unrecorded:
                await log.append(_recovery_fields(torn))
        except BaseException:
            await log.close()
            raise
        return log

    @property
    def healthy(self) -> bool:
        """False once storage failed or the log was closed."""
        return self.failure is None

    @property
    def accepting(self) -> bool:
        """Whether new calls may be forwarded: healthy and with disk space in reserve."""
        return self.failure is None and self.low_space is None

    def check_writable(self) -> None:
        """Raise :class:`AuditUnavailable` unless an entry written now would be durable as far
        as can be known before writing it (see the module docs); cheap: one system call."""
        if self.failure is not None:
            raise self.failure.again()
        if self.low_space is not None:
            raise self.low_space.again()
        writer = self._writer
        if writer is None:
            raise AuditUnavailable("the audit log is closed", code="audit.closed")
        try:
            os.write(writer.fd, b"")  # the file system's write checks, nothing written
        except OSError as exc:
            self.failure = storage_error(exc, str(self.path))
            raise self.failure.again() from None

    @property
    def syncs(self) -> int:
        """How many write+sync rounds made entries durable since open (for metrics)."""
        return sum(self.syncs_by_place().values())

    def syncs_by_place(self) -> dict[str, int]:
        """Write+sync rounds since open, on the event loop and on the writer thread."""
        writer = self._writer
        if writer is None:
            return {"loop": 0, "thread": 0}
        return {"loop": writer.syncs_here, "thread": writer.syncs - writer.syncs_here}

    def sync_here_when(self, idle: Callable[[int], bool] | None) -> None:
        """Let the event loop write and sync a group of entries itself when ``idle(entries)``
        says every request in flight waits for that group (None: always on the thread)."""
        if self._writer is not None:
            self._writer.idle = idle

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer(record)`` for every entry made durable from now on."""
        self._observers.append(observer)

    async def append(
        self,
        entry: AuditFields | Mapping[str, Any],
        *,
        then: Callable[[Appended], None] | None = None,
    ) -> Appended:
        """Append an entry; returns once it is durable. Raises :class:`AuditUnavailable`
        when storage failed, :class:`cmcp_verifier.errors.InputError` for an entry without a
        canonical form, ``ValueError`` for an entry that breaks the format's rules.

        Once submitted the entry is written even if the caller is cancelled while it waits;
        ``then(appended)`` runs when the entry is durable in either case (work that must
        follow every durable entry, without the cost of shielding the caller)."""
        fields = dict(entry) if isinstance(entry, Mapping) else entry.fields()
        _check_fields(fields)
        if self._writer is None:
            raise AuditUnavailable("the audit log is not open", code="audit.closed")
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._writer.submit(Pending(fields, future, then))
        return await future

    async def export(self, session_id: str | None = None) -> AsyncIterator[bytes]:
        """Lines (with newline) of the durable chain, or of one session's entries only."""
        end = self._size
        loop = asyncio.get_running_loop()
        try:
            fd = await loop.run_in_executor(None, os.open, self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise storage_error(exc, str(self.path)) from None
        try:
            offset, rest = 0, b""
            while offset < end:
                chunk = await loop.run_in_executor(
                    None, os.pread, fd, min(_EXPORT_CHUNK, end - offset), offset
                )
                if not chunk:
                    break
                offset += len(chunk)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if session_id is None or _session_of(line) == session_id:
                        yield line + b"\n"
        except OSError as exc:
            raise storage_error(exc, str(self.path)) from None
        finally:
            os.close(fd)

    async def close(self) -> None:
        """Write what is queued, stop the writer and release the file (and its lock)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.flush()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        os.close(writer.fd)
        if self.failure is None:
            self.failure = AuditUnavailable("the audit log is closed", code="audit.closed")

    async def __aenter__(self) -> AuditLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_written(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            record, future = outcome.record, outcome.pending.future
            if record is None:
                if not future.done():
                    future.set_exception(outcome.error or AuditUnavailable("entry refused"))
                continue
            if self.root is None:
                self.root = record.hash
            self.tip, self.length, self._size = record.hash, self.length + 1, outcome.end_offset
            for observer in self._observers:
                try:
                    observer(record)
                except Exception:  # an observer's bug must not hold up durable appends
                    logger.exception(
                        "audit observer %r failed on seq %d", observer, self.length - 1
                    )
            appended = Appended(record.entry["seq"], record.hash)
            then = outcome.pending.then
            if then is not None:
                try:
                    then(appended)
                except Exception:  # a bug there must not hold up this or other appends
                    logger.exception("audit follow-up failed on seq %d", appended.seq)
            if not future.done():
                future.set_result(appended)

    def _on_space(self, error: AuditUnavailable | None) -> None:
        self.low_space = error
        if error is not None:
            logger.error(
                "audit storage is full: no new calls are admitted until space is freed",
                extra={"event": "fail_closed", "reason": error.code, "detail": error.message},
            )
        else:
            logger.info("audit storage has space again", extra={"event": "recovered"})

    def _on_failure(self, error: AuditUnavailable, pending: list[Pending]) -> None:
        if self.failure is None:
            logger.error(
                "audit storage failed: nothing is forwarded until the gateway is restarted",
                extra={"event": "fail_closed", "reason": error.code, "detail": error.message},
            )
        self.failure = error
        for item in pending:
            if not item.future.done():
                item.future.set_exception(error.again())


def _check_fields(fields: dict[str, Any]) -> None:
    """The rules :func:`cmcp_verifier.audit.decode_line` enforces when the chain is read back
    (an entry breaking them would make the log refuse to open after a restart)."""
    reserved = CHAIN_FIELDS & fields.keys()
    if reserved:
        raise ValueError(f"audit entry may not set chain fields {sorted(reserved)}")
    kind, session = fields.get("kind"), fields.get("session")
    if not isinstance(kind, str) or not kind:
        raise ValueError("audit entry needs a non-empty string 'kind'")
    if session is not None and not isinstance(session, str):
        raise ValueError("audit entry 'session' must be a string or None")
    if kind == "call" and fields.get("decision") not in audit.DECISIONS:
        raise ValueError(f"call entry needs a decision in {audit.DECISIONS}")


def _session_of(line: bytes) -> str | None:
    try:
        session = audit.decode_line(line).entry.get("session")
    except CmcpError:
        return None
    return session if isinstance(session, str) else None


def _recovery_fields(torn: TornTail) -> dict[str, Any]:
    return {
        "kind": "recovery",
        "session": None,
        "reason": "torn_tail",
        "torn": {
            "offset": torn.offset,
            "bytes": torn.length,
            "digest": torn.digest,
            "saved_as": torn.saved_as,
        },
    }
