"""The 2026-07-28 request metadata headers and their consistency with the body.

A modern POST mirrors body fields into headers (``MCP-Protocol-Version``, ``Mcp-Method``,
``Mcp-Name`` and ``Mcp-Param-<token>`` for tool parameters marked ``x-mcp-header``) so that
intermediaries can route without parsing. Anything that routes or decides on a header while
something else executes the body is a policy-bypass vector, so the gateway checks every
mirrored header against the parsed body and refuses a mismatch with ``HeaderMismatch``
(-32020, HTTP 400). It decides on the body only, and it builds the headers it sends upstream
from the body it forwards (never copying the agent's), so a redacted argument cannot leak
through a header either.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from .jsonrpc import HEADER_MISMATCH, INVALID_PARAMS, ProtocolError, RequestId

PROTOCOL_VERSION: Final = "mcp-protocol-version"
METHOD: Final = "mcp-method"
NAME: Final = "mcp-name"
PARAM_PREFIX: Final = "mcp-param-"
META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"

# Methods whose target is mirrored into Mcp-Name, and the params member it comes from.
NAME_BEARING: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}
ROUTING_HEADERS: Final = frozenset({PROTOCOL_VERSION, METHOD, NAME})
_SENTINEL = re.compile(r"^=\?base64\?(.*)\?=$", re.DOTALL)
_PLAIN = re.compile(r"^[\x20-\x7e]*$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_MAX_SAFE = 2**53 - 1


def encode_value(value: str) -> str:
    """A header-safe form of ``value``: as-is, or ``=?base64?…?=`` when it must be."""
    if _PLAIN.match(value) and value == value.strip() and not _SENTINEL.match(value):
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def decode_value(raw: str | None) -> str | None:
    """Inverse of :func:`encode_value`; ``None`` for a malformed sentinel."""
    if raw is None:
        return None
    m = _SENTINEL.match(raw)
    if m is None:
        return raw
    try:
        decoded = base64.b64decode(m.group(1), validate=True)
        if base64.b64encode(decoded).decode("ascii") != m.group(1):
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def duplicated_routing_header(pairs: Iterable[tuple[str, str]]) -> str | None:
    """The first routing or ``Mcp-Param-*`` header given more than once, if any."""
    seen: set[str] = set()
    for name, _ in pairs:
        key = name.lower()
        if key in ROUTING_HEADERS or key.startswith(PARAM_PREFIX):
            if key in seen:
                return key
            seen.add(key)
    return None


def envelope_version(params: Mapping[str, Any], request_id: RequestId | None) -> str:
    """The protocol version of a modern request's ``_meta`` envelope (checked for shape)."""
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        raise ProtocolError(
            INVALID_PARAMS,
            f"params._meta must be an object carrying {META_PROTOCOL_VERSION!r} "
            f"and {META_CLIENT_CAPABILITIES!r}",
            request_id,
        )
    missing = [k for k in (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES) if k not in meta]
    if missing:
        raise ProtocolError(INVALID_PARAMS, f"params._meta lacks {', '.join(missing)}", request_id)
    version = meta[META_PROTOCOL_VERSION]
    if not isinstance(version, str):
        raise ProtocolError(INVALID_PARAMS, "the protocol version must be a string", request_id)
    return version


def check_routing_headers(
    method: str, params: Mapping[str, Any], headers: Mapping[str, str], request_id: RequestId
) -> None:
    """Refuse a modern request whose routing headers disagree with (or omit) body values."""
    version = envelope_version(params, request_id)
    if headers.get(PROTOCOL_VERSION) != version:
        raise _mismatch("MCP-Protocol-Version does not match params._meta", request_id)
    if headers.get(METHOD) != method:
        raise _mismatch("Mcp-Method does not match the body's method", request_id)
    key = NAME_BEARING.get(method)
    if key is not None:
        body_value = params.get(key)
        raw = headers.get(NAME)
        if raw is None and body_value is None:
            return
        if decode_value(raw) != body_value:
            raise _mismatch(f"Mcp-Name does not match the body's {key!r}", request_id)


def _mismatch(message: str, request_id: RequestId | None) -> ProtocolError:
    return ProtocolError(
        HEADER_MISMATCH, f"Header mismatch: {message}", request_id, reason="header.mismatch"
    )


def param_tokens(input_schema: Any) -> dict[tuple[str, ...], str] | None:
    """``x-mcp-header`` tokens by property path; ``None`` when an annotation is invalid.

    Valid annotations sit on string/integer/boolean properties reachable from the root through
    ``properties`` only, are RFC 9110 tokens, and are unique ignoring case.
    """
    tokens: dict[tuple[str, ...], str] = {}
    seen: set[str] = set()
    for path, schema in _positions(input_schema):
        if "x-mcp-header" not in schema:
            continue
        token = schema["x-mcp-header"]
        if (
            not path
            or not isinstance(token, str)
            or not _TOKEN.match(token)
            or schema.get("type") not in ("string", "integer", "boolean")
            or token.lower() in seen
        ):
            return None
        seen.add(token.lower())
        tokens[path] = token
    return tokens


_ONE = frozenset(
    {
        "items",
        "contains",
        "additionalProperties",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_MANY = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_MAP = frozenset({"patternProperties", "dependentSchemas", "$defs", "definitions"})


def _positions(root: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every subschema with its pure-``properties`` path (``None`` once off that chain)."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for key, sub in node.items():
            if key == "properties" and isinstance(sub, dict):
                stack.extend(((*path, k) if path is not None else None, v) for k, v in sub.items())
            elif key in _ONE:
                stack.append((None, sub))
            elif key in _MANY and isinstance(sub, list):
                stack.extend((None, v) for v in sub)
            elif key in _MAP and isinstance(sub, dict):
                stack.extend((None, v) for v in sub.values())


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) <= _MAX_SAFE:
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_SAFE:
        return str(int(value))
    if isinstance(value, str):
        return value
    return None


def _at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def param_headers(tokens: Mapping[tuple[str, ...], str], arguments: Any) -> dict[str, str]:
    """The ``Mcp-Param-*`` headers a conforming client sends for ``arguments``."""
    out: dict[str, str] = {}
    if not isinstance(arguments, dict):
        return out
    for path, token in tokens.items():
        rendered = _render(_at(arguments, path))
        if rendered is not None:
            out["Mcp-Param-" + token] = encode_value(rendered)
    return out


def check_param_headers(
    tokens: Mapping[tuple[str, ...], str],
    arguments: Any,
    headers: Mapping[str, str],
    request_id: RequestId | None,
) -> None:
    """Refuse ``Mcp-Param-*`` headers that disagree with the body's arguments.

    A header for an argument the body does not carry is refused too: that is exactly the
    value an intermediary would route on while the server executes something else.
    """
    expected = {k.lower(): v for k, v in param_headers(tokens, arguments).items()}
    declared = {"mcp-param-" + t.lower() for t in tokens.values()}
    for name in declared:
        raw, want = headers.get(name), expected.get(name)
        if raw is None and want is None:
            continue
        if raw is None or want is None or not _same(decode_value(raw), decode_value(want)):
            raise _mismatch(f"{name} does not match the body's arguments", request_id)


def _same(got: str | None, want: str | None) -> bool:
    if got is None or want is None:
        return False
    if got == want:
        return True
    # Integers compare numerically (the spec's SHOULD): "42.0" equals 42.
    try:
        return float(got) == float(want) and want.lstrip("-").isdigit()
    except ValueError:
        return False
