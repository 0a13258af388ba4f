"""What every exchange of one gateway shares: upstreams, router, seam, sessions, limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..metrics import Metrics
from .intercept import Admission, CallContext, Fault, Interceptor, Reply
from .jsonrpc import RequestId
from .routing import Router
from .sessions import ClaimWindows, Session, SessionStore

log = logging.getLogger(__name__)

CLAIM_SESSION_HEADER = "Cmcp-Claim-Session"
SESSION_HEADER = "Mcp-Session-Id"


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_bytes: int
    max_response_bytes: int


@dataclass(slots=True)
class Call:
    """One inbound HTTP request to /mcp, once its caller and session are known."""

    request: web.Request
    ctx: CallContext
    session: Session | None
    request_id: RequestId | None = None
    method: str = ""
    body: bytes = b""  # the agent's message as received (forwarded as-is when unchanged)

    @property
    def protocol_header(self) -> str | None:
        """The agent's MCP-Protocol-Version header (session era: mirrored to upstreams)."""
        return self.request.headers.get("MCP-Protocol-Version")

    def headers(self) -> dict[str, str]:
        headers = {CLAIM_SESSION_HEADER: self.ctx.claim_session}
        if self.session is not None:
            headers[SESSION_HEADER] = self.session.id
        return headers


class Hub:
    """Shared state of one gateway's proxy."""

    def __init__(
        self,
        *,
        router: Router,
        interceptor: Interceptor,
        sessions: SessionStore,
        windows: ClaimWindows,
        limits: Limits,
        metrics: Metrics,
    ) -> None:
        self.router = router
        self.interceptor = interceptor
        self.sessions = sessions
        self.windows = windows
        self.limits = limits
        self.metrics = metrics
        self.shutting_down = False
        self.posts_in_flight = 0  # POST /mcp requests being handled (the audit log asks)
        self._closers: set[Callable[[], Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # -- the seam, with the guarantees the proxy needs --------------------------------

    async def complete(self, admission: Admission, reply: Reply) -> Reply:
        """The seam's complete(). Not shielded (a task per reply costs): the interceptor makes
        what it began durable even when an agent disconnect cancels the caller."""
        return await self.interceptor.complete(admission, reply)

    async def fault(self, admission: Admission, fault: Fault) -> None:
        self.metrics.upstream_errors.labels(admission.op.upstream, fault.code).inc()
        try:
            await asyncio.shield(self.interceptor.fault(admission, fault))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the interceptor failed to record a fault")

    # -- open streams and background work ---------------------------------------------

    def track(self, closer: Callable[[], Any]) -> None:
        """Register how to end an open stream at shutdown."""
        self._closers.add(closer)
        self.metrics.streams.inc()

    def untrack(self, closer: Callable[[], Any]) -> None:
        if closer in self._closers:
            self._closers.discard(closer)
            self.metrics.streams.dec()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    async def shutdown(self) -> None:
        """Stop streams: their upstream responses close and each ends its agent stream."""
        self.shutting_down = True
        for closer in list(self._closers):
            closer()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
