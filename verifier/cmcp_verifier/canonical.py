"""Strict JSON reading and RFC 8785 canonical writing.

Everything that is hashed or signed in this project goes through :func:`canonical_bytes`
(RFC 8785 via the ``rfc8785`` package). Everything read from an untrusted source goes through
:func:`parse_json`, which refuses what would make two readers disagree: duplicate keys,
non-finite numbers, floats where integers are required, integers beyond 2^53, invalid UTF-8,
lone surrogates and excessive nesting.
"""

from __future__ import annotations

import json
import re
from typing import Any

import rfc8785

from .errors import InputError

MAX_SAFE_INTEGER = 2**53 - 1
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 200


def _reject_constant(name: str) -> Any:
    raise InputError(f"JSON contains {name}, which is not valid JSON", code="json.non_finite")


def _reject_float(text: str) -> Any:
    raise InputError(
        f"JSON contains a non-integer number ({text[:40]}); this format allows integers only",
        code="json.float",
    )


def _check_int(text: str) -> int:
    if len(text) > 20:
        raise InputError("JSON integer is too long", code="json.integer_range")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise InputError(f"JSON integer {value} is outside ±(2^53-1)", code="json.integer_range")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InputError(
                    f"JSON object has duplicate key {key!r}", code="json.duplicate_key"
                )
            seen.add(key)
    return obj


# One decoder per mode (json.loads would build a new one on every call).
_DECODERS = {
    allow_floats: json.JSONDecoder(
        object_pairs_hook=_unique_object,
        parse_constant=_reject_constant,
        parse_int=_check_int,
        parse_float=None if allow_floats else _reject_float,
    )
    for allow_floats in (False, True)
}


def _check_depth_and_strings(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"JSON nests deeper than {MAX_DEPTH} levels", code="json.depth")
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_string(key)
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "JSON string contains a lone surrogate escape", code="json.surrogate"
        ) from None


def parse_json(
    data: bytes | str,
    *,
    allow_floats: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    what: str = "JSON document",
) -> Any:
    """Parse untrusted JSON strictly; raise :class:`InputError` with a specific code."""
    if len(data) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes} bytes", code="json.too_large")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what} is not valid UTF-8: {exc.reason}", code="json.utf8") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        raise InputError(f"{what} starts with a byte-order mark", code="json.syntax")
    try:
        value = _DECODERS[allow_floats].decode(text)
    except InputError as exc:
        exc.message = f"{what}: {exc.message}"
        exc.args = (exc.message,)
        raise
    except RecursionError:
        raise InputError(f"{what} nests too deeply", code="json.depth") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}", code="json.syntax") from None
    if not _trivially_shallow_and_surrogate_free(text, from_bytes=isinstance(data, bytes)):
        _check_depth_and_strings(value)
    return value


def _trivially_shallow_and_surrogate_free(text: str, *, from_bytes: bool) -> bool:
    """True when ``text`` cannot nest deeper than MAX_DEPTH (too few brackets) nor hold a lone
    surrogate (strictly decoded UTF-8 or ASCII, and no \\u escape): the walk is then moot."""
    return (
        "\\u" not in text
        and (from_bytes or text.isascii())
        and text.count("{") + text.count("[") <= MAX_DEPTH
    )


def check_canonicalizable(value: Any, *, allow_floats: bool = False, path: str = "$") -> None:
    """Raise :class:`InputError` unless ``value`` has an unambiguous RFC 8785 form here."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: nests deeper than {MAX_DEPTH} levels", code="json.depth")
        if item is None or isinstance(item, bool | str):
            if isinstance(item, str):
                _check_string(item)
            continue
        if isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                raise InputError(f"{where}: integer outside ±(2^53-1)", code="json.integer_range")
        elif isinstance(item, float):
            if not allow_floats:
                raise InputError(f"{where}: floats are not allowed", code="json.float")
            if item != item or item in (float("inf"), float("-inf")):
                raise InputError(f"{where}: non-finite number", code="json.non_finite")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise InputError(
                        f"{where}: object key {key!r} is not a string", code="json.type"
                    )
                stack.append((sub, f"{where}.{key}", depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item))
        else:
            raise InputError(
                f"{where}: {type(item).__name__} is not a JSON value", code="json.type"
            )


def canonical_bytes(value: Any, *, allow_floats: bool = False) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of ``value`` (integers only unless ``allow_floats``)."""
    if _plain(value, 0):
        try:
            return _encode_plain(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: the strict path below names it
    check_canonicalizable(value, allow_floats=allow_floats)
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, RecursionError, ValueError, TypeError) as exc:
        raise InputError(f"value has no RFC 8785 form: {exc}", code="json.canonical") from None


# -- the fast path ------------------------------------------------------------------------
#
# For "plain" values the C JSON encoder writes exactly the RFC 8785 bytes:
# * no floats — the only place where ECMAScript number formatting differs from Python's;
# * object keys within the Basic Multilingual Plane — RFC 8785 orders keys by UTF-16 code
#   units, Python by code points, and the two orders agree unless a key has a character
#   above U+FFFF (encoded as surrogates, which sort below U+E000..U+FFFF);
# * exact built-in types only (subclasses may override what either encoder calls);
# * integers within ±(2^53-1), nesting within MAX_DEPTH (what check_canonicalizable asks).
# String escaping is the same in both (\b \f \n \r \t \" \\ and lowercase \u00xx for the other
# control characters, everything else as UTF-8); a lone surrogate makes the final UTF-8
# encoding fail, and the strict path then reports it. tests/verifier/test_canonical_fast.py
# checks the equality against ``rfc8785.dumps`` over generated values.
_encode_plain = json.JSONEncoder(
    ensure_ascii=False,
    check_circular=False,  # _plain bounds the depth, so a cycle never gets here
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
).encode
_ABOVE_BMP = re.compile("[\U00010000-\U0010ffff]")


def is_plain(value: Any) -> bool:
    """True when ``value`` is "plain" (see above): its encoding by a standard JSON encoder
    with sorted keys and no escaping beyond JSON's own is its RFC 8785 form."""
    return _plain(value, 0)


def _plain(value: Any, depth: int) -> bool:
    """True when the fast path's encoding of ``value`` is its RFC 8785 form (see above)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        number: int = value
        return -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and _ABOVE_BMP.search(key)):
                return False
            if not _plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 (a loop is faster than all() over a generator)
            if not _plain(item, depth + 1):
                return False
        return True
    return False
