"""A lean HTTP/1.1 client for upstream MCP servers: keep-alive pool, streamed bodies.

Why not aiohttp's client, which the gateway used before: on the hot path (one small JSON
request, one small JSON reply on a kept-alive connection) it was the largest single cost of a
call. In the benchmark (docs/benchmarks.md) a bare pass-through hop on uvloop uses 110 µs of
CPU per call at 8 clients with aiohttp's client and 77 µs with this one; the gateway's own
pass-through went from 180 to 127 µs. Responses are parsed by ``httptools`` (llhttp, the
parser of Node.js); framing, pooling and timeouts are here.

What it does, and no more: one origin per pool; requests with a body of known length;
responses framed by Content-Length, chunked encoding or the end of the connection, decoded
from gzip/deflate when the upstream chose to compress; bodies streamed as they arrive with
back-pressure; a connect timeout and an idle-read timeout (``read_timeout`` between arriving
bytes, never a total: an SSE stream may run for hours). A connection is reused only after
its response was read to the end and the upstream agreed to keep it open; nothing is ever
retried (a ``tools/call`` is not idempotent). Transport failures raise :class:`HttpError`
(with ``tls`` set for certificate problems) or ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

PAUSE_BYTES: Final = 256 * 1024  # buffered and unread: stop reading from the socket
IDLE_SECONDS: Final = 15.0  # an idle pooled connection older than this is closed, not reused
# An idle connection older than this is looked at before reuse: the upstream may have closed
# it (keep-alive timeouts of 5 s are common) without the event loop having seen that yet.
RECHECK_SECONDS: Final = 1.0
_ACCEPT_ENCODING: Final = b"Accept-Encoding: gzip, deflate\r\n"


class HttpError(Exception):
    """The upstream could not be reached, or broke off or garbled its response."""

    def __init__(self, message: str, *, tls: bool = False, too_large: bool = False) -> None:
        super().__init__(message)
        self.tls = tls
        self.too_large = too_large


class Body:
    """A response body as it arrives (what :class:`Response.content` is)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def is_eof(self) -> bool:
        """Whether the whole body has arrived (it may still be unread)."""
        return self._eof

    def read_nowait(self) -> bytes:
        """Everything arrived and not yet read."""
        if self._error is not None:
            raise self._error
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._conn.body is self:  # not a finished response whose connection moved on
            self._conn.resume()
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Chunks as they arrive, until the end of the body."""
        while True:
            if self._chunks:
                yield self.read_nowait()
                continue
            if self._error is not None:
                raise self._error
            if self._eof:
                return
            await self._wait()

    async def _wait(self) -> None:
        self._waiter = self._conn.loop.create_future()
        self._conn.arm(self._waiter)
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._conn.disarm()

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._conn.max_buffer:
            raise HttpError(
                f"the upstream's response outgrew {self._conn.max_buffer} unread bytes",
                too_large=True,
            )
        if self._buffered > PAUSE_BYTES:
            self._conn.pause()
        self._wake()

    def _end(self, error: BaseException | None = None) -> None:
        if self._eof or self._error is not None:
            return
        if error is None:
            self._eof = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Response:
    """Status, headers and the streamed body of one upstream response."""

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDict[str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = CIMultiDictProxy(headers)
        self.content = conn.body
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    def close(self) -> None:
        """Drop the connection (ends a stream early; the connection is not reused)."""
        self._conn.abort(HttpError("the response was closed"))


class _Connection(asyncio.Protocol):
    """One connection and the response being read on it (httptools parser callbacks)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, read_timeout: float | None, max_buffer: int
    ) -> None:
        self.loop = loop
        self.read_timeout = read_timeout
        self.max_buffer = max_buffer
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._decoder: zlib._Decompress | None = None
        self._until_close = False
        self._interim = False
        self._complete = False
        self._keep_alive = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timed: asyncio.Future[Any] | None = None  # what the idle timer would fail
        self.head: asyncio.Future[Response] = loop.create_future()
        self.body = Body(self)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._timed is not None:
            self.arm(self._timed)  # bytes arrived: the idle timer starts over
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.abort(HttpError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what one of the callbacks below raised, if any
            self.abort(
                cause
                if isinstance(cause, HttpError)
                else HttpError(f"the upstream sent an invalid HTTP response: {exc}")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.disarm()
        if self._until_close and self.head.done() and not self._complete:
            self._complete = True  # a body without length ends with the connection
            self.body._end()
            return
        error = HttpError(
            "the upstream closed the connection"
            + (f": {type(exc).__name__}" if exc is not None else "")
        )
        self._fail(error)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = CIMultiDict()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (103 Early Hints...): the real one follows
            self._interim = True
            return
        headers = self._headers
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding != "identity":
            raise HttpError(f"the upstream used an unsupported content encoding {encoding!r}")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._until_close = "Content-Length" not in headers and not chunked
        self.disarm()  # the head is here; the body's reader arms the timer when it waits
        if not self.head.done():
            self.head.set_result(Response(self, status, headers))

    def on_body(self, body: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            self.body._feed(body)
            return
        try:
            while body:  # bounded pieces: a compressed bomb cannot expand in one go
                piece = decoder.decompress(body, PAUSE_BYTES)
                body = decoder.unconsumed_tail
                if piece:
                    self.body._feed(piece)
        except zlib.error as exc:
            raise HttpError(f"the upstream sent a corrupt compressed body: {exc}") from None

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # valid only inside the callback
        self.disarm()
        self.body._end()

    # -- used by the pool and the body --------------------------------------------------

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def arm(self, waiter: asyncio.Future[Any]) -> None:
        """Fail ``waiter`` with TimeoutError when no byte arrives for ``read_timeout``."""
        if self.read_timeout is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timed = waiter
        self._timer = self.loop.call_later(self.read_timeout, self._idle)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timed = None

    def _idle(self) -> None:
        waiter, self._timed, self._timer = self._timed, None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError("the upstream sent nothing for too long"))

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self, error: HttpError) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def _fail(self, error: HttpError) -> None:
        self.disarm()
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # a connection may fail with nobody waiting: no warning
        elif not self._complete:
            self.body._end(error)

    def stirred(self) -> bool:
        """True when the idle socket has something the loop has not read yet: the upstream's
        close (or bytes nobody asked for). Either way the connection is not to be reused."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
        return bool(poller.poll(0))

    def reset(self) -> None:
        """Ready for the next request on the same connection."""
        self._parser = httptools.HttpResponseParser(self)
        self._headers = CIMultiDict()
        self._decoder = None
        self._until_close = self._complete = self._interim = self._keep_alive = False
        self.head = self.loop.create_future()
        self.body = Body(self)


class HttpPool:
    """Kept-alive connections to one origin (``http://`` or ``https://``)."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        connect_timeout: float | None = None,
        max_buffer: int = 64 << 20,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        secure = parts.scheme == "https"
        self._port = parts.port or (443 if secure else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if secure else None
        default_port = self._port == (443 if secure else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if default_port else f"{host}:{self._port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._target = target.encode("latin-1")
        self._host_line = f"Host: {authority}\r\n".encode("latin-1")
        self._connect_timeout = connect_timeout
        self._max_buffer = max_buffer  # unread body bytes (decoded) a response may hold
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    async def send(
        self,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None,
        read_timeout: float | None,
    ) -> Response:
        """Send a request and wait for its response's head; read the body from it, then
        :meth:`release` it (always, also after an error)."""
        head = self._head(method, headers, body)
        await self._slots.acquire()
        try:
            conn = await self._connection(read_timeout)
        except BaseException:
            self._slots.release()
            raise
        assert conn.transport is not None
        conn.transport.write(head + body if body else head)
        conn.arm(conn.head)
        try:
            return await conn.head
        except BaseException:
            self._discard(conn)
            raise

    def release(self, response: Response) -> None:
        """Return the response's connection to the pool, or close it when it cannot be
        reused (body not read to the end, upstream asked to close, broken)."""
        conn = response._conn
        if conn not in self._open:
            return
        if conn.reusable and not self._closed:
            conn.disarm()
            conn.reset()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._open.discard(conn)
            self._slots.release()
        else:
            self._discard(conn)

    async def close(self) -> None:
        """Close every connection (streams still open end with an error)."""
        self._closed = True
        for conn in [*self._idle, *self._open]:
            conn.abort(HttpError("the gateway is closing its upstream connections"))
        self._idle.clear()
        self._open.clear()

    def _head(self, method: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} ".encode("latin-1"), self._target, b" HTTP/1.1\r\n", self._host_line]
        for name, value in headers.items():
            if not _safe(name) or not _safe(value):
                raise ValueError(f"header {name!r} contains a line break or NUL")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(_ACCEPT_ENCODING)
        if body is not None:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _connection(self, read_timeout: float | None) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            idle = now - conn.idle_since
            if conn.closed or idle > IDLE_SECONDS or (idle > RECHECK_SECONDS and conn.stirred()):
                conn.abort(HttpError("idle connection closed"))
                continue
            conn.read_timeout = read_timeout
            self._open.add(conn)
            return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, read_timeout, self._max_buffer),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except ssl.SSLError as exc:
            raise HttpError(f"TLS failed: {exc.reason or exc}", tls=True) from None
        except OSError as exc:
            reason = exc.strerror or exc
            raise HttpError(f"cannot connect: {type(exc).__name__}: {reason}") from None
        self._open.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._slots.release()
        if not conn.closed:
            conn.abort(HttpError("connection dropped"))


def _safe(text: str) -> bool:
    return "\r" not in text and "\n" not in text and "\0" not in text
