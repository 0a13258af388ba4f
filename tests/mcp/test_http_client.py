"""The upstream HTTP client against real servers on loopback, including ones that answer in
unusual but legal ways (chunks over time, compression, interim responses, no length) and
ones that misbehave (garbage, silence, endless streams)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from cmcp_sidecar.mcp import http_client
from cmcp_sidecar.mcp.http_client import HttpError, HttpPool, Response

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Origin:
    """A raw TCP server on loopback: ``handler`` answers each request; connections counted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test ended
        finally:
            writer.close()


@asynccontextmanager
async def origin(
    handler: Handler, **pool_options: object
) -> AsyncIterator[tuple[Origin, HttpPool]]:
    server_state = Origin(handler)
    server = await asyncio.start_server(server_state._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = HttpPool(f"http://127.0.0.1:{port}/mcp", **pool_options)  # type: ignore[arg-type]
    try:
        yield server_state, pool
    finally:
        await pool.close()
        server.close()


def answer(body: bytes, *extra: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(extra)
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    return handler


async def read_all(resp: Response) -> bytes:
    return b"".join([chunk async for chunk in resp.content.iter_any()])


async def call(pool: HttpPool, timeout: float | None = 5.0) -> tuple[int, bytes]:
    resp = await pool.send("POST", {"Content-Type": "application/json"}, b"{}", timeout)
    try:
        return resp.status, await read_all(resp)
    finally:
        pool.release(resp)


async def test_a_connection_is_kept_alive_and_reused() -> None:
    async with origin(answer(b'{"ok":1}')) as (server, pool):
        for _ in range(5):
            assert await call(pool) == (200, b'{"ok":1}')
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 2\r\n" in first and first.endswith(b"\r\n\r\n{}")


async def test_connection_close_and_unread_bodies_are_not_reused() -> None:
    async with origin(answer(b"{}", b"Connection: close\r\n")) as (server, pool):
        await call(pool)
        await call(pool)
    assert server.connections == 2

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"cd")
        await writer.drain()

    async with origin(slow) as (server, pool):
        resp = await pool.send("POST", {}, b"{}", 5.0)
        pool.release(resp)  # released before its end arrived: the rest is still in flight
        assert await call(pool) == (200, b"abcd")
    assert server.connections == 2


async def test_chunks_arrive_as_they_are_sent() -> None:
    sent_second = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        sent_second.set()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with origin(handler) as (server, pool):
        resp = await pool.send("POST", {}, b"{}", 5.0)
        assert resp.content_length is None
        chunks = resp.content.iter_any()
        assert await anext(chunks) == b"first" and not sent_second.is_set()
        assert [c async for c in chunks] == [b"second"]
        pool.release(resp)
        await call(pool)  # chunked bodies read to the end keep the connection
    assert server.connections == 1


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [(b"gzip", gzip.compress), (b"deflate", zlib.compress)],
)
async def test_compressed_bodies_are_decoded(
    encoding: bytes, encode: Callable[[bytes], bytes]
) -> None:
    plain = b'{"text":"' + b"abc" * 10_000 + b'"}'
    async with origin(answer(encode(plain), b"Content-Encoding: " + encoding + b"\r\n")) as (
        _,
        pool,
    ):
        status, body = await call(pool)
    assert (status, body) == (200, plain)
    assert b"Accept-Encoding: gzip, deflate\r\n" in _.requests[0]


async def test_a_compression_bomb_is_refused_at_the_buffer_bound() -> None:
    bomb = gzip.compress(b"\0" * (20 << 20))  # 20 MiB of zeros in ~20 KiB
    headers = b"Content-Encoding: gzip\r\n"
    async with origin(answer(bomb, headers), max_buffer=32 << 20) as (_, pool):
        assert len((await call(pool))[1]) == 20 << 20  # within the bound: decoded
    async with origin(answer(bomb, headers), max_buffer=1 << 20) as (_, pool):
        with pytest.raises(HttpError, match="outgrew") as refused:
            await call(pool)
        assert refused.value.too_large


async def test_an_unsupported_encoding_or_garbage_is_an_error() -> None:
    async with origin(answer(b"x", b"Content-Encoding: br\r\n")) as (_, pool):
        with pytest.raises(HttpError, match="unsupported content encoding 'br'"):
            await pool.send("POST", {}, b"{}", 5.0)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SMTP READY\r\n\r\n")
        await writer.drain()

    async with origin(garbage) as (_, pool):
        with pytest.raises(HttpError, match="invalid HTTP response"):
            await pool.send("POST", {}, b"{}", 5.0)


async def test_interim_responses_are_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with origin(handler) as (_, pool):
        assert await call(pool) == (201, b"ok")


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async with origin(handler) as (server, pool):
        assert await call(pool) == (200, b"until the end")
        assert await call(pool) == (200, b"until the end")
    assert server.connections == 2


async def test_a_break_mid_body_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.transport.abort()

    async with origin(handler) as (_, pool):
        resp = await pool.send("POST", {}, b"{}", 5.0)
        with pytest.raises(HttpError, match="closed the connection"):
            await read_all(resp)
        pool.release(resp)


async def test_silence_times_out_before_and_after_the_head() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with origin(silent) as (_, pool):
        with pytest.raises(TimeoutError):
            await pool.send("POST", {}, b"{}", 0.3)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async with origin(stalls) as (_, pool):
        resp = await pool.send("POST", {}, b"{}", 0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await read_all(resp)
        assert 0.25 <= loop.time() - started < 3
        pool.release(resp)


async def test_an_unread_stream_pauses_the_socket() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"10000\r\n" + b"e" * 0x10000 + b"\r\n")
            await writer.drain()

    async with origin(endless) as (_, pool):
        resp = await pool.send("POST", {}, b"{}", 5.0)
        await asyncio.sleep(0.5)  # nobody reads: the buffer must not grow without bound
        held = resp.content._buffered
        assert held <= http_client.PAUSE_BYTES + (1 << 20)
        got = len(resp.content.read_nowait())
        assert got == held
        resp.close()
        with pytest.raises(HttpError):
            await anext(resp.content.iter_any())
        pool.release(resp)


async def test_the_pool_limits_connections() -> None:
    async with origin(answer(b"{}"), max_connections=1) as (server, pool):
        first = await pool.send("POST", {}, b"{}", 5.0)
        second = asyncio.ensure_future(call(pool))
        await asyncio.sleep(0.1)
        assert not second.done()  # waits for the only connection
        await read_all(first)
        pool.release(first)
        assert await second == (200, b"{}")
    assert server.connections == 1


async def test_header_injection_and_unreachable_origins_are_refused() -> None:
    async with origin(answer(b"{}")) as (server, pool):
        with pytest.raises(ValueError, match="line break"):
            await pool.send("POST", {"X-Evil": "a\r\nHost: elsewhere"}, b"{}", 5.0)
        assert server.requests == []
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    pool = HttpPool(f"http://127.0.0.1:{port}/mcp")
    with pytest.raises(HttpError) as refused:
        await pool.send("POST", {}, b"{}", 5.0)
    assert "cannot connect" in str(refused.value) and not refused.value.tls
    await pool.close()


async def test_an_idle_connection_the_upstream_closed_unseen_is_not_reused() -> None:
    """The upstream closes a kept-alive connection (its keep-alive timeout) while the event
    loop is held, so the loop has not seen the close when the next request picks the
    connection from the pool: it must not be used (the request would die on it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    closing = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:  # a server of its own thread: it closes while the loop is held
        for _ in range(2):
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.recv(65536)
            body = b'{"ok":true}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            if len(accepted) == 1:
                closing.wait(10)
                conn.close()  # the keep-alive timeout: FIN to an idle client connection

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    pool = HttpPool(f"http://127.0.0.1:{listener.getsockname()[1]}/mcp")
    try:
        assert await call(pool) == (200, b'{"ok":true}')
        closing.set()
        time.sleep(http_client.RECHECK_SECONDS + 0.2)  # the loop held past the close
        assert await call(pool) == (200, b'{"ok":true}')
        assert len(accepted) == 2  # a fresh connection for the second request
    finally:
        await pool.close()
        listener.close()
        for conn in accepted:
            conn.close()
