"""One upstream MCP server: its HTTP client, credentials, era and response reading.

Each upstream gets one :class:`~.http_client.HttpPool` for the gateway's lifetime (kept-alive
connections: no per-request connection or TLS handshake). Upstream cookies are never kept:
one agent's session must not ride along on another agent's calls through the shared pool.
Timeouts are a connect timeout plus an idle-read timeout, never a total: a stream may
legitimately run for hours.
Once an answer has begun, though, it must finish: a JSON body within ``timeouts.body_seconds``
of its headers, an SSE event within as long of its first byte (an upstream trickling bytes
would otherwise hold the call forever). Redirects are never followed: the upstream URL is
part of the approved configuration, and following a redirect would send the request (and
its credentials) somewhere nobody approved; a 3xx is the fault ``upstream.redirect``. TLS
failures (untrusted or mismatched certificate) are ``upstream.tls``.
Credentials come from ``headers_from_file``, are read at start and on reload, are added to
every upstream request and are never logged or sent anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from ..config import UpstreamConfig
from .http_client import PAUSE_BYTES, HttpError, HttpPool, Response
from .jsonrpc import Message, ProtocolError, dumps, parse_message
from .sse import SSEError, SSEEvent, SSEParser

log = logging.getLogger(__name__)

JSON: Final = "application/json"
SSE: Final = "text/event-stream"
ACCEPT_BOTH: Final = f"{JSON}, {SSE}"
MODERN_VERSIONS: Final = ("2026-07-28",)
HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
# Every client capability that can unlock conditional tools or server→client requests.
FULL_CLIENT_CAPABILITIES: Final[Mapping[str, Any]] = {
    "roots": {"listChanged": True},
    "sampling": {"context": {}, "tools": {}},
    "elicitation": {"form": {}, "url": {}},
    "tasks": {
        "list": {},
        "cancel": {},
        "requests": {"sampling": {"createMessage": {}}, "elicitation": {"create": {}}},
    },
}
GATEWAY_INFO: Final = {"name": "cmcp-gateway", "version": "0.1.0"}


class UpstreamFault(Exception):
    """The upstream could not be reached or answered something that is not MCP."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def media_type(resp: Response) -> str:
    return resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


@dataclass
class EraInfo:
    """What an upstream speaks: its modern versions (empty: none) and legacy handshake."""

    modern: tuple[str, ...]
    discover: dict[str, Any] | None = None


class Upstream:
    """An upstream server and the gateway's connection pool to it."""

    def __init__(
        self,
        index: int,
        config: UpstreamConfig,
        credentials: Mapping[str, str],
        *,
        max_response_bytes: int,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
    ) -> None:
        self.index = index
        self.config = config
        self.name = config.name
        self.url = config.url
        self.prefix = config.prefix
        self.max_response_bytes = max_response_bytes
        self.body_seconds = config.timeouts.body_seconds
        self._credentials = dict(credentials)
        self._ca_file = ca_file
        self._client_cert = client_cert
        self._pool: HttpPool | None = None
        self._era: EraInfo | None = None
        self._era_lock = asyncio.Lock()
        t = config.timeouts
        self.read_idle_seconds = t.read_idle_seconds
        self.stream_idle_seconds = t.stream_idle_seconds

    async def start(self) -> None:
        ssl_ctx: ssl.SSLContext | None = None
        if self._ca_file or self._client_cert:
            ssl_ctx = ssl.create_default_context(cafile=self._ca_file)
            if self._client_cert:
                ssl_ctx.load_cert_chain(*self._client_cert)
        self._pool = HttpPool(
            self.url,
            ssl_context=ssl_ctx,
            max_connections=self.config.max_connections,
            connect_timeout=self.config.timeouts.connect_seconds,
            # Unread bytes held per response: read_body refuses a body past the limit itself;
            # this bounds what one read can decompress, with room for a slow SSE reader.
            max_buffer=max(self.max_response_bytes + 1, 4 * PAUSE_BYTES),
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def set_credentials(self, credentials: Mapping[str, str]) -> None:
        """Replace the credential headers (reload); in-flight requests keep the old ones."""
        self._credentials = dict(credentials)

    def request(
        self,
        method: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        stream: bool = False,
    ) -> _Exchange:
        """The response as an async context manager; raises :class:`UpstreamFault` on entry
        errors. ``stream``: the idle-read timeout is the stream's, not the request's."""
        if self._pool is None:
            raise UpstreamFault("upstream.closed", f"upstream {self.name} is not started")
        return _Exchange(
            self.name,
            self._pool,
            method,
            {**self._credentials, **headers},
            body,
            self.stream_idle_seconds if stream else self.read_idle_seconds,
        )

    # -- era ---------------------------------------------------------------------------

    @property
    def era(self) -> EraInfo | None:
        return self._era

    async def probe(self) -> EraInfo:
        """Learn (once) whether the upstream speaks the stateless revision."""
        if self._era is not None:
            return self._era
        async with self._era_lock:
            if self._era is None:
                self._era = await self._discover()
        return self._era

    async def _discover(self) -> EraInfo:
        version = MODERN_VERSIONS[-1]
        message = {
            "jsonrpc": "2.0",
            "id": "cmcp-probe",
            "method": "server/discover",
            "params": {"_meta": modern_meta(version)},
        }
        headers = {
            "Content-Type": JSON,
            "Accept": ACCEPT_BOTH,
            "MCP-Protocol-Version": version,
            "Mcp-Method": "server/discover",
        }
        async with self.request("POST", headers=headers, body=dumps(message)) as resp:
            reply = None
            if resp.status == 200 or media_type(resp) == JSON:
                try:
                    reply = await first_response(
                        resp, "cmcp-probe", self.max_response_bytes, self.body_seconds
                    )
                except (UpstreamFault, ProtocolError):
                    reply = None
        result = reply.raw.get("result") if reply is not None else None
        if isinstance(result, dict):
            supported = result.get("supportedVersions")
            if isinstance(supported, list):
                modern = tuple(v for v in MODERN_VERSIONS if v in supported)
                if modern:
                    return EraInfo(modern=modern, discover=result)
        log.info("upstream %s speaks the session-based revisions only", self.name)
        return EraInfo(modern=())


class _Exchange:
    """One request and its response; transport errors become :class:`UpstreamFault`, a
    redirect is refused, and the connection goes back to the pool at the end."""

    def __init__(
        self,
        name: str,
        pool: HttpPool,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
        read_timeout: float | None,
    ) -> None:
        self._name, self._pool = name, pool
        self._request = (method, headers, body, read_timeout)
        self._resp: Response | None = None

    async def __aenter__(self) -> Response:
        try:
            resp = await self._pool.send(*self._request)
        except TimeoutError:
            raise UpstreamFault(
                "upstream.timeout", f"upstream {self._name} did not answer in time"
            ) from None
        except HttpError as exc:
            if exc.tls:
                raise UpstreamFault("upstream.tls", f"upstream {self._name}: {exc}") from None
            raise UpstreamFault(
                "upstream.unreachable", f"upstream {self._name} is unreachable: {exc}"
            ) from None
        self._resp = resp
        if 300 <= resp.status < 400:
            target = urlsplit(resp.headers.get("Location", "")).hostname or "an unnamed location"
            self._pool.release(resp)
            raise UpstreamFault(
                "upstream.redirect",
                f"upstream {self._name} redirected (HTTP {resp.status}) to {target}; "
                "redirects are not followed",
                status=resp.status,
            )
        return resp

    async def __aexit__(self, *exc: object) -> None:
        if self._resp is not None:
            self._pool.release(self._resp)


def modern_meta(version: str, capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The per-request ``_meta`` envelope the gateway sends as a client itself."""
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": dict(
            FULL_CLIENT_CAPABILITIES if capabilities is None else capabilities
        ),
        "io.modelcontextprotocol/clientInfo": GATEWAY_INFO,
    }


async def read_body(resp: Response, limit: int, deadline: float | None = None) -> bytes:
    """The whole body, refusing more than ``limit`` bytes or taking longer than ``deadline``
    seconds."""
    length = resp.content_length
    if length is not None and length > limit:
        raise UpstreamFault("upstream.too_large", f"upstream response exceeds {limit} bytes")
    if resp.content.is_eof():  # all of it arrived with the headers: nothing to wait for
        data = resp.content.read_nowait()
        if len(data) > limit:
            raise UpstreamFault("upstream.too_large", f"upstream response exceeds {limit} bytes")
        return data
    chunks: list[bytes] = []
    size = 0
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise UpstreamFault(
                        "upstream.too_large", f"upstream response exceeds {limit} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise _timeout(started, deadline) from None
    except HttpError as exc:
        raise _broken(exc, "upstream broke off its response") from None
    return b"".join(chunks)


def _broken(exc: HttpError, what: str) -> UpstreamFault:
    if exc.too_large:
        return UpstreamFault("upstream.too_large", f"upstream response too large: {exc}")
    return UpstreamFault("upstream.reset", f"{what}: {exc}")


def _timeout(started: float, deadline: float | None) -> UpstreamFault:
    if deadline is not None and time.monotonic() - started >= deadline:
        return UpstreamFault(
            "upstream.timeout", f"upstream took longer than {deadline:g} s to send its reply"
        )
    return UpstreamFault("upstream.timeout", "upstream stopped sending")


async def sse_events(
    resp: Response, max_event_bytes: int, event_deadline: float | None = None
) -> AsyncIterator[SSEEvent]:
    """SSE events as they arrive (each one the moment its blank line is read); an event whose
    bytes take longer than ``event_deadline`` seconds to arrive is a fault."""
    parser = SSEParser(max_event_bytes=max_event_bytes)
    begun: float | None = None  # when the event now arriving began
    try:
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                yield event
            if event_deadline is not None:
                if not parser.partial:
                    begun = None
                elif begun is None:
                    begun = time.monotonic()
                elif time.monotonic() - begun > event_deadline:
                    raise UpstreamFault(
                        "upstream.timeout",
                        f"upstream took longer than {event_deadline:g} s to send one event",
                    )
    except SSEError as exc:
        raise UpstreamFault("upstream.too_large", f"upstream SSE stream: {exc}") from None
    except TimeoutError:
        raise UpstreamFault("upstream.timeout", "upstream stream went idle too long") from None
    except HttpError as exc:
        raise _broken(exc, "upstream stream broke") from None


def parse_upstream(data: bytes, limit: int) -> Message:
    """Parse an upstream message strictly; a malformed one is an upstream fault."""
    try:
        return parse_message(data, max_bytes=limit)
    except ProtocolError as exc:
        raise UpstreamFault(
            "upstream.invalid", f"upstream sent an invalid message: {exc.message}"
        ) from None


async def first_response(
    resp: Response, request_id: Any, limit: int, deadline: float | None = None
) -> Message:
    """The JSON-RPC response to ``request_id`` from a JSON or SSE reply (others skipped)."""
    kind = media_type(resp)
    if kind == JSON:
        return parse_upstream(await read_body(resp, limit, deadline), limit)
    if kind == SSE:
        async for event in sse_events(resp, limit, deadline):
            if not event.data:
                continue
            msg = parse_upstream(event.data, limit)
            if msg.is_response and msg.id == request_id:
                return msg
        raise UpstreamFault("upstream.reset", "upstream stream ended without a response")
    raise UpstreamFault(
        "upstream.invalid",
        f"upstream answered with content type {kind or 'none'!r}",
        status=resp.status,
    )
