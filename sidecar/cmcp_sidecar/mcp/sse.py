"""Server-Sent Events: an incremental, bounded parser and the writer.

The parser follows the WHATWG event-stream rules (CR, LF or CRLF line ends, ``:`` comments,
``data`` lines joined with LF, one optional space after the colon, ``id`` without NUL) and
works on bytes as they arrive, so each event is handed on the moment its blank line is read.
Lines and events are bounded; a peer that exceeds a bound gets :class:`SSEError`, never an
unbounded buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_ID_BYTES: Final = 1024


class SSEError(Exception):
    """The stream broke a size bound (the only way an event stream can be malformed)."""


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``data`` is the joined data lines, undecoded."""

    data: bytes
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Feed bytes, get complete events; keeps at most one partial line and one event."""

    def __init__(self, *, max_event_bytes: int, max_line_bytes: int | None = None) -> None:
        self._max_event = max_event_bytes
        self._max_line = max_line_bytes or max_event_bytes + 64
        self._buf = bytearray()
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._seen_field = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events it completed (often none, sometimes several)."""
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = self._buf
        pos = len(buf)  # what is already buffered holds no line end
        buf += chunk
        start = 0
        events: list[SSEEvent] = []
        while (end := self._find_line_end(buf, pos)) >= 0:
            line = bytes(buf[start:end])
            nxt = end + 1
            if buf[end] == 0x0D:
                if nxt == len(buf):
                    self._skip_lf = True
                elif buf[nxt] == 0x0A:
                    nxt += 1
            start = pos = nxt
            event = self._line(line)
            if event is not None:
                events.append(event)
        if start:
            del buf[:start]
        if len(buf) > self._max_line:
            raise SSEError(f"SSE line longer than {self._max_line} bytes")
        return events

    @property
    def partial(self) -> bool:
        """Whether part of an event has arrived (a line or a field) but not its end."""
        return bool(self._buf) or self._seen_field

    @staticmethod
    def _find_line_end(buf: bytearray, pos: int) -> int:
        lf = buf.find(b"\n", pos)
        cr = buf.find(b"\r", pos, lf if lf >= 0 else len(buf))
        return cr if cr >= 0 else lf

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line[:1] == b":":
            return None
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        self._seen_field = True
        if name == b"data":
            self._data_size += len(value) + 1
            if self._data_size > self._max_event:
                raise SSEError(f"SSE event larger than {self._max_event} bytes")
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                if len(value) > MAX_ID_BYTES:
                    raise SSEError("SSE event id is too long")
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._seen_field:
            return None
        event = SSEEvent(b"\n".join(self._data), self._event or "message", self._id, self._retry)
        self._data, self._data_size, self._event, self._retry = [], 0, "", None
        self._seen_field = False
        self._id = None  # callers track the last event id themselves
        return event


def encode_event(
    data: bytes,
    *,
    event_id: str | None = None,
    event: str | None = "message",
    retry: int | None = None,
) -> bytes:
    """One SSE event as bytes; ``data`` may hold LF-separated lines."""
    parts: list[bytes] = []
    if event:
        parts.append(b"event: " + event.encode() + b"\n")
    if event_id is not None:
        parts.append(b"id: " + event_id.encode() + b"\n")
    if retry is not None:
        parts.append(b"retry: " + str(retry).encode() + b"\n")
    for line in data.split(b"\n"):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


KEEPALIVE: Final = b": keepalive\n\n"
