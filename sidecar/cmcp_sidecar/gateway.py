"""One gateway instance: config → upstreams, router, sessions, seam and proxy, with a lifecycle.

The enforcement side is injected: an :class:`~cmcp_sidecar.mcp.intercept.Interceptor` (policy,
catalog, audit, claims) and optional :class:`Services` behind the operational endpoints
(readiness, attestation, claims, audit export).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cmcp_verifier.errors import CmcpError, ConfigError

from .config import LoadedConfig
from .mcp import directory
from .mcp.exchange import fail
from .mcp.hub import Hub, Limits
from .mcp.intercept import Fault, Interceptor, SessionEnd
from .mcp.proxy import Proxy
from .mcp.routing import Kind, Router
from .mcp.sessions import ClaimWindows, Session, SessionStore
from .mcp.upstream import ACCEPT_BOTH, Upstream, UpstreamFault
from .metrics import Metrics
from .server.security import LOOPBACK_ORIGINS

log = logging.getLogger(__name__)


class Services(Protocol):
    """What the operational endpoints delegate to (attestation, claims, audit)."""

    def readiness(self) -> dict[str, str]:
        """Check name → ``"ok"`` or why not, as ``"<stable code>: <detail>"``
        (e.g. ``attestation``: ``"attestation.stale: …"``)."""
        ...

    def fail_closed_report(self) -> dict[str, Any]:
        """``reasons`` (codes of failing checks) and ``refused`` (requests refused instead of
        forwarded, by code) for /readyz."""
        ...

    async def attestation(self, nonce: bytes) -> dict[str, Any]:
        """Fresh evidence binding the signing key, the bundle hash and ``nonce``."""
        ...

    async def claim(self, claim_session: str) -> dict[str, Any] | None:
        """The latest claim of a claim session, or None when there is none."""
        ...

    async def close(self, claim_session: str) -> dict[str, Any] | None:
        """End a claim session; its final claim, or None when it is unknown."""
        ...

    async def audit_export(self, claim_session: str | None) -> bytes:
        """The audit log (JSON lines), all of it or one claim session's entries."""
        ...


class Gateway:
    """Everything one running gateway owns."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        interceptor: Interceptor,
        services: Services | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.loaded = loaded
        config = loaded.config
        self.metrics = metrics or Metrics()
        self.interceptor = interceptor
        self.services = services
        self.upstreams = [
            Upstream(
                i,
                up,
                loaded.upstream_headers(i),
                max_response_bytes=config.max_response_size_bytes,
                ca_file=str(loaded.path(up.tls.ca_file)) if up.tls.ca_file else None,
                client_cert=(
                    (
                        str(loaded.path(up.tls.client_cert_file)),
                        str(loaded.path(up.tls.client_key_file)),
                    )
                    if up.tls.client_cert_file and up.tls.client_key_file
                    else None
                ),
            )
            for i, up in enumerate(config.upstreams)
        ]
        self.router = Router(self.upstreams)
        self.sessions = SessionStore(
            max_sessions=config.max_sessions,
            idle_timeout=config.claims.idle_timeout_seconds,
            on_end=self._ended,
            close_upstreams=self._close_upstream_sessions,
        )
        self.windows = ClaimWindows(interval=config.claims.interval_seconds, on_end=self._ended)
        self.hub = Hub(
            router=self.router,
            interceptor=interceptor,
            sessions=self.sessions,
            windows=self.windows,
            limits=Limits(config.max_request_size_bytes, config.max_response_size_bytes),
            metrics=self.metrics,
        )
        self.proxy = Proxy(self.hub)
        self.tokens = loaded.bearer_tokens()
        self.principal = loaded.principal
        self.allowed_hosts = loaded.allowed_hosts()
        self.allowed_origins = tuple(config.allowed_origins) or LOOPBACK_ORIGINS
        self._sweeper: asyncio.Task[None] | None = None
        self.on_started: list[Callable[[], Awaitable[None]]] = []  # after the upstreams started

    async def start(self) -> None:
        for up in self.upstreams:
            await up.start()
        if len(self.upstreams) > 1:
            await self.check_collisions()
        for started in self.on_started:
            await started()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def check_collisions(self) -> None:
        """List every reachable upstream once; tool names two upstreams claim are an error."""
        await asyncio.gather(*(directory.refresh_tools(self.hub, up) for up in self.upstreams))
        clashes = self.router.collisions(Kind.TOOL)
        if clashes:
            name, owners = sorted(clashes.items())[0]
            raise ConfigError(
                f"tool name {name!r} is offered by upstreams {', '.join(owners)}",
                code="config.tool_collision",
                hint="give one of these upstreams a prefix: (its tools become <prefix>.<tool>)",
            )

    async def stop(self) -> None:
        """Graceful: end open streams, then sessions (claims), then the upstream pools."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.hub.shutdown()
        await self.sessions.end_all("shutdown")
        await self.windows.end_all("shutdown")
        for up in self.upstreams:
            await up.close()

    def reload_credentials(self) -> None:
        """Re-read every headers_from_file (SIGHUP); a broken file keeps the old credentials."""
        for up in self.upstreams:
            try:
                up.set_credentials(self.loaded.upstream_headers(up.index))
            except CmcpError as exc:
                log.error(
                    "keeping the previous credentials of upstream %s: %s", up.name, exc.message
                )

    async def close_claim_session(self, claim_session: str) -> bool:
        """End a claim session (an MCP session or a stateless window); False if unknown."""
        session = self.sessions.find(claim_session)
        if session is not None:
            await self.sessions.end(session, "closed")
            return True
        return await self.windows.end(claim_session, "closed")

    async def _ended(self, end: SessionEnd) -> None:
        self.metrics.sessions.set(len(self.sessions))
        await self.interceptor.session_ended(end)

    async def _close_upstream_sessions(self, session: Session) -> None:
        for up in self.upstreams:
            if session.upstream_ids.get(up.name):
                version = session.upstream_versions.get(up.name)
                headers = {"Accept": ACCEPT_BOTH, **session.upstream_headers(up, version)}
                try:
                    async with up.request("DELETE", headers=headers):
                        pass
                except UpstreamFault as exc:
                    log.info("closing the session with upstream %s: %s", up.name, exc.message)
        for pending in session.pending.values():
            if not pending.settled:
                await fail(
                    self.hub, pending, Fault("session.ended", "the session ended before the reply")
                )
        session.pending.clear()

    async def _sweep(self) -> None:
        interval = min(30.0, self.sessions.idle_timeout / 4, self.windows.interval / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sessions.sweep()
                await self.windows.sweep()
            except Exception:
                log.exception("session sweep failed")
