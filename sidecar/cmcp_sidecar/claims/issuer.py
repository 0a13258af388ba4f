"""When claims are made, where they go, and how they are found again.

Usage, in the gateway::

    issuer = ClaimIssuer(audit=log, attestor=attestor, settings=settings,
                         sink=DirectorySink(cfg.claims.dir), mode="session",
                         interval_seconds=300, idle_timeout_seconds=900)
    await issuer.start()
    sid = issuer.claim_session_id(mcp_session_id=hdr_or_None, principal=principal)
    # … audit entries carry session=sid; every response gets "Cmcp-Claim-Session: sid" …
    issuer.policy_status = PolicyStatus(...)        # on reload / catalog drift
    await issuer.close_session(sid)                 # DELETE /mcp, POST /sessions/{id}/close
    await issuer.latest(sid)                        # GET /claims/{id} (bytes or None)
    await issuer.claim_now(sid, nonce=b"…")         # a fresh, unstored claim (nonce optional)
    await issuer.close()        # final claims for open sessions; before attestor and log

Claim sessions: in the 2025 protocol revisions, the MCP session (``Mcp-Session-Id``); in the
stateless 2026-07-28 revision, one principal's traffic within an interval of
``interval_seconds`` (the id is derived per principal and interval, e.g.
``st-20260728t101500z-<16 hex>``, lowercase so it can name files and objects).
:meth:`claim_session_id` returns None for an MCP session that was already closed (its
requests are audited without a session).

Modes: ``session`` — a claim when a session ends (close, DELETE, idle timeout, or the end of a
stateless interval); ``call`` — additionally a claim after every ``tools/call``; ``interval``
— additionally a claim every ``interval_seconds`` for every session with new entries. Each
claim covers the session from its first entry up to the chain length at issue time, so the
newest claim of a session subsumes the earlier ones. Entries that land after a session's
final claim (calls still in flight at close) trigger one more claim.

Claims are built, signed and stored off the request path by one worker task; the ledgers are
fed by the audit log (see :mod:`.ledger`). A failing sink is retried with backoff; unwritten
claims are served from memory meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cmcp_verifier import audit
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.errors import CmcpError

from ..attest.attestor import Attestor
from ..audit.log import AuditLog
from .builder import ChainPoint, ClaimSettings, PolicyStatus, build_claim, encode_claim
from .ledger import DATA_CLASS_ORDER, SessionKind, SessionLedger
from .sink import ClaimSink, ClaimSinkError

ClaimMode = Literal["session", "call", "interval"]
CLAIM_MODES = ("session", "call", "interval")
log = logging.getLogger("cmcp.claims")
_CLOSED_LEDGERS_KEPT = 1024
_CLOSED_IDS_KEPT = 65536
#: Sessions whose newest claim is indexed in memory (the most recently claimed); an older
#: session's newest claim is looked up in the sink by name when asked for.
INDEX_KEPT = 16384
_CLOSED_LEDGER_SECONDS = 60.0


class ClaimError(CmcpError):
    """A claim cannot be made (unknown session, no evidence yet)."""

    code = "claims.unavailable"


@dataclass
class IssuerStats:
    """Counters for /metrics."""

    issued: dict[str, int] = field(default_factory=dict)  # by reason, once stored (or queued)
    failed: int = 0  # build/sign failures
    write_failures: int = 0
    unwritten: int = 0
    open_sessions: int = 0


@dataclass(slots=True)
class _Indexed:
    name: str
    length: int
    data: bytes | None = None  # held in memory until the sink has it


@dataclass
class _Job:
    reason: str
    waiters: list[asyncio.Future[bytes | None]] = field(default_factory=list)


@dataclass
class _Unwritten:
    session_id: str
    name: str
    data: bytes
    attempts: int = 1
    next_try: float = 0.0


def _length_of(numbered: re.Pattern[str], name: str) -> int:
    match = numbered.fullmatch(name)
    return int(match[1]) if match else -1


_HASHED = re.compile(r"-[0-9a-f]{10}$")  # how claim_name ends a changed session id


def claim_name(session_id: str, length: int) -> str:
    """Sink name of a session's claim at chain length ``length``."""
    safe = re.sub(r"[^a-z0-9]+", "-", session_id.lower()).strip("-")[:80].strip("-")
    if safe != session_id:
        digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        safe = f"{safe}-{digest}" if safe else f"s-{digest}"
    return f"{safe}-{length}"


class ClaimIssuer:
    """Issues claims per the configured mode; see the module docs."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        attestor: Attestor,
        settings: ClaimSettings,
        sink: ClaimSink,
        mode: ClaimMode = "session",
        interval_seconds: float = 300,
        idle_timeout_seconds: float = 900,
        data_class_order: tuple[str, ...] = DATA_CLASS_ORDER,
    ) -> None:
        if mode not in CLAIM_MODES:
            raise ValueError(f"claims.mode must be one of {CLAIM_MODES}, not {mode!r}")
        if interval_seconds <= 0 or idle_timeout_seconds <= 0:
            raise ValueError("claims.interval_seconds and idle_timeout_seconds must be > 0")
        self.audit, self.attestor, self.settings, self.sink = audit, attestor, settings, sink
        self.mode: ClaimMode = mode
        self.interval = interval_seconds
        self.idle_timeout = idle_timeout_seconds
        self.data_class_order = data_class_order
        self.policy_status = PolicyStatus()
        # session id → gateway.shadow of its claims (set when a candidate bundle is shadowed)
        self.shadow_summary: Callable[[str], dict[str, Any] | None] | None = None
        # Told the id of every stateless claim session that ends (interval over, or closed):
        # that id is never used again. An MCP session may go on after its claim session was
        # closed (idle); its end comes from the proxy.
        self.stateless_ended: Callable[[str], None] | None = None
        self.stats = IssuerStats()
        self._epoch = hashlib.sha256(os.urandom(32))  # keeps principals out of session ids
        self._ledgers: dict[str, SessionLedger] = {}
        self._closed_ledgers: OrderedDict[str, tuple[float, SessionLedger]] = OrderedDict()
        self._closed_ids: OrderedDict[str, None] = OrderedDict()
        self._stateless: dict[tuple[str, int], tuple[str, int]] = {}  # (principal, start)
        self._stateless_end: dict[str, float] = {}
        self._index: OrderedDict[str, _Indexed] = OrderedDict()
        self._sink_may_hold_more = False  # a miss may then still be in the sink
        self._unwritten: list[_Unwritten] = []
        self._jobs: dict[str, _Job] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_interval = time.monotonic() + interval_seconds
        audit.subscribe(self._observe)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the index of stored claims and start the worker and the timer."""
        await self._load_index()
        self._tasks = [
            asyncio.create_task(self._worker(), name="cmcp-claims-worker"),
            asyncio.create_task(self._ticker(), name="cmcp-claims-timer"),
        ]

    async def close(self) -> None:
        """Issue final claims for open sessions, flush writes, stop."""
        for session_id, ledger in list(self._ledgers.items()):
            if ledger.dirty:
                self._enqueue(session_id, "shutdown")
        await self._drain()
        await self._retry_unwritten(force=True)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- the proxy's API -------------------------------------------------------------------

    def claim_session_id(
        self, *, mcp_session_id: str | None, principal: str, now: float | None = None
    ) -> str | None:
        """The claim session of a request (see the module docs); None for a closed session."""
        if mcp_session_id is not None:
            return None if mcp_session_id in self._closed_ids else mcp_session_id
        t_ms = int((time.time() if now is None else now) * 1000)
        interval_ms = max(1, int(self.interval * 1000))
        start_ms = t_ms // interval_ms * interval_ms
        key = (principal, start_ms)
        sid, generation = self._stateless.get(key, ("", -1))
        if sid and sid not in self._closed_ids:
            return sid
        while True:  # a session closed early (POST close) is followed by a new one
            generation += 1
            sid = self._stateless_id(principal, start_ms, generation)
            if sid not in self._closed_ids:
                break
        self._stateless[key] = (sid, generation)
        self._stateless_end[sid] = time.monotonic() + (start_ms + interval_ms - t_ms) / 1000
        return sid

    def _stateless_id(self, principal: str, start_ms: int, generation: int) -> str:
        digest = self._epoch.copy()
        digest.update(f"\0{principal}\0{start_ms}\0{generation}".encode("utf-8", "surrogatepass"))
        stamp = dt.datetime.fromtimestamp(start_ms // 1000, dt.UTC).strftime("%Y%m%dt%H%M%Sz")
        return f"st-{stamp}-{digest.hexdigest()[:16]}"

    async def close_session(self, session_id: str, reason: str = "close") -> bytes | None:
        """End a session and return its final claim (None if it never had entries)."""
        ledger = self._ledgers.pop(session_id, None)
        if ledger is None:
            return await self.latest(session_id)
        ledger.closed = True
        self._remember_closed(session_id, ledger)
        if not ledger.dirty:
            return await self.latest(session_id)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._enqueue(session_id, reason).waiters.append(future)
        return await future

    async def latest(self, session_id: str) -> bytes | None:
        """The newest claim of a session, for ``GET /claims/{session_id}``."""
        indexed = self._index.get(session_id) or await self._stored(session_id)
        if indexed is None:
            return None
        if indexed.data is not None:
            return indexed.data
        return await self.sink.get(indexed.name)

    async def claim_now(self, session_id: str, nonce: bytes = b"") -> bytes:
        """A fresh claim of an open (or just closed) session, not stored; with ``nonce`` it
        rests on new evidence bound to that nonce (``GET /claims/{id}?nonce=``)."""
        bound = await self.attestor.evidence_for_nonce(nonce)
        ledger = self._find_ledger(session_id)
        if ledger is None:
            raise ClaimError(
                f"no open or recent claim session {session_id!r}", code="claims.unknown_session"
            )
        claim = build_claim(
            identity=self.attestor.identity,
            settings=self.settings,
            policy=self.policy_status,
            ledger=ledger.snapshot(),
            chain=self._chain_point(),
            attestation=bound,
            stale=not self.attestor.fresh,
            reason="nonce",
            shadow=self._shadow(session_id),
        )
        return encode_claim(claim)

    def _shadow(self, session_id: str) -> dict[str, Any] | None:
        return self.shadow_summary(session_id) if self.shadow_summary is not None else None

    def open_sessions(self) -> list[str]:
        return sorted(self._ledgers)

    # -- audit observer --------------------------------------------------------------------

    def _observe(self, record: audit.AuditRecord) -> None:
        session_id = record.entry.get("session")
        if not isinstance(session_id, str):
            return
        ledger = self._find_ledger(session_id)
        if ledger is None:
            if session_id in self._closed_ids:
                log.warning(
                    "audit entry %s for long-closed session %s: in no claim",
                    record.entry["seq"],
                    session_id,
                )
                return
            kind: SessionKind = (
                "stateless-interval" if session_id in self._stateless_end else "mcp-session"
            )
            ledger = SessionLedger(session_id, kind, data_class_order=self.data_class_order)
            self._ledgers[session_id] = ledger
            self.stats.open_sessions = len(self._ledgers)
        ledger.add(record)
        if ledger.closed:
            self._enqueue(session_id, "late")
        elif self.mode == "call" and record.entry.get("kind") == "call":
            self._enqueue(session_id, "call")

    def _find_ledger(self, session_id: str) -> SessionLedger | None:
        ledger = self._ledgers.get(session_id)
        if ledger is None and session_id in self._closed_ledgers:
            ledger = self._closed_ledgers[session_id][1]
        return ledger

    def _remember_closed(self, session_id: str, ledger: SessionLedger) -> None:
        if self.stateless_ended is not None and ledger.kind == "stateless-interval":
            self.stateless_ended(session_id)
        self._closed_ledgers[session_id] = (time.monotonic(), ledger)
        self._closed_ids[session_id] = None
        while len(self._closed_ledgers) > _CLOSED_LEDGERS_KEPT:
            self._closed_ledgers.popitem(last=False)
        while len(self._closed_ids) > _CLOSED_IDS_KEPT:
            self._closed_ids.popitem(last=False)
        self._stateless_end.pop(session_id, None)
        self.stats.open_sessions = len(self._ledgers)

    # -- issuing ---------------------------------------------------------------------------

    def _enqueue(self, session_id: str, reason: str) -> _Job:
        """Queue a claim for the session (coalescing with one already queued)."""
        job = self._jobs.get(session_id)
        if job is None:
            job = self._jobs[session_id] = _Job(reason)
            self._queue.put_nowait(session_id)
        job.reason = reason
        return job

    async def _worker(self) -> None:
        while True:
            session_id = await self._queue.get()
            job = self._jobs.pop(session_id)
            try:
                data = await self._issue(session_id, job.reason)
            except Exception as exc:  # a claim failure must not stop the worker
                self.stats.failed += 1
                log.error("claim for session %s failed: %s", session_id, exc)
                for waiter in job.waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for waiter in job.waiters:
                    if not waiter.done():
                        waiter.set_result(data)
            finally:
                self._queue.task_done()

    async def _issue(self, session_id: str, reason: str) -> bytes | None:
        ledger = self._find_ledger(session_id)
        if ledger is None:
            return await self.latest(session_id)
        # One synchronous step: the ledger and the chain position agree (see ledger.py).
        snapshot, chain = ledger.snapshot(), self._chain_point()
        bound, stale = self.attestor.current, not self.attestor.fresh
        policy = self.policy_status
        ledger.claimed_entries = snapshot.entries
        claim = await asyncio.to_thread(
            build_claim,
            identity=self.attestor.identity,
            settings=self.settings,
            policy=policy,
            ledger=snapshot,
            chain=chain,
            attestation=bound,
            stale=stale,
            reason=reason,
            shadow=self._shadow(session_id),
        )
        data = await asyncio.to_thread(encode_claim, claim)
        name = claim_name(session_id, chain.length)
        indexed = _Indexed(name, chain.length, data)
        current = self._index.get(session_id)
        if current is None or current.length <= chain.length:
            self._remember_index(session_id, indexed)
        await self._store(session_id, name, data, indexed)
        self.stats.issued[reason] = self.stats.issued.get(reason, 0) + 1
        return data

    async def _store(self, session_id: str, name: str, data: bytes, indexed: _Indexed) -> None:
        try:
            await self.sink.put(name, data)
        except ClaimSinkError as exc:
            self.stats.write_failures += 1
            log.error("%s (will retry)", exc.render())
            self._unwritten.append(_Unwritten(session_id, name, data, next_try=time.monotonic()))
            self.stats.unwritten = len(self._unwritten)
            return
        indexed.data = None

    async def _retry_unwritten(self, *, force: bool = False) -> None:
        now = time.monotonic()
        for item in list(self._unwritten):
            if not force and item.next_try > now:
                continue
            try:
                await self.sink.put(item.name, item.data)
            except ClaimSinkError as exc:
                item.attempts += 1
                item.next_try = now + min(2.0**item.attempts, 60.0)
                self.stats.write_failures += 1
                log.warning("claim %s still unwritten: %s", item.name, exc.message)
                continue
            self._unwritten.remove(item)
            indexed = self._index.get(item.session_id)
            if indexed is not None and indexed.name == item.name:
                indexed.data = None
        self.stats.unwritten = len(self._unwritten)

    async def _drain(self) -> None:
        if self._tasks:
            await self._queue.join()

    def _chain_point(self) -> ChainPoint:
        return ChainPoint(root=self.audit.root, tip=self.audit.tip, length=self.audit.length)

    # -- timers ----------------------------------------------------------------------------

    async def _ticker(self) -> None:
        period = max(0.05, min(1.0, self.interval / 4, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self._tick(time.monotonic())
            await self._retry_unwritten()

    def _tick(self, now: float) -> None:
        for session_id, ledger in list(self._ledgers.items()):
            end = self._stateless_end.get(session_id)
            if end is not None and now >= end:
                self._close_in_background(session_id, "interval_end")
            elif ledger.kind == "mcp-session" and now - ledger.last_seen >= self.idle_timeout:
                self._close_in_background(session_id, "idle")
        for session_id, end in list(self._stateless_end.items()):
            if now >= end and session_id not in self._ledgers:
                del self._stateless_end[session_id]  # an interval without audited entries
        self._stateless = {k: v for k, v in self._stateless.items() if v[0] in self._stateless_end}
        if self.mode == "interval" and now >= self._next_interval:
            self._next_interval = now + self.interval
            for session_id, ledger in self._ledgers.items():
                if ledger.dirty:
                    self._enqueue(session_id, "interval")
        while self._closed_ledgers:
            first, (closed_at, _) = next(iter(self._closed_ledgers.items()))
            if now - closed_at < _CLOSED_LEDGER_SECONDS:
                break
            del self._closed_ledgers[first]

    def _close_in_background(self, session_id: str, reason: str) -> None:
        ledger = self._ledgers.pop(session_id)
        ledger.closed = True
        self._remember_closed(session_id, ledger)
        if ledger.dirty:
            self._enqueue(session_id, reason)

    # -- index -----------------------------------------------------------------------------

    async def _load_index(self) -> None:
        """Find the newest stored claim of every session (claims survive restarts).

        Only the newest claim under each name prefix is read (a session in ``call`` mode has
        one per call). A prefix is one session's unless it ends in the hash :func:`claim_name`
        appends to an id it had to change (never for the gateway's own ids); where such a
        prefix holds several claims, a miss may be another session's, and :meth:`_stored`
        then looks in the sink."""
        by_prefix: dict[str, list[tuple[int, str]]] = {}
        for name in await self.sink.names():
            prefix, _, suffix = name.rpartition("-")
            if suffix.isdigit():
                by_prefix.setdefault(prefix, []).append((int(suffix), name))
        for prefix, named in by_prefix.items():
            self._sink_may_hold_more |= len(named) > 1 and _HASHED.search(prefix) is not None
            for _, name in sorted(named, reverse=True):
                found = await self._read_stored(name)
                if found is not None and claim_name(*found) == name:
                    session_id, length = found
                    current = self._index.get(session_id)
                    if current is None or current.length < length:
                        self._remember_index(session_id, _Indexed(name, length))
                    break

    async def _read_stored(self, name: str) -> tuple[str, int] | None:
        """(session id, chain length) of a stored claim; None, logged, when unreadable."""
        try:
            data = await self.sink.get(name)
            if data is None:
                return None
            gateway = parse_json(data, what=f"claim {name}")["gateway"]
            session_id, length = gateway["session_id"], gateway["audit_chain"]["length"]
            if not isinstance(session_id, str) or not isinstance(length, int):
                raise TypeError("gateway.session_id or gateway.audit_chain.length has a wrong type")
        except (CmcpError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable stored claim %s: %s", name, exc)
            return None
        return session_id, length

    def _remember_index(self, session_id: str, indexed: _Indexed) -> None:
        self._index[session_id] = indexed
        self._index.move_to_end(session_id)
        while len(self._index) > INDEX_KEPT:
            self._index.popitem(last=False)
            self._sink_may_hold_more = True

    async def _stored(self, session_id: str) -> _Indexed | None:
        """The newest claim of a session the index no longer holds: one still waiting to be
        written, else the sink's (by name; the claim itself must name the session)."""
        if not self._sink_may_hold_more:
            return None  # every claim since start (and every stored one) is indexed
        numbered = re.compile(re.escape(claim_name(session_id, 0)[:-1]) + r"([0-9]+)")
        held = [u for u in self._unwritten if u.session_id == session_id]
        if held:
            newest = max(held, key=lambda u: _length_of(numbered, u.name))
            return _Indexed(newest.name, _length_of(numbered, newest.name), newest.data)
        found = [
            (int(m[1]), name) for name in await self.sink.names() if (m := numbered.fullmatch(name))
        ]
        for length, name in sorted(found, reverse=True):
            stored = await self._read_stored(name)
            if stored is not None and stored[0] == session_id:
                indexed = _Indexed(name, length)
                self._remember_index(session_id, indexed)
                return indexed
        return None
