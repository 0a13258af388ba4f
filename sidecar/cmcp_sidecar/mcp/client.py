"""The gateway as an MCP client of one upstream, for its own use.

Used for listings the gateway needs outside any agent's session (``cmcp catalog pin``, the
routing directory of several upstreams). It speaks whichever revision the upstream does and
declares every client capability that can make a server offer conditional tools.
"""

from __future__ import annotations

import itertools
from typing import Any

from .jsonrpc import dumps
from .upstream import (
    ACCEPT_BOTH,
    FULL_CLIENT_CAPABILITIES,
    GATEWAY_INFO,
    JSON,
    LATEST_HANDSHAKE,
    Upstream,
    UpstreamFault,
    first_response,
    modern_meta,
)

MAX_PAGES = 1000


class ControlClient:
    """``async with ControlClient(up) as c: tools = await c.list_all("tools/list", "tools")``."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._ids = itertools.count(1)
        self._modern: str | None = None
        self._session_id: str | None = None
        self._version = LATEST_HANDSHAKE
        self.server_info: dict[str, Any] | None = None

    async def __aenter__(self) -> ControlClient:
        era = await self.upstream.probe()
        if era.modern:
            self._modern = era.modern[-1]
        else:
            await self._initialize()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session_id is not None:
            try:
                async with self.upstream.request("DELETE", headers=self._headers()):
                    pass
            except UpstreamFault:
                pass

    def _headers(self, method: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": JSON, "Accept": ACCEPT_BOTH}
        if self._modern is not None:
            headers["MCP-Protocol-Version"] = self._modern
            if method is not None:
                headers["Mcp-Method"] = method
        else:
            headers["MCP-Protocol-Version"] = self._version
            if self._session_id is not None:
                headers["Mcp-Session-Id"] = self._session_id
        return headers

    async def _initialize(self) -> None:
        params = {
            "protocolVersion": LATEST_HANDSHAKE,
            "capabilities": dict(FULL_CLIENT_CAPABILITIES),
            "clientInfo": GATEWAY_INFO,
        }
        message = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        headers = {"Content-Type": JSON, "Accept": ACCEPT_BOTH}
        async with self.upstream.request("POST", headers=headers, body=dumps(message)) as resp:
            self._check_status(resp.status)
            self._session_id = resp.headers.get("Mcp-Session-Id")
            reply = await first_response(
                resp, 0, self.upstream.max_response_bytes, self.upstream.body_seconds
            )
        result = self._result(reply.raw, "initialize")
        version = result.get("protocolVersion")
        if isinstance(version, str):
            self._version = version
        info = result.get("serverInfo")
        self.server_info = info if isinstance(info, dict) else None
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self.upstream.request("POST", headers=self._headers(), body=dumps(note)) as resp:
            self._check_status(resp.status)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its result; an error reply is an UpstreamFault."""
        request_id = next(self._ids)
        params = dict(params or {})
        if self._modern is not None:
            params["_meta"] = modern_meta(self._modern)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            message["params"] = params
        body = dumps(message)
        async with self.upstream.request("POST", headers=self._headers(method), body=body) as resp:
            if resp.status >= 400 and not resp.headers.get("Content-Type", "").startswith(JSON):
                self._check_status(resp.status)
            reply = await first_response(
                resp, request_id, self.upstream.max_response_bytes, self.upstream.body_seconds
            )
        return self._result(reply.raw, method)

    async def list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paginated list (``tools/list`` → ``tools``), all pages."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            result = await self.request(method, {"cursor": cursor} if cursor else None)
            page = result.get(key)
            if not isinstance(page, list):
                raise UpstreamFault("upstream.invalid", f"{method} result has no {key!r} list")
            items.extend(item for item in page if isinstance(item, dict))
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return items
            if cursor in seen:
                raise UpstreamFault("upstream.invalid", f"{method} pagination loops")
            seen.add(cursor)
        raise UpstreamFault("upstream.invalid", f"{method} has more than {MAX_PAGES} pages")

    def _check_status(self, status: int) -> None:
        if status >= 400:
            raise UpstreamFault(
                "upstream.status",
                f"upstream {self.upstream.name} answered HTTP {status}",
                status=status,
            )

    def _result(self, message: dict[str, Any], method: str) -> dict[str, Any]:
        if "error" in message:
            err = message["error"]
            raise UpstreamFault(
                "upstream.error",
                f"upstream {self.upstream.name} refused {method}: {err.get('message', '')[:200]}",
            )
        result = message.get("result")
        if not isinstance(result, dict):
            raise UpstreamFault("upstream.invalid", f"{method} returned no result object")
        return result
