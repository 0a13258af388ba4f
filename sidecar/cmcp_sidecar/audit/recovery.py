"""Opening an existing chain: lock it, verify every line, and set aside a torn final record.

Blocking file I/O; :meth:`cmcp_sidecar.audit.AuditLog.open` runs it in a worker thread.
A final line without its newline is a torn write (the process died inside ``write``): those
bytes were never acknowledged, so they are copied to ``<log>.torn-<offset>``, truncated from
the log, and the caller appends a ``recovery`` entry saying so. Anything else that does not
verify refuses to open, naming the line.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from cmcp_verifier import audit
from cmcp_verifier.digests import ZERO_DIGEST, sha256_digest
from cmcp_verifier.errors import CmcpError

from .errors import AuditCorrupt, AuditUnavailable, storage_error

_READ_CHUNK = 1 << 20
_VERIFY_BATCH = 4096


@dataclass(frozen=True)
class TornTail:
    """Bytes of an interrupted final record, moved aside on open."""

    offset: int
    length: int
    digest: str
    saved_as: str


@dataclass
class ChainState:
    """Where an open chain stands: the next entry continues from here."""

    root: str | None = None
    tip: str = ZERO_DIGEST
    length: int = 0
    size: int = 0  # bytes of verified, complete lines


@dataclass
class OpenedLog:
    """A locked, verified log file ready for appending."""

    fd: int
    path: Path
    state: ChainState
    torn: TornTail | None


def open_log(path: Path) -> OpenedLog:
    """Create or open ``path``, lock it, verify it and truncate a torn tail."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise storage_error(exc, str(path)) from None
    try:
        _lock(fd, path)
        if created:
            _fsync_dir(path.parent)
        state, tail_at = _verify(fd, path)
        torn = _set_aside_tail(fd, path, tail_at) if tail_at is not None else None
    except BaseException:
        os.close(fd)
        raise
    return OpenedLog(fd=fd, path=path, state=state, torn=torn)


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise AuditUnavailable(
            f"{path} is in use by another gateway process",
            code="audit.locked",
            hint="one chain per gateway instance: give each instance its own audit.path",
        ) from None


def _verify(fd: int, path: Path) -> tuple[ChainState, int | None]:
    """Stream the log, verifying it; return the state and the torn tail's offset, if any."""
    state = ChainState()
    pending: list[tuple[int, audit.AuditRecord]] = []
    offset = 0
    line_no = 0
    buf = b""
    try:
        while chunk := os.pread(fd, _READ_CHUNK, offset + len(buf)):
            buf += chunk
            start = 0
            while (end := buf.find(b"\n", start)) >= 0:
                line_no += 1
                pending.append((line_no, _decode(buf[start:end], line_no, path)))
                start = end + 1
            offset += start
            buf = buf[start:]
            if len(buf) > audit.MAX_LINE_BYTES:
                raise AuditCorrupt(
                    f"{path}: line {line_no + 1} is longer than {audit.MAX_LINE_BYTES} bytes",
                    code="audit.corrupt",
                )
            if len(pending) >= _VERIFY_BATCH:
                _verify_batch(pending, state, path)
                pending = []
    except OSError as exc:
        raise storage_error(exc, str(path)) from None
    _verify_batch(pending, state, path)
    state.size = offset
    return state, (offset if buf else None)


def _decode(line: bytes, line_no: int, path: Path) -> audit.AuditRecord:
    try:
        return audit.decode_line(line, where=f"line {line_no}")
    except CmcpError as exc:
        raise _corrupt(path, line_no, exc) from None


def _verify_batch(
    pending: list[tuple[int, audit.AuditRecord]], state: ChainState, path: Path
) -> None:
    if not pending:
        return
    try:
        summary = audit.verify_chain(
            (r for _, r in pending), start_prev=state.tip, start_seq=state.length
        )
    except CmcpError as exc:
        raise _locate_break(pending, state, path, exc) from None
    if state.root is None:
        state.root = summary.root
    state.tip, state.length = summary.tip, summary.length


def _locate_break(
    pending: list[tuple[int, audit.AuditRecord]], state: ChainState, path: Path, exc: CmcpError
) -> AuditCorrupt:
    """Re-check one record at a time to name the first line that breaks the chain."""
    prev, seq = state.tip, state.length
    for line_no, record in pending:
        try:
            audit.verify_chain([record], start_prev=prev, start_seq=seq)
        except CmcpError as found:
            return _corrupt(path, line_no, found)
        prev, seq = record.hash, seq + 1
    return _corrupt(path, pending[0][0], exc)


def _corrupt(path: Path, line_no: int, exc: CmcpError) -> AuditCorrupt:
    return AuditCorrupt(
        f"{path}: line {line_no} breaks the audit chain: {exc.message}",
        code="audit.corrupt",
        hint=f"the log was altered or damaged; keep it as evidence and start the gateway on a "
        f"new audit.path (the intact prefix is lines 1-{line_no - 1})",
    )


def _set_aside_tail(fd: int, path: Path, offset: int) -> TornTail:
    try:
        size = os.fstat(fd).st_size
        torn = os.pread(fd, size - offset, offset)
        aside = _free_name(path, offset)
        with open(aside, "xb") as out:
            out.write(torn)
            out.flush()
            os.fsync(out.fileno())
        os.ftruncate(fd, offset)
        os.fsync(fd)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise storage_error(exc, f"setting aside the torn tail of {path}") from None
    return TornTail(
        offset=offset, length=len(torn), digest=sha256_digest(torn), saved_as=aside.name
    )


def _free_name(path: Path, offset: int) -> Path:
    base = path.with_name(f"{path.name}.torn-{offset}")
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}.{n}")
        n += 1
    return candidate


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
