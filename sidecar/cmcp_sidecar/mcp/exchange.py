"""Forwarding one admitted request to one upstream and relaying what comes back.

A JSON reply is read (bounded), completed through the seam and written. An SSE reply is
relayed event by event as it arrives: notifications pass as the upstream wrote them (only the
event id is rewritten, the data is not re-serialised), server→client requests are admitted
and get a collision-free id, and the final response is completed through the seam before it
is written. A stream that ends early is resumable in the session-based era when the upstream
gave event ids; otherwise the call is a fault and the agent gets the gateway's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from aiohttp import web

from . import directory, tokens
from . import headers as mh
from .http_client import Response
from .hub import Call, Hub
from .intercept import Admission, CallContext, Fault, Operation, OpKind, Reply
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    RESPONSE_TOO_LARGE,
    UPSTREAM_INVALID,
    UPSTREAM_UNAVAILABLE,
    Message,
    RequestId,
    dumps,
    error_message,
)
from .sessions import PendingCall, Session, Shape
from .sse import SSEEvent, encode_event
from .upstream import (
    JSON,
    SSE,
    Upstream,
    UpstreamFault,
    first_response,
    media_type,
    parse_upstream,
    read_body,
    sse_events,
)

log = logging.getLogger(__name__)

SSE_HEADERS: Final = {
    "Content-Type": SSE,
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
_FAULT_ERRORS: Final = {
    "upstream.unreachable": (UPSTREAM_UNAVAILABLE, 502),
    "upstream.timeout": (UPSTREAM_UNAVAILABLE, 504),
    "upstream.tls": (UPSTREAM_UNAVAILABLE, 502),
    "upstream.too_large": (RESPONSE_TOO_LARGE, 502),
    "upstream.session_gone": (UPSTREAM_UNAVAILABLE, 404),
    "gateway.shutdown": (UPSTREAM_UNAVAILABLE, 503),
}


# Stream breaks after which a session's request stream stays pending (the agent may resume).
_RESUMABLE_BREAKS: Final = frozenset({"upstream.reset", "client.disconnected"})


def fault_reply(fault: Fault) -> tuple[dict[str, Any], int]:
    """The JSON-RPC error and HTTP status an agent gets for an upstream fault."""
    code, status = _FAULT_ERRORS.get(fault.code, (UPSTREAM_INVALID, 502))
    return {"code": code, "message": fault.message, "data": {"cmcp_code": fault.code}}, status


def json_response(call: Call, body: bytes | dict[str, Any], status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else dumps(body)
    return web.Response(body=data, status=status, content_type=JSON, headers=call.headers())


async def finish(
    hub: Hub,
    pending: PendingCall,
    request_id: RequestId | None,
    raw: dict[str, Any],
    data: bytes | None,
) -> bytes:
    """Shape (lists), then complete a reply through the seam; the bytes to deliver.

    When neither shaping nor the seam changed anything, the upstream's own bytes are passed
    on (no re-serialisation); otherwise the reply is serialised from what the seam returned.
    """
    result = raw.get("result")
    if pending.shape is not None and isinstance(result, dict):
        shaped = await pending.shape(result, pending.admission)
        incoming, unchanged = Reply(result=shaped), shaped is result
    else:
        incoming, unchanged = Reply.of(raw), True
    pending.settled = True
    reply = await hub.complete(pending.admission, incoming)
    op = pending.admission.op
    hub.metrics.duration.labels(op.method).observe(time.perf_counter() - pending.started)
    hub.metrics.requests.labels(op.method, "error" if reply.error is not None else "ok").inc()
    if reply is incoming and unchanged and data is not None and raw.get("id") == request_id:
        return data
    return dumps(reply.message(request_id))


async def fail(hub: Hub, pending: PendingCall, fault: Fault) -> tuple[dict[str, Any], int]:
    """Record a fault through the seam; the error (and HTTP status) the agent gets instead."""
    pending.settled = True
    await hub.fault(pending.admission, fault)
    hub.metrics.requests.labels(pending.admission.op.method, "fault").inc()
    return fault_reply(fault)


async def forward(
    hub: Hub,
    call: Call,
    up: Upstream,
    admission: Admission,
    body: bytes,
    headers: dict[str, str],
    shape: Shape | None = None,
) -> web.StreamResponse:
    """Send an admitted request to ``up`` and relay its reply to the agent."""
    pending = PendingCall(admission, up, shape=shape)
    session = call.session
    if session is not None and call.request_id is not None:
        session.pending[call.request_id] = pending
    listen = admission.op.kind is OpKind.LISTEN
    try:
        async with up.request("POST", headers=headers, body=body, stream=listen) as resp:
            return await _relay(hub, call, up, resp, pending)
    except UpstreamFault as exc:
        _unregister(call, pending)
        error, status = await fail(hub, pending, Fault(exc.code, exc.message, exc.status))
        if exc.code == "upstream.session_gone" and session is not None:
            hub.spawn(hub.sessions.end(session, "upstream_session_gone"))
        return json_response(
            call,
            error_message(call.request_id, error["code"], error["message"], error["data"]),
            status,
        )
    except asyncio.CancelledError:
        # The agent went away. A resumable stream of a session stays pending (the agent may
        # come back with Last-Event-ID); anything else ends here, as a fault.
        if not pending.settled and not (pending.resumable and session is not None):
            _unregister(call, pending)
            await fail(hub, pending, Fault("client.disconnected", "the agent closed the request"))
        raise


def _unregister(call: Call, pending: PendingCall) -> None:
    session = call.session
    if (
        session is not None
        and call.request_id is not None
        and session.pending.get(call.request_id) is pending
    ):
        del session.pending[call.request_id]


async def _relay(
    hub: Hub, call: Call, up: Upstream, resp: Response, pending: PendingCall
) -> web.StreamResponse:
    kind = media_type(resp)
    session = call.session
    if resp.status == 404 and session is not None and session.upstream_ids.get(up.name):
        raise UpstreamFault(
            "upstream.session_gone", f"upstream {up.name} ended the session", status=404
        )
    if resp.status == 202:
        raise UpstreamFault("upstream.invalid", f"upstream {up.name} answered a request with 202")
    if kind == SSE and resp.status == 200:
        return await _stream(hub, call, up, resp, pending)
    if kind != JSON:
        raise UpstreamFault(
            "upstream.status" if resp.status >= 400 else "upstream.invalid",
            f"upstream {up.name} answered HTTP {resp.status} with {kind or 'no content type'}",
            status=resp.status,
        )
    limit = hub.limits.max_response_bytes
    body = await read_body(resp, limit, up.body_seconds)
    msg = parse_upstream(body, limit)
    if not msg.is_response or (msg.id is not None and msg.id != call.request_id):
        raise UpstreamFault("upstream.invalid", f"upstream {up.name} answered with another message")
    if msg.id is None and resp.status < 400:
        raise UpstreamFault(
            "upstream.invalid", f"upstream {up.name} answered without the request id"
        )
    if session is not None and call.request_id is not None:
        session.pending.pop(call.request_id, None)
    data = await finish(hub, pending, call.request_id, msg.raw, body)
    status = resp.status if resp.status >= 400 and "error" in msg.raw else 200
    return json_response(call, data, status)


async def _stream(
    hub: Hub, call: Call, up: Upstream, resp: Response, pending: PendingCall
) -> web.StreamResponse:
    out = web.StreamResponse(status=200, headers={**SSE_HEADERS, **call.headers()})
    await out.prepare(call.request)
    closer = resp.close
    hub.track(closer)
    translator = Translator(
        hub,
        call.session,
        call.ctx,
        up,
        own=(call.request_id, pending),
        version=call.protocol_header,
    )
    fault: Fault | None = None
    try:
        async for event in sse_events(resp, hub.limits.max_response_bytes, up.body_seconds):
            pending.resumable = pending.resumable or bool(event.id)
            data = await translator.translate(event)
            if data is not None:
                event_id = tokens.stream_event_id(up.index, event.id) if event.id else None
                await out.write(
                    encode_event(data, event_id=event_id, event=event.event, retry=event.retry)
                )
            if translator.done:
                break
    except UpstreamFault as exc:
        fault = Fault(exc.code, exc.message)
    except ConnectionError:  # the agent went away while an event was written to it
        fault = Fault("client.disconnected", "the agent closed the request")
    finally:
        hub.untrack(closer)
    if not translator.done:
        resumable = pending.resumable and call.session is not None
        if hub.shutting_down:
            fault = Fault("gateway.shutdown", "the gateway is shutting down")
        elif resumable and (fault is None or fault.code in _RESUMABLE_BREAKS):
            fault = None  # mirror the break: the agent resumes with Last-Event-ID
        elif fault is None:
            fault = Fault(
                "upstream.reset", f"upstream {up.name} ended the stream without a response"
            )
        if fault is not None:
            await _stream_fault(hub, call, out, pending, fault)
            return out
    with contextlib.suppress(ConnectionError):
        await out.write_eof()
    return out


async def _stream_fault(
    hub: Hub, call: Call, out: web.StreamResponse, pending: PendingCall, fault: Fault
) -> None:
    _unregister(call, pending)
    error, _ = await fail(hub, pending, fault)
    message = error_message(call.request_id, error["code"], error["message"], error["data"])
    with contextlib.suppress(ConnectionError):
        await out.write(encode_event(dumps(message)))
        await out.write_eof()


class Translator:
    """Turns upstream stream events into what the agent may see (see the module docstring)."""

    def __init__(
        self,
        hub: Hub,
        session: Session | None,
        ctx: CallContext,
        up: Upstream,
        own: tuple[RequestId | None, PendingCall] | None = None,
        version: str | None = None,
    ) -> None:
        self.hub = hub
        self.version = version
        self.session = session
        self.ctx = ctx
        self.up = up
        self.own = own
        self.done = False

    async def translate(self, event: SSEEvent) -> bytes | None:
        if not event.data:
            return b""  # priming event: only its id matters
        limit = self.hub.limits.max_response_bytes
        msg = parse_upstream(event.data, limit)
        if msg.is_response:
            return await self._response(msg.raw, event.data)
        if msg.is_request:
            return await self._server_request(msg.raw)
        method = msg.method or ""
        if method.endswith("/list_changed"):
            self.hub.router.changed(self.up)
            await self.hub.interceptor.upstream_changed(self.up.name, method)
        elif method == "notifications/cancelled" and self.session is not None:
            return self._server_cancel(msg.raw, event.data)
        return event.data

    async def _response(self, raw: dict[str, Any], data: bytes) -> bytes | None:
        rid = raw.get("id")
        if self.own is not None and rid == self.own[0]:
            if self.session is not None and rid is not None:
                self.session.pending.pop(rid, None)
            delivered = await finish(self.hub, self.own[1], rid, raw, data)
            self.done = True  # only now: a fault inside finish() is still this stream's to report
            return delivered
        pending = (
            self.session.pending.get(rid) if self.session is not None and rid is not None else None
        )
        if pending is None or pending.upstream is not self.up:
            log.warning(
                "dropped a response from upstream %s for no request in flight", self.up.name
            )
            return None
        assert self.session is not None and rid is not None
        self.session.pending.pop(rid, None)
        self.done = True  # a resumed request stream ends with its response
        try:
            return await finish(self.hub, pending, rid, raw, data)
        except UpstreamFault as exc:
            error, _ = await fail(self.hub, pending, Fault(exc.code, exc.message))
            return dumps(error_message(rid, error["code"], error["message"], error["data"]))

    async def _server_request(self, raw: dict[str, Any]) -> bytes | None:
        if self.session is None:
            log.warning("upstream %s sent a request on a stateless stream; dropped", self.up.name)
            return None
        method = raw["method"]
        op = Operation(
            kind=OpKind.SERVER_REQUEST,
            method=method,
            ctx=self.ctx,
            upstream=self.up.name,
            params=raw.get("params") or {},
            request_id=raw["id"],
        )
        admission = await self.hub.interceptor.admit(op)
        if admission.error is not None or admission.params is None:
            error = admission.error or {"code": INTERNAL_ERROR, "message": "refused by the gateway"}
            self.hub.spawn(
                answer_upstream(
                    self.session,
                    self.up,
                    error_message(raw["id"], error["code"], error["message"], error.get("data")),
                    self.version,
                )
            )
            return None
        gateway_id = self.session.relay_server_request(self.up, raw["id"], admission)
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": gateway_id, "method": method}
        if admission.params or "params" in raw:
            out["params"] = admission.params
        return dumps(out)

    def _server_cancel(self, raw: dict[str, Any], data: bytes) -> bytes | None:
        assert self.session is not None
        params = raw.get("params") or {}
        target = params.get("requestId")
        for gateway_id, relayed in self.session.server_requests.items():
            if relayed.upstream is self.up and relayed.upstream_id == target:
                out = dict(raw)
                out["params"] = {**params, "requestId": gateway_id}
                return dumps(out)
        return data


async def answer_upstream(
    session: Session, up: Upstream, message: dict[str, Any], version: str | None
) -> None:
    """POST a JSON-RPC response (to a server→client request) to the upstream."""
    headers = {
        "Content-Type": JSON,
        "Accept": f"{JSON}, {SSE}",
        **session.upstream_headers(up, version),
    }
    try:
        async with up.request("POST", headers=headers, body=dumps(message)) as resp:
            if resp.status >= 400:
                log.warning("upstream %s refused a response: HTTP %d", up.name, resp.status)
    except UpstreamFault as exc:
        log.warning("could not deliver a response to upstream %s: %s", up.name, exc.message)


async def relay_streams(
    hub: Hub,
    call: Call,
    opened: list[tuple[Upstream, Response]],
    *,
    standalone: bool,
    positions: dict[int, str],
) -> web.StreamResponse:
    """Relay one or more upstream GET streams to the agent as one SSE stream."""
    out = web.StreamResponse(status=200, headers={**SSE_HEADERS, **call.headers()})
    await out.prepare(call.request)
    queue: asyncio.Queue[tuple[Upstream, SSEEvent] | None] = asyncio.Queue(maxsize=1)
    translators = {
        up.name: Translator(hub, call.session, call.ctx, up, version=call.protocol_header)
        for up, _ in opened
    }
    pumps = [asyncio.create_task(_pump(up, resp, hub, queue)) for up, resp in opened]
    closers = [resp.close for _, resp in opened]
    for closer in closers:
        hub.track(closer)
    remaining = len(pumps)
    try:
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            up, event = item
            try:
                data = await translators[up.name].translate(event)
            except UpstreamFault as exc:  # one bad event: skipped, counted, the stream goes on
                hub.metrics.upstream_errors.labels(up.name, exc.code).inc()
                log.warning("skipped an event from upstream %s: %s", up.name, exc.message)
                continue
            if data is None:
                continue
            event_id = None
            if event.id:
                if standalone:
                    positions[up.index] = event.id
                    event_id = tokens.standalone_event_id(positions)
                else:
                    event_id = tokens.stream_event_id(up.index, event.id)
            await out.write(
                encode_event(data, event_id=event_id, event=event.event, retry=event.retry)
            )
            if not standalone and translators[up.name].done:
                break
        with contextlib.suppress(ConnectionError):
            await out.write_eof()
    finally:
        for closer in closers:
            hub.untrack(closer)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    return out


async def _pump(
    up: Upstream,
    resp: Response,
    hub: Hub,
    queue: asyncio.Queue[tuple[Upstream, SSEEvent] | None],
) -> None:
    try:
        async for event in sse_events(resp, hub.limits.max_response_bytes):
            await queue.put((up, event))
    except UpstreamFault as exc:
        hub.metrics.upstream_errors.labels(up.name, exc.code).inc()
        log.info("stream from upstream %s ended: %s", up.name, exc.message)
    await queue.put(None)  # not in finally: once cancelled, nobody reads the queue


async def send(
    hub: Hub,
    call: Call,
    msg: Message,
    up: Upstream,
    kind: OpKind,
    params: dict[str, Any],
    *,
    name: str | None = None,
    upstream_name: str | None = None,
    shape: Shape | None = None,
) -> web.StreamResponse:
    """Admit one request to one upstream through the seam, then forward it."""
    op = Operation(
        kind=kind,
        method=msg.method or "",
        ctx=call.ctx,
        upstream=up.name,
        params=params,
        request_id=msg.id,
        name=name,
        upstream_name=upstream_name,
    )
    admission = await hub.interceptor.admit(op)
    if kind is OpKind.CALL_TOOL:
        hub.metrics.tool_calls.labels(admission.decision, name or "", up.name).inc()
    if admission.error is not None or admission.params is None:
        return refused(hub, call, msg.id, admission)
    headers = await upstream_headers(hub, call, up, op, admission.params)
    if admission.params is msg.raw.get("params") and call.body:
        # Nothing was renamed or rewritten: forward the agent's bytes. They were parsed
        # strictly (no duplicate keys, no lone surrogates), so the upstream reads exactly
        # the message the seam decided on.
        return await forward(hub, call, up, admission, call.body, headers, shape)
    message = {"jsonrpc": "2.0", "id": msg.id, "method": op.method, "params": admission.params}
    if not admission.params and "params" not in msg.raw:
        del message["params"]
    return await forward(hub, call, up, admission, dumps(message), headers, shape)


def refused(
    hub: Hub, call: Call, request_id: RequestId | None, admission: Admission
) -> web.Response:
    hub.metrics.requests.labels(admission.op.method, "refused").inc()
    error = admission.error or {"code": INVALID_REQUEST, "message": "refused by the gateway"}
    return json_response(
        call, error_message(request_id, error["code"], error["message"], error.get("data"))
    )


async def upstream_headers(
    hub: Hub, call: Call, up: Upstream, op: Operation, params: dict[str, Any]
) -> dict[str, str]:
    """Headers for a request to ``up``, built from what is forwarded (never the agent's)."""
    headers = {"Content-Type": JSON, "Accept": f"{JSON}, {SSE}"}
    if call.session is not None:
        headers.update(call.session.upstream_headers(up, call.protocol_header))
        return headers
    headers["MCP-Protocol-Version"] = call.ctx.protocol_version
    headers["Mcp-Method"] = op.method
    key = mh.NAME_BEARING.get(op.method)
    if key is not None and isinstance(params.get(key), str):
        headers["Mcp-Name"] = mh.encode_value(params[key])
    if op.kind is OpKind.CALL_TOOL and op.upstream_name is not None:
        tokens = await directory.param_tokens(hub, up, op.upstream_name)
        headers.update(mh.param_headers(tokens, params.get("arguments")))
    return headers


async def collect(
    hub: Hub,
    call: Call,
    up: Upstream,
    admission: Admission,
    request_id: RequestId | None,
    *,
    session_header: bool = True,
) -> Reply:
    """Send an admitted request and return the upstream's final reply (not yet completed)."""
    params = admission.params or {}
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": admission.op.method}
    if params:
        message["params"] = params
    headers = (
        await upstream_headers(hub, call, up, admission.op, params)
        if session_header
        else {"Content-Type": JSON, "Accept": f"{JSON}, {SSE}"}
    )
    async with up.request("POST", headers=headers, body=dumps(message)) as resp:
        if (
            resp.status == 404
            and call.session is not None
            and call.session.upstream_ids.get(up.name)
        ):
            raise UpstreamFault(
                "upstream.session_gone", f"upstream {up.name} ended the session", status=404
            )
        if resp.status == 202:
            raise UpstreamFault(
                "upstream.invalid", f"upstream {up.name} answered a request with 202"
            )
        if admission.op.kind is OpKind.INITIALIZE and call.session is not None:
            call.session.upstream_ids[up.name] = resp.headers.get("Mcp-Session-Id")
        reply = await first_response(
            resp, request_id, hub.limits.max_response_bytes, up.body_seconds
        )
        if reply.id is None and "error" not in reply.raw:
            raise UpstreamFault(
                "upstream.invalid", f"upstream {up.name} answered without the request id"
            )
    return Reply.of(reply.raw)
