"""Sessions: the agent's MCP sessions (session-based era) and claim sessions (both eras).

In the 2025 revisions the gateway terminates the agent's MCP session itself: it issues its own
``Mcp-Session-Id``, holds one upstream session per upstream, and maps server→client request
ids so two upstreams can never collide. The claim session is that MCP session. In the
stateless 2026-07-28 revision there is no protocol session, so a claim session is one agent
identity's traffic within ``claims.interval_seconds`` (:class:`ClaimWindows`). Either way
the id travels in the ``Cmcp-Claim-Session`` response header.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .intercept import Admission, CallContext, Era, SessionEnd
from .jsonrpc import RequestId
from .upstream import Upstream

log = logging.getLogger(__name__)

OnEnd = Callable[[SessionEnd], Coroutine[Any, Any, None]]
# Rewrites a list result (filter, rename) of the admitted list operation before completion.
Shape = Callable[[dict[str, Any], Admission], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class PendingCall:
    """A forwarded request whose reply has not reached the agent yet."""

    admission: Admission
    upstream: Upstream
    shape: Shape | None = None  # rewrites a list result (filter, rename) before completion
    started: float = field(default_factory=time.perf_counter)
    settled: bool = False  # completed or faulted: the seam has heard its end
    resumable: bool = False  # its stream carried event ids: the agent may resume it


@dataclass(slots=True)
class ServerRequest:
    """A server→client request relayed to the agent, awaiting the agent's answer."""

    upstream: Upstream
    upstream_id: RequestId
    admission: Admission


class Session:
    """One agent MCP session (session-based era) and its upstream sessions."""

    def __init__(self, session_id: str, principal: str, protocol_version: str) -> None:
        self.id = session_id
        self.principal = principal
        self.protocol_version = protocol_version
        self.upstream_ids: dict[str, str | None] = {}
        self.upstream_versions: dict[str, str] = {}
        self.pending: dict[RequestId, PendingCall] = {}
        self.server_requests: dict[str, ServerRequest] = {}
        self.closed = False
        self.last_seen = time.monotonic()
        self.active = 0  # requests and streams in flight; idle time counts only at zero
        self._ids = itertools.count(1)
        self.ctx = CallContext(
            principal=principal,
            claim_session=session_id,
            era=Era.SESSION,
            protocol_version=protocol_version,
            mcp_session=session_id,
        )

    def upstream_headers(self, upstream: Upstream, protocol_version: str | None) -> dict[str, str]:
        """Session headers for ``upstream``; the version is the agent's (mirrored faithfully)."""
        headers: dict[str, str] = {}
        sid = self.upstream_ids.get(upstream.name)
        if sid:
            headers["Mcp-Session-Id"] = sid
        if protocol_version:
            headers["MCP-Protocol-Version"] = protocol_version
        return headers

    def relay_server_request(
        self, upstream: Upstream, upstream_id: RequestId, admission: Admission
    ) -> str:
        """Register a server→client request; return the id the agent sees (collision-free)."""
        gateway_id = f"cmcp-{upstream.index}-{next(self._ids)}"
        self.server_requests[gateway_id] = ServerRequest(upstream, upstream_id, admission)
        return gateway_id

    def touch(self) -> None:
        self.last_seen = time.monotonic()


class SessionStore:
    """Open sessions, their idle timeout and their end (which ends their claim session)."""

    def __init__(
        self,
        *,
        max_sessions: int,
        idle_timeout: float,
        on_end: OnEnd,
        close_upstreams: Callable[[Session], Awaitable[None]],
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._on_end = on_end
        self._close_upstreams = close_upstreams
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def full(self) -> bool:
        return len(self._sessions) >= self.max_sessions

    def create(self, principal: str, protocol_version: str) -> Session:
        session = Session(secrets.token_hex(16), principal, protocol_version)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, principal: str) -> Session | None:
        """The open session with this id *of this principal* (another's is not found)."""
        session = self._sessions.get(session_id)
        if session is None or session.closed or session.principal != principal:
            return None
        session.touch()
        return session

    def find(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def end(self, session: Session, reason: str, *, close_upstreams: bool = True) -> None:
        """End a session once: close its upstream sessions, then end its claim session."""
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.id, None)
        if close_upstreams:
            try:
                await self._close_upstreams(session)
            except Exception:  # closing is best effort; the claim session still ends
                log.exception("closing the upstream sessions of a session failed")
        await self._on_end(SessionEnd(session.ctx, reason))

    async def sweep(self) -> None:
        """End sessions idle for longer than the timeout."""
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if session.active == 0 and now - session.last_seen > self.idle_timeout:
                await self.end(session, "idle_timeout")

    async def end_all(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            await self.end(session, reason)


@dataclass(slots=True)
class _Window:
    claim_session: str
    started: float
    ctx: CallContext


class ClaimWindows:
    """Claim sessions of the stateless era: per principal, one per ``interval`` seconds.

    With an ``id_source`` (the claims issuer, which derives and ends these sessions itself)
    the ids come from it and no windows are kept here; otherwise the windows are the
    gateway's own and end through ``on_end``.
    """

    def __init__(
        self, *, interval: float, on_end: OnEnd, clock: Callable[[], float] = time.monotonic
    ):
        self.interval = interval
        self.id_source: Callable[[str], str] | None = None
        self._on_end = on_end
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._ending: set[asyncio.Task[None]] = set()

    def current(self, principal: str, protocol_version: str) -> CallContext:
        """The claim-session context for a stateless request of ``principal`` now."""
        if self.id_source is not None:
            return CallContext(
                principal, self.id_source(principal), Era.STATELESS, protocol_version
            )
        now = self._clock()
        window = self._windows.get(principal)
        if window is not None and now - window.started >= self.interval:
            self._end_later(window, "interval")
            window = None
        if window is None:
            sid = "w-" + secrets.token_hex(16)
            ctx = CallContext(principal, sid, Era.STATELESS, protocol_version)
            window = _Window(sid, now, ctx)
            self._windows[principal] = window
        if window.ctx.protocol_version != protocol_version:
            return CallContext(principal, window.claim_session, Era.STATELESS, protocol_version)
        return window.ctx

    def find(self, claim_session: str) -> CallContext | None:
        for window in self._windows.values():
            if window.claim_session == claim_session:
                return window.ctx
        return None

    async def end(self, claim_session: str, reason: str) -> bool:
        for principal, window in list(self._windows.items()):
            if window.claim_session == claim_session:
                del self._windows[principal]
                await self._on_end(SessionEnd(window.ctx, reason))
                return True
        return False

    def _end_later(self, window: _Window, reason: str) -> None:
        del self._windows[window.ctx.principal]
        task = asyncio.get_running_loop().create_task(self._on_end(SessionEnd(window.ctx, reason)))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def sweep(self) -> None:
        """End windows whose interval has passed even when no new traffic arrived."""
        now = self._clock()
        for window in list(self._windows.values()):
            if now - window.started >= self.interval:
                del self._windows[window.ctx.principal]
                await self._on_end(SessionEnd(window.ctx, "interval"))

    async def end_all(self, reason: str) -> None:
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
        for window in list(self._windows.values()):
            del self._windows[window.ctx.principal]
            await self._on_end(SessionEnd(window.ctx, reason))
