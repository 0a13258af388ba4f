"""Opening an existing chain: lock it, verify every line, and set aside a torn final record.

Blocking file I/O; :meth:`cmcp_sidecar.audit.AuditLog.open` runs it in a worker thread.
A final line without its newline is a torn write (the process died inside ``write``): those
bytes were never acknowledged, so they are copied to ``<log>.torn-<offset>`` (synced), then
truncated from the log, and the caller appends a ``recovery`` entry saying so. Every aside
file that no ``recovery`` entry of the chain names yet is reported again on the next open, so
a crash between truncating and recording still ends in a recovery entry. Anything else that
does not verify refuses to open, naming the line.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cmcp_verifier import audit
from cmcp_verifier.digests import ZERO_DIGEST, sha256_digest
from cmcp_verifier.errors import CmcpError

from .errors import AuditCorrupt, AuditUnavailable, storage_error

_READ_CHUNK = 1 << 20
_VERIFY_BATCH = 4096
_ASIDE_RE = re.compile(r"\.torn-(\d+)(?:\.\d+)?$")


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
    recorded: set[str] = field(default_factory=set)  # aside files named by recovery entries


@dataclass
class OpenedLog:
    """A locked, verified log file ready for appending."""

    fd: int
    path: Path
    state: ChainState
    unrecorded: list[TornTail]  # set-aside tails no recovery entry names yet


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
        if tail_at is not None:
            _set_aside_tail(fd, path, tail_at)
        unrecorded = _unrecorded_asides(path, state.recorded)
    except BaseException:
        os.close(fd)
        raise
    return OpenedLog(fd=fd, path=path, state=state, unrecorded=unrecorded)


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
                record = _decode(buf[start:end], line_no, path)
                pending.append((line_no, record))
                _note_recovery(record, state)
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


def _note_recovery(record: audit.AuditRecord, state: ChainState) -> None:
    torn = record.entry.get("torn") if record.entry["kind"] == "recovery" else None
    if isinstance(torn, dict) and isinstance(torn.get("saved_as"), str):
        state.recorded.add(torn["saved_as"])


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
        hint="the log was altered or damaged; keep it as evidence and start the gateway on a "
        "new audit.path"
        + (f" (the intact prefix is lines 1-{line_no - 1})" if line_no > 1 else ""),
    )


def _set_aside_tail(fd: int, path: Path, offset: int) -> None:
    """Copy the torn bytes aside (synced) before truncating them from the log."""
    try:
        size = os.fstat(fd).st_size
        torn = os.pread(fd, size - offset, offset)
        aside = _aside_name(path, offset, torn)
        if not aside.exists():
            with open(aside, "xb") as out:
                out.write(torn)
                out.flush()
                os.fsync(out.fileno())
            _fsync_dir(path.parent)
        os.ftruncate(fd, offset)
        os.fsync(fd)
    except OSError as exc:
        raise storage_error(exc, f"setting aside the torn tail of {path}") from None


def _aside_name(path: Path, offset: int, torn: bytes) -> Path:
    """``<log>.torn-<offset>``; an existing file with the same bytes (an earlier attempt that
    crashed before truncating) is reused, different bytes get a ``.<n>`` suffix."""
    base = path.with_name(f"{path.name}.torn-{offset}")
    candidate, n = base, 1
    while candidate.exists():
        if candidate.read_bytes() == torn:
            return candidate
        candidate = base.with_name(f"{base.name}.{n}")
        n += 1
    return candidate


def _unrecorded_asides(path: Path, recorded: set[str]) -> list[TornTail]:
    found = []
    try:
        for aside in path.parent.glob(f"{path.name}.torn-*"):
            match = _ASIDE_RE.search(aside.name)
            if match and aside.name not in recorded:
                data = aside.read_bytes()
                found.append(
                    TornTail(int(match.group(1)), len(data), sha256_digest(data), aside.name)
                )
    except OSError as exc:
        raise storage_error(exc, f"reading torn-tail files next to {path}") from None
    return sorted(found, key=lambda t: (t.offset, t.saved_as))


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
