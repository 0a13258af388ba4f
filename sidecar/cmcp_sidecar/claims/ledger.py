"""Per-claim-session accounting, fed by the audit log.

A :class:`SessionLedger` collects, for one claim session, exactly what a claim commits to:
the transcript hash over the session's audit entries in chain order (fed entry by entry:
a long session or a busy stateless interval costs no memory per entry) and the counters of
:class:`cmcp_verifier.audit.SessionSummary` (reused, so the verifier recounts the same
way), plus the principal, the data classes seen and the first/last activity. The
:class:`~cmcp_sidecar.claims.issuer.ClaimIssuer` subscribes to the audit log, so ledgers
change in the same event-loop step as the chain's length and a snapshot of both is
consistent; the proxy does not update ledgers itself.

Data classes are the catalog ``labels`` of audited tools that appear in the ordering
(lowest first, default :data:`DATA_CLASS_ORDER`); a claim's ``data_class`` is the highest one
seen, or :data:`NO_DATA_CLASS` when no audited tool carried one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cmcp_verifier import audit

SessionKind = Literal["mcp-session", "stateless-interval"]
DATA_CLASS_ORDER = ("public", "internal", "confidential", "restricted", "top-secret")
NO_DATA_CLASS = "unclassified"


def highest_data_class(seen: set[str], order: Sequence[str] = DATA_CLASS_ORDER) -> str:
    """The highest class of ``seen`` in ``order``, or :data:`NO_DATA_CLASS`."""
    ranked = [c for c in order if c in seen]
    return ranked[-1] if ranked else NO_DATA_CLASS


@dataclass(frozen=True)
class LedgerSnapshot:
    """An immutable copy of a ledger, taken when a claim is made."""

    session_id: str
    kind: SessionKind
    principal: str | None
    transcript_hash: str
    entries: int  # audit entries the transcript covers
    counts: dict[str, int]
    data_class: str
    first_ms: int | None
    last_ms: int | None


@dataclass
class SessionLedger:
    """What one claim session has done so far (see the module docs)."""

    session_id: str
    kind: SessionKind
    data_class_order: Sequence[str] = DATA_CLASS_ORDER
    summary: audit.SessionSummary = field(default_factory=audit.SessionSummary)
    transcript: audit.TranscriptHasher = field(init=False)
    principal: str | None = None
    data_classes: set[str] = field(default_factory=set)
    first_ms: int | None = None
    last_ms: int | None = None
    last_seen: float = field(default_factory=time.monotonic)
    claimed_entries: int = 0  # entries covered by the latest claim
    closed: bool = False

    def __post_init__(self) -> None:
        self.transcript = audit.TranscriptHasher(self.session_id)

    def add(self, record: audit.AuditRecord) -> None:
        """Account for one durable audit record of this session."""
        self.summary.count(record)
        self.transcript.add(record.hash)
        entry: dict[str, Any] = record.entry
        if self.principal is None and isinstance(entry.get("principal"), str):
            self.principal = entry["principal"]
        labels = entry.get("labels")
        if isinstance(labels, list):
            self.data_classes.update(label for label in labels if label in self.data_class_order)
        ts = entry.get("ts_ms")
        if isinstance(ts, int):
            self.first_ms = ts if self.first_ms is None else self.first_ms
            self.last_ms = ts
        self.last_seen = time.monotonic()

    @property
    def entries(self) -> int:
        return self.transcript.entries

    @property
    def dirty(self) -> bool:
        """True when entries arrived since the latest claim."""
        return self.entries > self.claimed_entries

    def snapshot(self) -> LedgerSnapshot:
        return LedgerSnapshot(
            session_id=self.session_id,
            kind=self.kind,
            principal=self.principal,
            transcript_hash=self.transcript.digest(),
            entries=self.transcript.entries,
            counts=dict(self.summary.counts),
            data_class=highest_data_class(self.data_classes, self.data_class_order),
            first_ms=self.first_ms,
            last_ms=self.last_ms,
        )
