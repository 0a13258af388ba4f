"""Who may talk to the gateway: bearer tokens and the DNS-rebinding defence (Host, Origin)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

LOOPBACK_ORIGINS = (
    "http://127.0.0.1:*",
    "http://localhost:*",
    "http://[::1]:*",
    "https://127.0.0.1:*",
    "https://localhost:*",
    "https://[::1]:*",
)


def principal_for(authorization: str | None, tokens: Mapping[str, str], default: str) -> str | None:
    """The principal a request authenticates as; ``None`` when a token is required and wrong.

    With no tokens configured everyone is ``default``. Tokens are compared in constant time,
    all of them every time, so timing tells nothing about which one nearly matched.
    """
    if not tokens:
        return default
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return None
    given = presented.strip().encode()
    found: str | None = None
    for token, principal in tokens.items():
        if hmac.compare_digest(given, token.encode()):
            found = principal
    return found


def _split_host(value: str) -> tuple[str, str | None]:
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() else (value, None)


def _host_matches(value: str, patterns: Iterable[str]) -> bool:
    host, port = _split_host(value)
    for pattern in patterns:
        if pattern == "*":
            return True
        any_port = pattern.endswith(":*")
        p_host, p_port = _split_host(pattern[:-2] if any_port else pattern)
        if p_host == host and (any_port or p_port == port):
            return True
    return False


def host_allowed(host: str | None, patterns: Iterable[str]) -> bool:
    """Whether a Host header is one the gateway answers to (``name:*`` = any port)."""
    return host is not None and _host_matches(host, patterns)


def origin_allowed(origin: str | None, patterns: Iterable[str]) -> bool:
    """Whether an Origin header is acceptable; a request without one is (not a browser)."""
    if origin is None:
        return True
    patterns = tuple(patterns)
    if "*" in patterns:
        return True
    parts = urlsplit(origin.strip())
    if not parts.scheme or not parts.netloc:
        return False
    for pattern in patterns:
        scheme, _, host = pattern.partition("://")
        if scheme == parts.scheme.lower() and _host_matches(parts.netloc, [host]):
            return True
    return False
