"""Operations that involve every upstream: initialize, discover, lists, log level, listen.

With one upstream these are plain forwards (its answers pass unchanged, so the gateway is
invisible); with several the gateway fans out and merges: capabilities are united, versions
intersected, lists paged upstream by upstream behind a composite cursor, names prefixed, and
names two upstreams claim are withheld.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from . import tokens
from .exchange import SSE_HEADERS, collect, fail, json_response, send, upstream_headers
from .hub import Call, Hub
from .intercept import Admission, Fault, Operation, OpKind, Reply
from .jsonrpc import INVALID_PARAMS, RequestId, dumps, error_message
from .routing import Kind
from .sessions import PendingCall, Session
from .sse import encode_event
from .upstream import (
    GATEWAY_INFO,
    HANDSHAKE_VERSIONS,
    SSE,
    Upstream,
    UpstreamFault,
    media_type,
    parse_upstream,
    sse_events,
)

log = logging.getLogger(__name__)


class FanOutError(Exception):
    """An upstream refused or failed a fan-out operation; ``error`` is the JSON-RPC error."""

    def __init__(self, error: dict[str, Any], status: int = 200) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
        self.status = status


def _op(
    call: Call,
    kind: OpKind,
    method: str,
    up: Upstream,
    params: dict[str, Any],
    request_id: RequestId | None,
) -> Operation:
    return Operation(
        kind=kind,
        method=method,
        ctx=call.ctx,
        upstream=up.name,
        params=params,
        request_id=request_id,
    )


async def _admitted_collect(
    hub: Hub, call: Call, up: Upstream, op: Operation, **kw: Any
) -> tuple[Admission, Reply]:
    """admit → collect; refusals and faults come back as error replies (faults recorded)."""
    admission = await hub.interceptor.admit(op)
    if admission.error is not None or admission.params is None:
        return admission, Reply(
            error=admission.error or {"code": INVALID_PARAMS, "message": "refused"}
        )
    try:
        return admission, await collect(hub, call, up, admission, op.request_id, **kw)
    except UpstreamFault as exc:
        error, status = await fail(
            hub, PendingCall(admission, up), Fault(exc.code, exc.message, exc.status)
        )
        raise FanOutError(error, status) from None


# -- initialize (session-based era) ----------------------------------------------------


async def initialize(hub: Hub, call: Call, session: Session, msg: Any) -> dict[str, Any]:
    """Open one upstream session per upstream; the initialize result the agent gets."""
    ups = hub.router.upstreams

    async def one(up: Upstream) -> tuple[Admission, Reply]:
        op = _op(call, OpKind.INITIALIZE, "initialize", up, dict(msg.params), msg.id)
        return await _admitted_collect(hub, call, up, op, session_header=False)

    outcomes = await asyncio.gather(*(one(up) for up in ups), return_exceptions=True)
    results: list[dict[str, Any]] = []
    for up, outcome in zip(ups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if isinstance(outcome, FanOutError):
                raise outcome
            raise outcome
        admission, reply = outcome
        reply = await hub.complete(admission, reply)
        if reply.error is not None or not isinstance(reply.result, dict):
            raise FanOutError(
                reply.error or {"code": INVALID_PARAMS, "message": "initialize failed"}
            )
        version = reply.result.get("protocolVersion")
        if isinstance(version, str):
            session.upstream_versions[up.name] = version
        results.append(reply.result)
    if len(results) == 1:
        return results[0]
    versions = [r.get("protocolVersion") for r in results]
    known = [v for v in versions if v in HANDSHAKE_VERSIONS]
    merged: dict[str, Any] = {
        "protocolVersion": min(known, key=HANDSHAKE_VERSIONS.index) if known else versions[0],
        "capabilities": merge_capabilities(r.get("capabilities") for r in results),
        "serverInfo": dict(GATEWAY_INFO),
    }
    instructions = [
        f"[{up.name}] {r['instructions']}"
        for up, r in zip(ups, results, strict=True)
        if isinstance(r.get("instructions"), str)
    ]
    if instructions:
        merged["instructions"] = "\n\n".join(instructions)
    return merged


def merge_capabilities(capabilities: Any) -> dict[str, Any]:
    """The union of several servers' capabilities (flags OR-ed, sub-objects merged)."""
    merged: dict[str, Any] = {}
    for caps in capabilities:
        if not isinstance(caps, dict):
            continue
        for key, value in caps.items():
            if isinstance(value, dict):
                into = merged.setdefault(key, {})
                if isinstance(into, dict):
                    for k, v in value.items():
                        into[k] = (
                            (into.get(k) is True or v is True)
                            if isinstance(v, bool)
                            else into.get(k, v)
                        )
            else:
                merged.setdefault(key, value)
    return merged


# -- stateless era: versions, discover, listen -------------------------------------------


async def modern_versions(hub: Hub) -> tuple[str, ...]:
    """The 2026+ versions every upstream speaks (the gateway offers only those)."""
    ups = hub.router.upstreams
    if all(up.era is not None for up in ups):  # the common case: probed already, no awaits
        eras = [up.era for up in ups if up.era is not None]
    else:
        eras = await asyncio.gather(*(up.probe() for up in ups))
    common = set(eras[0].modern)
    for era in eras[1:]:
        common &= set(era.modern)
    return tuple(v for v in eras[0].modern if v in common)


async def discover(hub: Hub, call: Call, msg: Any) -> web.StreamResponse:
    single = hub.router.single
    if single is not None:
        return await send(hub, call, msg, single, OpKind.DISCOVER, dict(msg.params))
    results: list[dict[str, Any]] = []
    for up in hub.router.upstreams:
        op = _op(call, OpKind.DISCOVER, "server/discover", up, dict(msg.params), msg.id)
        try:
            admission, reply = await _admitted_collect(hub, call, up, op)
        except FanOutError as exc:
            return json_response(call, error_message(msg.id, **exc.error), exc.status)
        reply = await hub.complete(admission, reply)
        if reply.error is not None or reply.result is None:
            return json_response(call, reply.message(msg.id))
        results.append(reply.result)
    versions = await modern_versions(hub)
    ttls = [r["ttlMs"] for r in results if isinstance(r.get("ttlMs"), int)]
    result = {
        "supportedVersions": list(versions),
        "capabilities": merge_capabilities(r.get("capabilities") for r in results),
        "cacheScope": "private",
        "ttlMs": min(ttls) if ttls else 0,
        "resultType": "complete",
        "_meta": {"io.modelcontextprotocol/serverInfo": dict(GATEWAY_INFO)},
    }
    return json_response(call, {"jsonrpc": "2.0", "id": msg.id, "result": result})


async def listen(hub: Hub, call: Call, msg: Any) -> web.StreamResponse:
    """subscriptions/listen: one upstream is forwarded; several are merged into one stream."""
    single = hub.router.single
    if single is not None:
        return await send(hub, call, msg, single, OpKind.LISTEN, dict(msg.params))
    out = web.StreamResponse(status=200, headers={**SSE_HEADERS, **call.headers()})
    queue: asyncio.Queue[tuple[Upstream, dict[str, Any] | None, bytes]] = asyncio.Queue(maxsize=1)
    pumps: list[asyncio.Task[None]] = []

    async def pump(up: Upstream, admission: Admission) -> None:
        params = admission.params or {}
        message = {"jsonrpc": "2.0", "id": msg.id, "method": msg.method, "params": params}
        headers = await upstream_headers(hub, call, up, admission.op, params)
        try:
            async with up.request(
                "POST", headers=headers, body=dumps(message), stream=True
            ) as resp:
                if resp.status != 200 or media_type(resp) != SSE:
                    raise UpstreamFault("upstream.invalid", f"upstream {up.name} refused to listen")
                hub.track(resp.close)
                try:
                    async for event in sse_events(resp, hub.limits.max_response_bytes):
                        if event.data:
                            parsed = parse_upstream(event.data, hub.limits.max_response_bytes)
                            await queue.put((up, parsed.raw, event.data))
                finally:
                    hub.untrack(resp.close)
        except UpstreamFault as exc:
            await hub.fault(admission, Fault(exc.code, exc.message))
        await queue.put((up, None, b""))

    admissions = []
    for up in hub.router.upstreams:
        admission = await hub.interceptor.admit(
            _op(call, OpKind.LISTEN, msg.method, up, dict(msg.params), msg.id)
        )
        if admission.error is None and admission.params is not None:
            admissions.append((up, admission))
    if not admissions:
        return json_response(call, error_message(msg.id, INVALID_PARAMS, "refused by the gateway"))
    await out.prepare(call.request)
    pumps = [asyncio.create_task(pump(up, admission)) for up, admission in admissions]
    acks: dict[str, dict[str, Any]] = {}
    remaining, last_result = len(pumps), None
    try:
        while remaining:
            up, raw, data = await queue.get()
            if raw is None:
                remaining -= 1
                continue
            if raw.get("method") == "notifications/subscriptions/acknowledged":
                acks[up.name] = raw
                if len(acks) == len(admissions):
                    await out.write(encode_event(dumps(_merged_ack(list(acks.values())))))
                continue
            if "result" in raw or "error" in raw:
                last_result = raw
                continue
            if len(acks) == len(admissions):
                await out.write(encode_event(data))
        final = last_result or {
            "jsonrpc": "2.0",
            "id": msg.id,
            "result": {"resultType": "complete"},
        }
        await out.write(encode_event(dumps({**final, "id": msg.id})))
        await out.write_eof()
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    return out


def _merged_ack(acks: list[dict[str, Any]]) -> dict[str, Any]:
    honored: dict[str, Any] = {}
    for ack in acks:
        for key, value in ((ack.get("params") or {}).get("notifications") or {}).items():
            if isinstance(value, list):
                honored[key] = sorted(set(honored.get(key, [])) | set(value))
            elif value is True:
                honored[key] = True
    params = dict(acks[0].get("params") or {})
    params["notifications"] = honored
    return {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": params,
    }


# -- lists and log level (both eras) ----------------------------------------------------


async def list_page(hub: Hub, call: Call, msg: Any, kind: OpKind, key: str) -> web.StreamResponse:
    """One page of a list; several upstreams are paged one after another (composite cursor)."""
    ups = hub.router.upstreams
    params = dict(msg.params)
    cursor = params.get("cursor")
    index, up_cursor = 0, cursor
    if len(ups) > 1 and cursor is not None:
        try:
            index, up_cursor = tokens.parse_list_cursor(str(cursor), len(ups))
        except tokens.TokenError:
            return json_response(call, error_message(msg.id, INVALID_PARAMS, "invalid cursor"))
    up = ups[index]
    if up_cursor is None:
        params.pop("cursor", None)
    else:
        params["cursor"] = up_cursor
    first, many = up_cursor is None, len(ups) > 1

    async def shape(result: dict[str, Any], admission: Admission) -> dict[str, Any]:
        shaped = await _shape_page(hub, admission, up, kind, key, result, first)
        return _chain_cursor(shaped, index, len(ups)) if many else shaped

    return await send(hub, call, msg, up, kind, params, shape=shape)


def _chain_cursor(result: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    """The page with its next cursor pointing into the composite sequence of upstreams."""
    result = dict(result)
    nxt = result.get("nextCursor")
    if isinstance(nxt, str) and nxt:
        result["nextCursor"] = tokens.list_cursor(index, nxt)
    elif index + 1 < count:
        result["nextCursor"] = tokens.list_cursor(index + 1, None)
    else:
        result.pop("nextCursor", None)
    return result


async def _shape_page(
    hub: Hub,
    admission: Admission,
    up: Upstream,
    kind: OpKind,
    key: str,
    result: dict[str, Any],
    first: bool,
) -> dict[str, Any]:
    """Filter and rename one page of an upstream's list (``admission``: of the list
    operation); learn what it offers."""
    items = result.get(key)
    if not isinstance(items, list):
        raise UpstreamFault("upstream.invalid", f"upstream {up.name} sent a list without {key!r}")
    if not all(isinstance(item, dict) for item in items):
        items = [item for item in items if isinstance(item, dict)]
    original = items
    router = hub.router
    complete = first and not result.get("nextCursor")
    if kind is OpKind.LIST_TOOLS:
        router.learn_tools(up, items, complete=complete)
    elif kind is OpKind.LIST_PROMPTS:
        names = (p["name"] for p in items if isinstance(p.get("name"), str))
        router.learn(up, Kind.PROMPT, names, complete=complete)
    elif kind is OpKind.LIST_RESOURCES:
        router.learn_resources(up, (r["uri"] for r in items if isinstance(r.get("uri"), str)), ())
    elif kind is OpKind.LIST_RESOURCE_TEMPLATES:
        templates = (t["uriTemplate"] for t in items if isinstance(t.get("uriTemplate"), str))
        router.learn_resources(up, (), templates)
    items = await hub.interceptor.review_list(admission.op.ctx, up.name, kind, items, admission)
    if kind in (OpKind.LIST_TOOLS, OpKind.LIST_PROMPTS):
        items = _visible(hub, up, Kind.TOOL if kind is OpKind.LIST_TOOLS else Kind.PROMPT, items)
    return result if items is original else {**result, key: items}


def _visible(
    hub: Hub, up: Upstream, kind: Kind, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    router = hub.router
    if router.single is not None and not up.prefix:
        return items
    out = []
    for item in items:
        name = item.get("name")
        if not isinstance(name, str) or router.is_ambiguous(up, kind, name):
            log.warning("withholding %s %r of upstream %s: its name collides", kind, name, up.name)
            continue
        out.append({**item, "name": router.visible(up, name)} if up.prefix else item)
    return out


async def broadcast(hub: Hub, call: Call, msg: Any, kind: OpKind) -> web.StreamResponse:
    """Send one request to every upstream (logging/setLevel); first error wins."""
    single = hub.router.single
    if single is not None:
        return await send(hub, call, msg, single, kind, dict(msg.params))
    for up in hub.router.upstreams:
        try:
            admission, reply = await _admitted_collect(
                hub, call, up, _op(call, kind, msg.method, up, dict(msg.params), msg.id)
            )
        except FanOutError as exc:
            return json_response(call, error_message(msg.id, **exc.error), exc.status)
        reply = await hub.complete(admission, reply)
        if reply.error is not None:
            return json_response(call, reply.message(msg.id))
    return json_response(call, {"jsonrpc": "2.0", "id": msg.id, "result": {}})
