"""The routing directory of several upstreams, refreshed by the gateway's own listings."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .client import ControlClient
from .hub import Hub
from .jsonrpc import INVALID_PARAMS, ProtocolError, RequestId
from .routing import RouteError
from .upstream import Upstream, UpstreamFault

log = logging.getLogger(__name__)


async def resource_upstream(hub: Hub, uri: str, request_id: RequestId | None) -> Upstream:
    """Which upstream serves ``uri`` (refreshing the directory once when unknown)."""
    router = hub.router
    try:
        return router.resolve_uri(uri)
    except RouteError as exc:
        if exc.ambiguous:
            raise ProtocolError(
                INVALID_PARAMS, exc.message, request_id, reason=exc.reason
            ) from None
    await asyncio.gather(*(_refresh_resources(hub, up) for up in router.upstreams))
    try:
        return router.resolve_uri(uri)
    except RouteError as exc:
        raise ProtocolError(INVALID_PARAMS, exc.message, request_id, reason=exc.reason) from None


async def _refresh_resources(hub: Hub, up: Upstream) -> None:
    try:
        async with ControlClient(up) as client:
            resources = await client.list_all("resources/list", "resources")
            templates = await client.list_all("resources/templates/list", "resourceTemplates")
    except UpstreamFault as exc:
        log.info("cannot list the resources of upstream %s: %s", up.name, exc.message)
        return
    hub.router.learn_resources(
        up,
        (r["uri"] for r in resources if isinstance(r.get("uri"), str)),
        (t["uriTemplate"] for t in templates if isinstance(t.get("uriTemplate"), str)),
    )


REFRESH_SECONDS = 30.0


async def param_tokens(hub: Hub, up: Upstream, tool: str) -> dict[tuple[str, ...], str]:
    """``x-mcp-header`` tokens of an upstream tool.

    From the directory; a tool it does not know makes the gateway list the upstream's tools
    (at most once per ``REFRESH_SECONDS``, or after a list change, and once for many callers).
    """
    router = hub.router
    tokens = router.param_tokens(up, tool)
    if tokens is None and router.listing_age(up) > REFRESH_SECONDS:
        async with router.listing_lock(up):
            if router.listing_age(up) > REFRESH_SECONDS:
                await refresh_tools(hub, up)
        tokens = router.param_tokens(up, tool)
    return tokens or {}


async def refresh_tools(hub: Hub, up: Upstream) -> list[dict[str, Any]]:
    """The gateway's own tools/list of ``up`` (updates the directory)."""
    hub.router.listing_started(up)
    try:
        async with ControlClient(up) as client:
            tools = await client.list_all("tools/list", "tools")
    except UpstreamFault as exc:
        log.info("cannot list the tools of upstream %s: %s", up.name, exc.message)
        return []
    hub.router.learn_tools(up, tools, complete=True)
    return tools
