"""Strict reading and writing of single JSON-RPC 2.0 messages as MCP uses them.

Every message that crosses the gateway is parsed once with
:func:`cmcp_verifier.canonical.parse_json`: duplicate keys, lone surrogates, invalid UTF-8 and
absurd nesting are refused, so the gateway, its policy and the peer behind it can never read
two different messages out of the same bytes. Escapes are resolved by the parser, so
``"tools\\/call"`` *is* ``tools/call`` here and every decision applies to the parsed value.
Batches (JSON arrays) are refused: MCP removed them in 2025-06-18 and the 2026-07-28 revision
requires a single message per POST.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from cmcp_verifier.canonical import parse_json
from cmcp_verifier.errors import InputError

RequestId = int | str

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
HEADER_MISMATCH: Final = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022

# Gateway errors, from the implementation-defined band -32000..-32019 (docs/errors.md).
POLICY_DENIED: Final = -32010
UPSTREAM_UNAVAILABLE: Final = -32011
UPSTREAM_INVALID: Final = -32012
RESPONSE_TOO_LARGE: Final = -32013
GATEWAY_NOT_READY: Final = -32014

MAX_ID_LENGTH: Final = 256
MAX_METHOD_LENGTH: Final = 256
_ENVELOPE_KEYS: Final = frozenset({"jsonrpc", "id", "method", "params", "result", "error"})


class ProtocolError(Exception):
    """A message the gateway refuses, with the JSON-RPC error it answers with."""

    def __init__(
        self, code: int, message: str, request_id: RequestId | None = None, *, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.reason = reason  # a stable code for the audit (jsonrpc.batch, route.unknown …)


@dataclass(slots=True)
class Message:
    """One JSON-RPC message: a request, a notification or a response (result or error)."""

    raw: dict[str, Any]

    @property
    def method(self) -> str | None:
        method = self.raw.get("method")
        return method if isinstance(method, str) else None

    @property
    def id(self) -> RequestId | None:
        return self.raw.get("id")

    @property
    def params(self) -> dict[str, Any]:
        params = self.raw.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def is_request(self) -> bool:
        return "method" in self.raw and "id" in self.raw

    @property
    def is_notification(self) -> bool:
        return "method" in self.raw and "id" not in self.raw

    @property
    def is_response(self) -> bool:
        return "method" not in self.raw


# Input that the fast path leaves to the full strict parser: \u escapes (lone surrogates),
# long digit runs (integers beyond 2^53, huge exponents), NaN/Infinity, and many brackets (depth).
_UNUSUAL = re.compile(rb"\\[uU]|\d{16}|[eE][+-]?\d{3}|NaN|Infinity")
_MAX_FAST_BRACKETS = 200


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def strict_loads(data: bytes, *, max_bytes: int, what: str = "JSON-RPC message") -> Any:
    """:func:`cmcp_verifier.canonical.parse_json` (floats allowed), with a fast path.

    Ordinary messages are parsed by the C decoder with a duplicate-key check done in C-sized
    steps; anything the fast path cannot vouch for (see ``_UNUSUAL``), and anything it
    refuses, goes through the shared strict parser, which decides and names the problem.
    """
    if (
        len(data) <= max_bytes
        and _UNUSUAL.search(data) is None
        and data.count(b"{") + data.count(b"[") <= _MAX_FAST_BRACKETS
    ):
        try:  # decoding first: the C decoder would also accept UTF-16/32 and a BOM
            return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_pairs)
        except (ValueError, RecursionError):
            pass  # let the strict parser say exactly what is wrong
    return parse_json(data, allow_floats=True, max_bytes=max_bytes, what=what)


def parse_message(data: bytes, *, max_bytes: int) -> Message:
    """Parse one JSON-RPC message; raise :class:`ProtocolError` with the code to answer."""
    try:
        value = strict_loads(data, max_bytes=max_bytes)
    except InputError as exc:
        raise ProtocolError(PARSE_ERROR, f"Parse error: {exc.message}") from None
    if isinstance(value, list):
        raise ProtocolError(
            INVALID_REQUEST, "JSON-RPC batches are not supported", reason="jsonrpc.batch"
        )
    return validate_message(value)


def validate_message(value: Any) -> Message:
    """Check the envelope of a parsed message (version, id, method, params, result/error)."""
    if not isinstance(value, dict):
        raise ProtocolError(INVALID_REQUEST, "a JSON-RPC message must be an object")
    request_id = value.get("id")
    echo_id = request_id if _valid_id(request_id) else None
    if value.get("jsonrpc") != "2.0":
        raise ProtocolError(INVALID_REQUEST, 'jsonrpc must be "2.0"', echo_id)
    extra = set(value) - _ENVELOPE_KEYS
    if extra:
        raise ProtocolError(INVALID_REQUEST, f"unknown member {sorted(extra)[0]!r}", echo_id)
    null_error = request_id is None and "error" in value and "method" not in value
    if "id" in value and not _valid_id(request_id) and not null_error:
        raise ProtocolError(INVALID_REQUEST, "id must be a string or an integer")
    if "method" in value:
        _check_call(value, echo_id)
    else:
        _check_response(value, echo_id)
    return Message(value)


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def _check_call(value: dict[str, Any], echo_id: RequestId | None) -> None:
    method = value["method"]
    if not isinstance(method, str) or not method or len(method) > MAX_METHOD_LENGTH:
        raise ProtocolError(INVALID_REQUEST, "method must be a non-empty string", echo_id)
    if "result" in value or "error" in value:
        raise ProtocolError(INVALID_REQUEST, "a request cannot carry result or error", echo_id)
    if "params" in value and not isinstance(value["params"], dict):
        raise ProtocolError(INVALID_REQUEST, "params must be an object", echo_id)


def _check_response(value: dict[str, Any], echo_id: RequestId | None) -> None:
    has_result, has_error = "result" in value, "error" in value
    if has_result == has_error:
        raise ProtocolError(
            INVALID_REQUEST, "a response carries exactly one of result and error", echo_id
        )
    if "params" in value:
        raise ProtocolError(INVALID_REQUEST, "a response cannot carry params", echo_id)
    if has_result and not isinstance(value["result"], dict):
        raise ProtocolError(INVALID_REQUEST, "result must be an object", echo_id)
    if has_error:
        error = value["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or isinstance(error.get("code"), bool)
            or not isinstance(error.get("message"), str)
        ):
            raise ProtocolError(
                INVALID_REQUEST, "error must be an object with integer code and message", echo_id
            )
    if "id" not in value or (value["id"] is None and not has_error):
        raise ProtocolError(INVALID_REQUEST, "a response must carry the request id")


def error_message(
    request_id: RequestId | None, code: int, message: str, data: Any = None
) -> dict[str, Any]:
    """A JSON-RPC error response object (``id: null`` when the id is unknown)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def dumps(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON for the wire."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
