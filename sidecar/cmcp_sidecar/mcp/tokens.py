"""Opaque tokens the gateway composes from upstream tokens: SSE event ids and list cursors.

An agent resumes a stream with ``Last-Event-ID`` and pages a list with ``cursor``; both come
from the gateway and must lead back to the right upstream and its own token. They are
base64url JSON, which the gateway parses as untrusted input when they come back.

* a request stream's event id: ``p.<b64 [upstream index, upstream event id]>``
* the standalone (GET) stream multiplexing several upstreams:
  ``g.<b64 {upstream index: last event id of that upstream}>`` so one id resumes them all
* a list cursor over several upstreams: ``c.<b64 [upstream index, upstream cursor | null]>``
"""

from __future__ import annotations

import json
from typing import Any

from cmcp_verifier.canonical import parse_json
from cmcp_verifier.digests import b64url_decode, b64url_encode
from cmcp_verifier.errors import InputError

MAX_TOKEN = 8192


class TokenError(ValueError):
    """A token the gateway did not issue (or that was tampered with)."""


def _pack(kind: str, value: Any) -> str:
    return kind + "." + b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def _unpack(kind: str, token: str) -> Any:
    if len(token) > MAX_TOKEN or not token.startswith(kind + "."):
        raise TokenError("not a gateway token")
    try:
        return parse_json(b64url_decode(token[2:], what="token"), what="token")
    except InputError:
        raise TokenError("not a gateway token") from None


def _index(value: Any, count: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise TokenError("token names an unknown upstream")
    return value


def stream_event_id(index: int, upstream_id: str) -> str:
    return _pack("p", [index, upstream_id])


def standalone_event_id(positions: dict[int, str]) -> str:
    return _pack("g", {str(k): v for k, v in sorted(positions.items())})


def parse_event_id(token: str, count: int) -> tuple[bool, dict[int, str]]:
    """(is_standalone, {upstream index: upstream event id}) of a Last-Event-ID."""
    if token.startswith("p."):
        value = _unpack("p", token)
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
            raise TokenError("malformed event id")
        return False, {_index(value[0], count): value[1]}
    value = _unpack("g", token)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TokenError("malformed event id")
    try:
        return True, {_index(int(k), count): v for k, v in value.items()}
    except ValueError:
        raise TokenError("malformed event id") from None


def list_cursor(index: int, upstream_cursor: str | None) -> str:
    return _pack("c", [index, upstream_cursor])


def parse_list_cursor(token: str, count: int) -> tuple[int, str | None]:
    value = _unpack("c", token)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str | None)):
        raise TokenError("malformed cursor")
    return _index(value[0], count), value[1]
