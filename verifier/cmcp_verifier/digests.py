"""Digest strings (``sha256:<hex>``) and strict base64url."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from .errors import InputError

DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
ZERO_DIGEST = "sha256:" + "0" * 64


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> bool:
    """True when ``value`` is a well-formed ``sha256|sha384|sha512:<lowercase hex>`` string."""
    return isinstance(value, str) and DIGEST_RE.match(value) is not None


def parse_digest(value: object, *, what: str = "digest") -> tuple[str, bytes]:
    """Split a digest string into (algorithm, raw bytes); raise :class:`InputError`."""
    if not is_digest(value):
        raise InputError(
            f"{what} must look like sha256:<64 lowercase hex digits>, got {str(value)[:80]!r}",
            code="digest.malformed",
        )
    assert isinstance(value, str)
    alg, hexpart = value.split(":", 1)
    return alg, bytes.fromhex(hexpart)


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, *, what: str = "base64url value", max_len: int = 1 << 26) -> bytes:
    """Decode unpadded base64url, refusing padding, other alphabets and non-canonical tails."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string", code="base64.type")
    if len(text) > max_len:
        raise InputError(f"{what} is too long", code="base64.too_long")
    if not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise InputError(f"{what} is not unpadded base64url", code="base64.malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not unpadded base64url", code="base64.malformed") from None
    if b64url_encode(raw) != text:
        raise InputError(f"{what} is not canonical base64url", code="base64.noncanonical")
    return raw
