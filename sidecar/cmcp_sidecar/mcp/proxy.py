"""The MCP endpoint: ``POST|GET|DELETE /mcp`` in both protocol eras.

An inbound POST is checked at the HTTP level (Accept, Content-Type, size), parsed strictly
(one message, no batches, no duplicate keys), assigned its era by ``MCP-Protocol-Version``
(a 2026-07-28 value → stateless; absent or a 2025 value → session-based), checked for
header/body consistency (stateless), tied to its session and claim session, and dispatched by
method. Every message that could invoke a tool or read data goes through the seam
(:mod:`.intercept`) before anything is forwarded; every request refused before that point is
reported to the seam as a :class:`~.intercept.Rejection` (so it is audited) before the
refusal is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from . import directory, merge
from . import headers as mh
from .exchange import answer_upstream, fault_reply, json_response, relay_streams, send
from .hub import SESSION_HEADER, Call, Hub
from .intercept import CallContext, Era, Fault, OpKind, Rejection, Reply
from .jsonrpc import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    Message,
    ProtocolError,
    dumps,
    error_message,
    parse_message,
)
from .routing import Kind, RouteError
from .sessions import Session
from .tokens import TokenError, parse_event_id
from .upstream import HANDSHAKE_VERSIONS, JSON, SSE, Upstream, UpstreamFault

log = logging.getLogger(__name__)

# JSON-RPC error code → HTTP status for the gateway's own refusals (2026-07-28 table).
_STATUS: Final = {
    -32700: 400,
    -32600: 400,
    -32602: 400,
    -32020: 400,
    -32021: 400,
    -32022: 400,
    -32601: 404,
}
_REASON: Final = {
    PARSE_ERROR: "jsonrpc.parse",
    INVALID_REQUEST: "jsonrpc.invalid",
    METHOD_NOT_FOUND: "jsonrpc.method_not_found",
    INVALID_PARAMS: "jsonrpc.invalid_params",
    HEADER_MISMATCH: "header.mismatch",
    UNSUPPORTED_PROTOCOL_VERSION: "protocol.unsupported_version",
}
_LIST_METHODS: Final = {
    "tools/list": (OpKind.LIST_TOOLS, "tools"),
    "prompts/list": (OpKind.LIST_PROMPTS, "prompts"),
    "resources/list": (OpKind.LIST_RESOURCES, "resources"),
    "resources/templates/list": (OpKind.LIST_RESOURCE_TEMPLATES, "resourceTemplates"),
}
_URI_METHODS: Final = {
    "resources/read": OpKind.READ_RESOURCE,
    "resources/subscribe": OpKind.SUBSCRIBE_RESOURCE,
    "resources/unsubscribe": OpKind.UNSUBSCRIBE_RESOURCE,
}


def accepts(request: web.Request) -> tuple[bool, bool]:
    """(accepts JSON, accepts SSE), honouring wildcards."""
    types = {
        p.split(";", 1)[0].strip().lower()
        for p in request.headers.getall("Accept", [])
        for p in p.split(",")
    }
    wild = "*/*" in types
    return (
        wild or JSON in types or "application/*" in types,
        wild or SSE in types or "text/*" in types,
    )


class Refused(Exception):
    """A request refused before any decision: the response and the code it is audited under."""

    def __init__(
        self,
        response: web.Response,
        code: str,
        msg: Message | None = None,
        ctx: CallContext | None = None,
    ) -> None:
        super().__init__(code)
        self.response = response
        self.code = code
        self.msg = msg
        self.ctx = ctx


def http_refusal(
    status: int,
    message: str,
    code: str,
    *,
    msg: Message | None = None,
    ctx: CallContext | None = None,
    headers: dict[str, str] | None = None,
) -> Refused:
    """An HTTP-level refusal with a JSON-RPC error body without id."""
    body = dumps(error_message(None, INVALID_REQUEST, message))
    response = web.Response(body=body, status=status, content_type=JSON, headers=headers)
    return Refused(response, code, msg, ctx)


def rpc_refusal(
    exc: ProtocolError,
    status: int,
    *,
    msg: Message | None = None,
    ctx: CallContext | None = None,
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> Refused:
    """A JSON-RPC error refusal (the request's id echoed when known)."""
    body = dumps(error_message(exc.request_id, exc.code, exc.message, data))
    response = web.Response(body=body, status=status, content_type=JSON, headers=headers)
    return Refused(response, exc.reason or _REASON.get(exc.code, "jsonrpc.error"), msg, ctx)


def _too_large(limit: int) -> Refused:
    return http_refusal(413, f"request body exceeds {limit} bytes", "http.too_large")


Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


class Proxy:
    """Request handlers for /mcp bound to one gateway's :class:`Hub`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.router = hub.router

    # -- HTTP entry points ------------------------------------------------------------

    async def post(self, request: web.Request, principal: str) -> web.StreamResponse:
        hub = self.hub
        hub.posts_in_flight += 1
        try:
            return await self._guarded(self._post, request, principal)
        finally:
            hub.posts_in_flight -= 1

    async def get(self, request: web.Request, principal: str) -> web.StreamResponse:
        return await self._guarded(self._get, request, principal)

    async def delete(self, request: web.Request, principal: str) -> web.StreamResponse:
        return await self._guarded(self._delete, request, principal)

    async def _guarded(
        self, handler: Handler, request: web.Request, principal: str
    ) -> web.StreamResponse:
        try:
            return await handler(request, principal)
        except Refused as refused:
            await self.reject(refused, principal)
            return refused.response

    async def reject(self, refused: Refused, principal: str | None) -> None:
        """Report a refusal to the seam (it is audited before the agent sees it)."""
        msg, ctx = refused.msg, refused.ctx
        name = None
        if msg is not None:
            target = msg.params.get("name", msg.params.get("uri"))
            name = target if isinstance(target, str) else None
        rejection = Rejection(
            code=refused.code,
            status=refused.response.status,
            principal=principal,
            claim_session=ctx.claim_session if ctx is not None else None,
            method=msg.method if msg is not None else None,
            name=name,
        )
        self.hub.metrics.requests.labels(rejection.method or "-", "rejected").inc()
        await asyncio.shield(self.hub.interceptor.rejected(rejection))

    async def _post(self, request: web.Request, principal: str) -> web.StreamResponse:
        wants_json, wants_sse = accepts(request)
        if not (wants_json and wants_sse):
            raise http_refusal(
                406,
                "Not Acceptable: accept both application/json and text/event-stream",
                "http.not_acceptable",
            )
        if request.content_type != JSON:
            raise http_refusal(
                415,
                "Unsupported Media Type: Content-Type must be application/json",
                "http.unsupported_media_type",
            )
        body = await self._body(request)
        try:
            message = parse_message(body, max_bytes=self.hub.limits.max_request_bytes)
        except ProtocolError as exc:
            raise rpc_refusal(exc, 400) from None
        version = request.headers.get(mh.PROTOCOL_VERSION)
        if version is not None and version not in HANDSHAKE_VERSIONS:
            return await self._post_stateless(request, principal, message, body)
        return await self._post_session(request, principal, message, body)

    async def _get(self, request: web.Request, principal: str) -> web.StreamResponse:
        version = request.headers.get(mh.PROTOCOL_VERSION)
        if version is not None and version not in HANDSHAKE_VERSIONS:
            return web.Response(status=405, headers={"Allow": "POST"})
        if not accepts(request)[1]:
            raise http_refusal(
                406, "Not Acceptable: accept text/event-stream", "http.not_acceptable"
            )
        session = self._session(request, principal)
        call = Call(request, session.ctx, session)
        session.active += 1
        try:
            return await self._get_stream(call, session, request.headers.get("Last-Event-ID"))
        finally:
            session.active -= 1
            session.touch()

    async def _delete(self, request: web.Request, principal: str) -> web.StreamResponse:
        version = request.headers.get(mh.PROTOCOL_VERSION)
        if version is not None and version not in HANDSHAKE_VERSIONS:
            return web.Response(status=405, headers={"Allow": "POST"})
        session = self._session(request, principal)
        await self.hub.sessions.end(session, "delete")
        self.hub.metrics.sessions.set(len(self.hub.sessions))
        return web.Response(status=200, headers=Call(request, session.ctx, None).headers())

    async def _body(self, request: web.Request) -> bytes:
        limit = self.hub.limits.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        data = b""
        while not request.content.at_eof():  # read() may return less than asked
            more = await request.content.read(limit + 1 - len(data))
            if not more:
                break
            data += more
            if len(data) > limit:
                raise _too_large(limit)
        return data

    def _session(self, request: web.Request, principal: str, msg: Message | None = None) -> Session:
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            raise http_refusal(400, "Bad Request: Missing session ID", "session.missing", msg=msg)
        session = self.hub.sessions.get(sid, principal)
        if session is None:
            raise http_refusal(
                404, "Not Found: unknown or expired session", "session.unknown", msg=msg
            )
        return session

    # -- session-based era (2025 revisions) --------------------------------------------

    async def _post_session(
        self, request: web.Request, principal: str, msg: Message, body: bytes
    ) -> web.StreamResponse:
        if msg.is_request and msg.method == "initialize":
            if request.headers.get(SESSION_HEADER):
                exc = ProtocolError(INVALID_REQUEST, "the session is already initialized", msg.id)
                raise rpc_refusal(exc, 400, msg=msg)
            return await self._initialize(request, principal, msg)
        session = self._session(request, principal, msg)
        session.active += 1
        try:
            call = Call(request, session.ctx, session, msg.id, msg.method or "", body)
            if msg.is_response:
                return await self._client_response(call, session, msg)
            if msg.is_notification:
                return await self._client_notification(call, session, msg)
            if msg.id in session.pending:
                exc = ProtocolError(
                    INVALID_REQUEST,
                    "request id is already in use",
                    msg.id,
                    reason="jsonrpc.duplicate_id",
                )
                raise rpc_refusal(exc, 200, msg=msg, ctx=session.ctx, headers=call.headers())
            return await self._dispatch(call, msg)
        finally:
            session.active -= 1
            session.touch()

    async def _initialize(
        self, request: web.Request, principal: str, msg: Message
    ) -> web.StreamResponse:
        hub = self.hub
        if hub.sessions.full():
            raise http_refusal(503, "Too many open sessions", "session.limit", msg=msg)
        version = msg.params.get("protocolVersion")
        session = hub.sessions.create(
            principal, version if isinstance(version, str) else HANDSHAKE_VERSIONS[-1]
        )
        call = Call(request, session.ctx, session, msg.id, "initialize")
        try:
            result = await merge.initialize(hub, call, session, msg)
        except merge.FanOutError as exc:
            await hub.sessions.end(session, "initialize_failed")
            return json_response(
                Call(request, session.ctx, None), error_message(msg.id, **exc.error), exc.status
            )
        session.protocol_version = result.get("protocolVersion", session.protocol_version)
        hub.metrics.sessions.set(len(hub.sessions))
        return json_response(call, {"jsonrpc": "2.0", "id": msg.id, "result": result})

    async def _client_response(
        self, call: Call, session: Session, msg: Message
    ) -> web.StreamResponse:
        key = msg.id if isinstance(msg.id, str) else None
        relayed = session.server_requests.pop(key, None) if key is not None else None
        if relayed is None:
            log.info("dropped an agent response to no relayed request")
            return web.Response(status=202, headers=call.headers())
        reply = await self.hub.complete(relayed.admission, Reply.of(msg.raw))
        message = reply.message(relayed.upstream_id)
        await answer_upstream(session, relayed.upstream, message, call.protocol_header)
        return web.Response(status=202, headers=call.headers())

    async def _client_notification(
        self, call: Call, session: Session, msg: Message
    ) -> web.StreamResponse:
        method = msg.method or ""
        targets = self.router.upstreams
        if method == "notifications/cancelled":
            request_id = msg.params.get("requestId")
            pending = session.pending.get(request_id) if isinstance(request_id, int | str) else None
            targets = [pending.upstream] if pending is not None else []
        body = dumps(msg.raw)
        version = call.protocol_header
        await asyncio.gather(*(self._notify(session, up, body, version) for up in targets))
        return web.Response(status=202, headers=call.headers())

    async def _notify(
        self, session: Session, up: Upstream, body: bytes, version: str | None
    ) -> None:
        headers = {
            "Content-Type": JSON,
            "Accept": f"{JSON}, {SSE}",
            **session.upstream_headers(up, version),
        }
        try:
            async with up.request("POST", headers=headers, body=body) as resp:
                if resp.status >= 400:
                    log.info("upstream %s refused a notification: HTTP %d", up.name, resp.status)
        except UpstreamFault as exc:
            log.info("notification to upstream %s failed: %s", up.name, exc.message)

    async def _get_stream(
        self, call: Call, session: Session, last_event_id: str | None
    ) -> web.StreamResponse:
        positions: dict[int, str] = {}
        standalone = True
        if last_event_id:
            try:
                standalone, positions = parse_event_id(last_event_id, len(self.router.upstreams))
            except TokenError:
                raise http_refusal(
                    400,
                    "Bad Request: unknown Last-Event-ID",
                    "stream.unknown_event_id",
                    ctx=call.ctx,
                ) from None
        targets = (
            self.router.upstreams if standalone else [self.router.upstreams[i] for i in positions]
        )
        async with contextlib.AsyncExitStack() as stack:
            opened: list[tuple[Upstream, Any]] = []
            statuses: list[int] = []
            for up in targets:
                headers = {"Accept": SSE, **session.upstream_headers(up, call.protocol_header)}
                if up.index in positions:
                    headers["Last-Event-ID"] = positions[up.index]
                try:
                    resp = await stack.enter_async_context(
                        up.request("GET", headers=headers, stream=True)
                    )
                except UpstreamFault as exc:
                    log.info("GET stream of upstream %s: %s", up.name, exc.message)
                    statuses.append(502)
                    continue
                if resp.status == 200 and resp.headers.get("Content-Type", "").startswith(SSE):
                    opened.append((up, resp))
                else:
                    statuses.append(resp.status)
            if not opened:
                status = (
                    405
                    if statuses and all(s == 405 for s in statuses)
                    else (
                        409
                        if 409 in statuses
                        else 502
                        if 502 in statuses
                        else (statuses or [502])[0]
                    )
                )
                return web.Response(
                    status=status,
                    headers={**call.headers(), "Allow": "GET, POST, DELETE"}
                    if status == 405
                    else call.headers(),
                )
            return await relay_streams(
                self.hub, call, opened, standalone=standalone, positions=positions
            )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- stateless era (2026-07-28) ----------------------------------------------------

    async def _post_stateless(
        self, request: web.Request, principal: str, msg: Message, body: bytes
    ) -> web.StreamResponse:
        if msg.is_notification:
            return web.Response(status=202)  # no client notifications on this wire: ack and drop
        if msg.is_response:
            posted = ProtocolError(
                INVALID_REQUEST, "clients do not send responses on this revision"
            )
            raise rpc_refusal(posted, 400, msg=msg)
        assert msg.method is not None and msg.id is not None
        try:
            raw = request.raw_headers
            repeated = len({name.lower() for name, _ in raw}) != len(raw)  # the rare case
            dup = repeated and mh.duplicated_routing_header(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in raw
            )
            if dup:
                raise ProtocolError(
                    HEADER_MISMATCH,
                    f"Header mismatch: {dup} appears more than once",
                    msg.id,
                    reason="header.duplicate",
                )
            mh.check_routing_headers(msg.method, msg.params, request.headers, msg.id)
        except ProtocolError as exc:
            raise rpc_refusal(exc, 400, msg=msg) from None
        version = mh.envelope_version(msg.params, msg.id)
        try:
            supported = await merge.modern_versions(self.hub)
        except UpstreamFault as fault:
            error, status = fault_reply(Fault(fault.code, fault.message))
            reply = dumps(error_message(msg.id, **error))
            return web.Response(body=reply, status=status, content_type=JSON)
        if version not in supported:
            offer = list(supported) or list(reversed(HANDSHAKE_VERSIONS))
            unsupported = ProtocolError(
                UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", msg.id
            )
            data = {"supported": offer, "requested": version}
            raise rpc_refusal(unsupported, 400, msg=msg, data=data)
        ctx = self.hub.windows.current(principal, version)
        call = Call(request, ctx, None, msg.id, msg.method, body)
        return await self._dispatch(call, msg)

    # -- method dispatch (both eras) ---------------------------------------------------

    async def _dispatch(self, call: Call, msg: Message) -> web.StreamResponse:
        method = msg.method or ""
        try:
            if method == "ping":
                return json_response(call, {"jsonrpc": "2.0", "id": msg.id, "result": {}})
            if method in _LIST_METHODS:
                kind, key = _LIST_METHODS[method]
                return await merge.list_page(self.hub, call, msg, kind, key)
            if method == "tools/call":
                return await self._named(call, msg, Kind.TOOL, OpKind.CALL_TOOL)
            if method == "prompts/get":
                return await self._named(call, msg, Kind.PROMPT, OpKind.GET_PROMPT)
            if method in _URI_METHODS:
                return await self._by_uri(call, msg, _URI_METHODS[method])
            if method == "completion/complete":
                return await self._complete(call, msg)
            if method == "logging/setLevel":
                return await merge.broadcast(self.hub, call, msg, OpKind.SET_LOG_LEVEL)
            if method == "server/discover" and call.ctx.era is Era.STATELESS:
                return await merge.discover(self.hub, call, msg)
            if method == "subscriptions/listen" and call.ctx.era is Era.STATELESS:
                return await merge.listen(self.hub, call, msg)
            if method == "initialize":
                raise ProtocolError(
                    INVALID_REQUEST, "initialize is not part of this protocol revision", msg.id
                )
            single = self.router.single
            if single is None:
                raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}", msg.id)
            return await send(self.hub, call, msg, single, OpKind.OTHER, dict(msg.params))
        except ProtocolError as exc:
            status = _STATUS.get(exc.code, 200) if call.ctx.era is Era.STATELESS else 200
            raise rpc_refusal(exc, status, msg=msg, ctx=call.ctx, headers=call.headers()) from None

    async def _named(
        self, call: Call, msg: Message, kind: Kind, op_kind: OpKind
    ) -> web.StreamResponse:
        name = msg.params.get("name")
        if not isinstance(name, str):
            raise ProtocolError(INVALID_PARAMS, "params.name must be a string", msg.id)
        try:
            target = self.router.resolve(kind, name)
        except RouteError as exc:
            raise ProtocolError(INVALID_PARAMS, exc.message, msg.id, reason=exc.reason) from None
        params = msg.params if target.name == name else {**msg.params, "name": target.name}
        if kind is Kind.TOOL and call.ctx.era is Era.STATELESS:
            tokens = await directory.param_tokens(self.hub, target.upstream, target.name)
            mh.check_param_headers(
                tokens, params.get("arguments"), call.request.headers, call.request_id
            )
        return await send(
            self.hub,
            call,
            msg,
            target.upstream,
            op_kind,
            params,
            name=name,
            upstream_name=target.name,
        )

    async def _by_uri(self, call: Call, msg: Message, op_kind: OpKind) -> web.StreamResponse:
        uri = msg.params.get("uri")
        if not isinstance(uri, str):
            raise ProtocolError(INVALID_PARAMS, "params.uri must be a string", msg.id)
        up = await directory.resource_upstream(self.hub, uri, msg.id)
        return await send(
            self.hub, call, msg, up, op_kind, dict(msg.params), name=uri, upstream_name=uri
        )

    async def _complete(self, call: Call, msg: Message) -> web.StreamResponse:
        ref = msg.params.get("ref")
        if not isinstance(ref, dict):
            raise ProtocolError(INVALID_PARAMS, "params.ref must be an object", msg.id)
        params = dict(msg.params)
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            try:
                target = self.router.resolve(Kind.PROMPT, ref["name"])
            except RouteError as exc:
                raise ProtocolError(
                    INVALID_PARAMS, exc.message, msg.id, reason=exc.reason
                ) from None
            params["ref"] = {**ref, "name": target.name}
            return await send(
                self.hub,
                call,
                msg,
                target.upstream,
                OpKind.COMPLETE,
                params,
                name=ref["name"],
                upstream_name=target.name,
            )
        if ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            up = await directory.resource_upstream(self.hub, ref["uri"], msg.id)
            return await send(
                self.hub,
                call,
                msg,
                up,
                OpKind.COMPLETE,
                params,
                name=ref["uri"],
                upstream_name=ref["uri"],
            )
        raise ProtocolError(INVALID_PARAMS, "params.ref must name a prompt or a resource", msg.id)
