"""The audit chain format: one JSON line per entry, each committing to its predecessor.

A line is exactly ``{"entry":<E>,"hash":"sha256:<hex>"}`` followed by ``\\n``, where ``<E>``
is the RFC 8785 form of the entry object and the hash is SHA-256 of ``<E>``'s bytes. The
fixed layout lets a verifier hash the exact bytes without re-canonicalising (100 000 entries
verify in well under a second) while every line stays canonical JSON that ``jq`` can read.

Every entry has ``v`` (1), ``seq`` (0, 1, 2, … without gaps), ``prev`` (the previous line's
hash; 64 zeros for seq 0), ``ts_ms``, ``kind`` and ``session``; tool calls (``kind: "call"``)
also carry ``decision`` (allow | deny | redact | error) and ``forwarded``. Other members are
the writer's business and are covered by the hash. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .canonical import canonical_bytes, parse_json
from .digests import ZERO_DIGEST, is_digest, sha256_digest
from .errors import CmcpError, InputError, VerificationError

FORMAT_VERSION = 1
_PREFIX = b'{"entry":'
_SUFFIX_RE = re.compile(rb',"hash":"(sha256:[0-9a-f]{64})"}$')
_SUFFIX_LEN = len(b',"hash":"sha256:"}') + 64
MAX_LINE_BYTES = 1 << 20
DECISIONS = ("allow", "deny", "redact", "error")
SUMMARY_KEYS = ("calls", "allow", "deny", "redact", "error", "blocked")


@dataclass(frozen=True)
class AuditRecord:
    """One decoded line: the entry, its hash, and the exact line bytes (without newline)."""

    entry: dict[str, Any]
    hash: str
    line: bytes


def encode_entry(
    entry: dict[str, Any], *, encode: Callable[[dict[str, Any]], bytes] = canonical_bytes
) -> tuple[bytes, str]:
    """Serialise an entry into its line (with trailing newline) and return (line, hash).

    ``encode`` must return the entry's RFC 8785 bytes (the gateway passes a faster encoder
    that gives the same bytes)."""
    body = encode(entry)
    digest = sha256_digest(body)
    return _PREFIX + body + b',"hash":"' + digest.encode() + b'"}\n', digest


def decode_line(line: bytes, *, where: str = "audit line") -> AuditRecord:
    """Decode one line (without its newline), checking layout and hash."""
    if len(line) > MAX_LINE_BYTES:
        raise InputError(
            f"{where} is longer than {MAX_LINE_BYTES} bytes", code="audit.line_too_long"
        )
    match = _SUFFIX_RE.search(line, len(line) - _SUFFIX_LEN) if len(line) >= _SUFFIX_LEN else None
    if not line.startswith(_PREFIX) or match is None:
        raise InputError(f"{where} does not have the audit line layout", code="audit.layout")
    body = line[len(_PREFIX) : match.start()]
    claimed = match.group(1).decode()
    if sha256_digest(body) != claimed:
        raise VerificationError(
            f"{where}: entry hash does not match its content", code="audit.entry_hash"
        )
    entry = parse_json(body, what=where)
    if not isinstance(entry, dict):
        raise InputError(f"{where}: entry is not an object", code="audit.layout")
    _check_entry_fields(entry, where)
    return AuditRecord(entry=entry, hash=claimed, line=line)


def _check_entry_fields(entry: dict[str, Any], where: str) -> None:
    if entry.get("v") != FORMAT_VERSION:
        raise InputError(f"{where}: unknown entry version {entry.get('v')!r}", code="audit.version")
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InputError(f"{where}: seq must be a non-negative integer", code="audit.field")
    if not isinstance(entry.get("prev"), str) or not isinstance(entry.get("kind"), str):
        raise InputError(f"{where}: prev and kind must be strings", code="audit.field")
    session = entry.get("session")
    if session is not None and not isinstance(session, str):
        raise InputError(f"{where}: session must be a string or null", code="audit.field")
    if entry["kind"] == "call" and entry.get("decision") not in DECISIONS:
        raise InputError(f"{where}: call entry has no valid decision", code="audit.field")


READ_CHUNK = 1 << 20


def iter_lines(source: bytes | BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line without newline) of a log given as bytes or as an open binary
    file, which is read in chunks (memory stays bounded by the longest line). A final line
    without newline is a torn write: :class:`VerificationError` ``audit.torn_tail``."""
    if isinstance(source, bytes):
        if source and not source.endswith(b"\n"):
            last = source.rfind(b"\n") + 1
            raise _torn_tail(last, source[last:], source.count(b"\n", 0, last) + 1)
        chunks: Iterable[bytes] = (source,)
    else:
        chunks = iter(lambda: source.read(READ_CHUNK), b"")
    number, offset, rest = 0, 0, b""
    for chunk in chunks:
        data = rest + chunk if rest else chunk
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            number += 1
            yield number, data[start:end]
            start = end + 1
        offset += start
        rest = data[start:]
        if len(rest) > MAX_LINE_BYTES:
            raise InputError(
                f"audit line {number + 1} is longer than {MAX_LINE_BYTES} bytes",
                code="audit.line_too_long",
            )
    if rest:
        raise _torn_tail(offset, rest, number + 1)


def _torn_tail(offset: int, rest: bytes, number: int) -> CmcpError:
    """The error for a last line without newline: a torn write if it starts like a record."""
    if not (rest.startswith(_PREFIX) or _PREFIX.startswith(rest)):
        return InputError(
            f"audit line {number} (at byte {offset}) does not have the audit line layout and "
            "has no final newline: not an audit log?",
            code="audit.layout",
        )
    return VerificationError(
        f"audit log ends in a torn (incomplete) record at byte {offset}",
        code="audit.torn_tail",
        hint="the writer was interrupted mid-record; the gateway truncates and records "
        "this on restart, a copied log must be taken after that",
    )


def iter_records(source: bytes | BinaryIO) -> Iterator[AuditRecord]:
    """Decode every line of a log (bytes or an open binary file), one at a time."""
    for number, line in iter_lines(source):
        yield decode_line(line, where=f"audit line {number}")


@dataclass
class SessionSummary:
    """What a claim commits to about one session's entries."""

    entry_hashes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUMMARY_KEYS, 0))

    def add(self, record: AuditRecord) -> None:
        self.entry_hashes.append(record.hash)
        self.count(record)

    def count(self, record: AuditRecord) -> None:
        """Update the counters only (a :class:`TranscriptHasher` can stand in for the list)."""
        entry = record.entry
        if entry["kind"] == "call":
            self.counts["calls"] += 1
            self.counts[entry["decision"]] += 1
            if entry.get("forwarded") is False:
                self.counts["blocked"] += 1


@dataclass
class ChainSummary:
    """Root, tip and length of a verified chain (segment), with per-session summaries."""

    root: str | None = None
    tip: str = ZERO_DIGEST
    length: int = 0
    first_seq: int = 0
    sessions: dict[str, SessionSummary] = field(default_factory=dict)
    tips: dict[int, str] = field(default_factory=dict)
    session_ids: set[str] = field(default_factory=set)


class ChainVerifier:
    """Checks records one at a time (links and sequence numbers) and summarises them.

    ``keep_tips_at`` lists chain lengths at which the tip should be remembered (a claim
    commits to the chain as it was when the claim was made); with ``summarise_sessions``
    False only the session ids are kept, not every entry hash (for very long logs).
    """

    def __init__(
        self,
        *,
        start_prev: str = ZERO_DIGEST,
        start_seq: int = 0,
        keep_tips_at: set[int] | None = None,
        summarise_sessions: bool = True,
    ) -> None:
        self.summary = ChainSummary(tip=start_prev, length=start_seq, first_seq=start_seq)
        self._keep_tips_at = keep_tips_at or set()
        self._summarise = summarise_sessions

    def add(self, record: AuditRecord) -> None:
        """Append one record; :class:`VerificationError` when it does not continue the chain."""
        summary, entry = self.summary, record.entry
        if entry["seq"] != summary.length:
            raise VerificationError(
                f"audit chain: expected seq {summary.length}, found {entry['seq']}",
                code="audit.sequence",
            )
        if entry["prev"] != summary.tip:
            raise VerificationError(
                f"audit chain broken at seq {entry['seq']}: prev is {entry['prev']}, the "
                f"previous entry hashes to {summary.tip}",
                code="audit.link",
            )
        if summary.root is None:
            summary.root = record.hash
        session = entry.get("session")
        if session is not None:
            summary.session_ids.add(session)
            if self._summarise:
                summary.sessions.setdefault(session, SessionSummary()).add(record)
        summary.tip = record.hash
        summary.length += 1
        if summary.length in self._keep_tips_at:
            summary.tips[summary.length] = record.hash


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    start_prev: str = ZERO_DIGEST,
    start_seq: int = 0,
    keep_tips_at: set[int] | None = None,
    summarise_sessions: bool = True,
) -> ChainSummary:
    """Check links and sequence numbers of consecutive records; summarise sessions (see
    :class:`ChainVerifier`). ``length`` of the result counts from ``start_seq``."""
    verifier = ChainVerifier(
        start_prev=start_prev,
        start_seq=start_seq,
        keep_tips_at=keep_tips_at,
        summarise_sessions=summarise_sessions,
    )
    for record in records:
        verifier.add(record)
    return verifier.summary


def verify_log_file(stream: BinaryIO) -> ChainSummary:
    """Verify a whole chain from an open file, streaming: every line re-hashed and decoded,
    links and sequence numbers from seq 0 (an empty log is refused). Keeps session ids, not
    per-session hashes."""
    verifier = ChainVerifier(summarise_sessions=False)
    for record in iter_records(stream):
        if verifier.summary.length == 0 and record.entry["seq"] != 0:
            raise InputError(
                "log does not start at seq 0 (a session export?); chain links "
                "cannot be checked without the prefix",
                code="audit.partial",
            )
        verifier.add(record)
    if verifier.summary.length == 0:
        raise InputError("audit log is empty: there is no chain to verify", code="audit.empty")
    return verifier.summary


def read_log(data: bytes) -> list[AuditRecord]:
    """Decode every line of a log (full chain or an export) held in memory."""
    return list(iter_records(data))


def session_transcript_hash(session_id: str, entry_hashes: list[str]) -> str:
    """The digest a claim's ``tool_transcript.hash`` carries for one session."""
    return sha256_digest(
        canonical_bytes(
            {"format": "cmcp-transcript/v1", "session": session_id, "entries": entry_hashes}
        )
    )


class TranscriptHasher:
    """:func:`session_transcript_hash` computed as entries arrive, in constant memory.

    The canonical form is ``{"entries":["<h1>","<h2>",…],"format":…,"session":…}`` (RFC 8785
    sorts the keys that way, and a digest string needs no escaping), so the hash can be fed
    one entry at a time and finished on a copy whenever a claim needs it.
    """

    def __init__(self, session_id: str) -> None:
        self._tail = (
            b'],"format":"cmcp-transcript/v1","session":' + canonical_bytes(session_id) + b"}"
        )
        self._hash = hashlib.sha256(b'{"entries":[')
        self.entries = 0

    def add(self, entry_hash: str) -> None:
        """Append one entry hash; :class:`InputError` unless it is a digest string."""
        if not is_digest(entry_hash):
            raise InputError(f"not an entry hash: {entry_hash!r}", code="audit.entry_hash")
        quoted = b'"' + entry_hash.encode() + b'"'
        self._hash.update(quoted if not self.entries else b"," + quoted)
        self.entries += 1

    def digest(self) -> str:
        """The transcript hash of the entries so far."""
        final = self._hash.copy()
        final.update(self._tail)
        return "sha256:" + final.hexdigest()
