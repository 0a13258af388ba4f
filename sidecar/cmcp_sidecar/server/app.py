"""The aiohttp application: routes, the request guard, and running it until SIGTERM.

``/mcp`` and the claim/audit endpoints sit behind the guard: Host and Origin must be allowed
(DNS-rebinding defence, 403) and, when tokens are configured, a valid bearer token is required
(401 with ``WWW-Authenticate``). Probes and metrics are open, as kubelet and Prometheus expect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from cmcp_verifier.digests import b64url_decode
from cmcp_verifier.errors import InputError

from ..gateway import Gateway
from ..mcp.proxy import http_refusal
from .security import host_allowed, origin_allowed, principal_for

log = logging.getLogger(__name__)

GATEWAY_KEY: Final = web.AppKey("gateway", Gateway)
PRINCIPAL: Final = web.RequestKey("principal", str)
_OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics", "/attestation"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host/Origin validation and bearer authentication for everything but probes.

    Refusals are reported to the seam (audited) like every other refused request.
    """
    if request.path in _OPEN_PATHS:
        return await handler(request)
    gw = request.app[GATEWAY_KEY]
    refused = None
    principal = None
    if not host_allowed(request.headers.get("Host"), gw.allowed_hosts):
        refused = http_refusal(403, "Forbidden: Host not allowed", "http.forbidden_host")
    elif not origin_allowed(request.headers.get("Origin"), gw.allowed_origins):
        refused = http_refusal(403, "Forbidden: Origin not allowed", "http.forbidden_origin")
    else:
        principal = principal_for(request.headers.get("Authorization"), gw.tokens, gw.principal)
        if principal is None:
            refused = http_refusal(
                401,
                "Unauthorized: a valid bearer token is required",
                "http.unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="cmcp"'},
            )
    if refused is not None:
        await gw.proxy.reject(refused, None)
        return refused.response
    assert principal is not None
    request[PRINCIPAL] = principal
    return await handler(request)


async def mcp_post(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY_KEY].proxy.post(request, request[PRINCIPAL])


async def mcp_get(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY_KEY].proxy.get(request, request[PRINCIPAL])


async def mcp_delete(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY_KEY].proxy.delete(request, request[PRINCIPAL])


async def mcp_other(request: web.Request) -> web.StreamResponse:
    return web.Response(status=405, headers={"Allow": "GET, POST, DELETE"})


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY_KEY]
    checks = (
        gw.services.readiness() if gw.services is not None else {"enforcement": "not configured"}
    )
    if gw.hub.shutting_down:
        checks = {**checks, "gateway": "shutting down"}
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"ready": ready, "checks": checks}
    if gw.services is not None:
        body.update(gw.services.fail_closed_report())
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[GATEWAY_KEY].metrics.render()
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def _not_configured(what: str) -> web.Response:
    return web.json_response(
        {"error": "not_configured", "message": f"{what} is not configured in this gateway"},
        status=503,
    )


async def attestation(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY_KEY]
    try:
        nonce = b64url_decode(request.query.get("nonce", ""), what="nonce", max_len=512)
    except InputError as exc:
        return web.json_response({"error": exc.code, "message": exc.message}, status=400)
    if not 8 <= len(nonce) <= 64:
        return web.json_response(
            {"error": "nonce.length", "message": "nonce must be 8–64 bytes"}, status=400
        )
    if gw.services is None:
        return _not_configured("attestation")
    return web.json_response(await gw.services.attestation(nonce))


async def claim(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY_KEY]
    if gw.services is None:
        return _not_configured("the claims issuer")
    found = await gw.services.claim(request.match_info["session_id"])
    if found is None:
        return web.json_response(
            {"error": "not_found", "message": "no claim for this session"}, status=404
        )
    return web.json_response(found)


async def close_session(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY_KEY]
    sid = request.match_info["session_id"]
    if gw.services is None:
        return _not_configured("the claims issuer")
    ended = await gw.close_claim_session(sid)  # an MCP session of this id ends first
    found = await gw.services.close(sid)
    if found is None and not ended:
        return web.json_response(
            {"error": "not_found", "message": "no session with this id"}, status=404
        )
    return web.json_response(found or {"session_id": sid, "claim": None})


async def audit_export(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY_KEY]
    if gw.services is None:
        return _not_configured("the audit log")
    body = await gw.services.audit_export(request.query.get("session_id"))
    return web.Response(body=body, headers={"Content-Type": "application/x-ndjson"})


def create_app(gateway: Gateway) -> web.Application:
    """The gateway's web application (not started)."""
    app = web.Application(
        middlewares=[guard], client_max_size=gateway.loaded.config.max_request_size_bytes
    )
    app[GATEWAY_KEY] = gateway
    app.router.add_post("/mcp", mcp_post)
    app.router.add_get("/mcp", mcp_get, allow_head=False)
    app.router.add_delete("/mcp", mcp_delete)
    app.router.add_route("*", "/mcp", mcp_other)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/attestation", attestation)
    app.router.add_get("/claims/{session_id}", claim)
    app.router.add_post("/sessions/{session_id}/close", close_session)
    app.router.add_get("/audit/export", audit_export)

    async def on_shutdown(app: web.Application) -> None:
        await gateway.hub.shutdown()

    app.on_shutdown.append(on_shutdown)
    return app


class Server:
    """A started gateway behind a listening socket (use for tests and ``cmcp start``)."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        await self.gateway.start()
        self._runner = web.AppRunner(
            create_app(self.gateway),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=5.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/mcp"

    async def stop(self) -> None:
        """Stop accepting, end open streams cleanly, end sessions, close upstream pools."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.gateway.stop()


__all__ = ["GATEWAY_KEY", "Server", "create_app"]
