"""The hot path's fast paths give exactly what the strict paths give.

* ``canonical_bytes``' fast path (C ``json`` encoder) is RFC 8785 (``rfc8785.dumps``), and so
  is the gateway's (``cmcp_sidecar.canonical``: orjson);
* ``strict_loads``' fast path (C ``json`` decoder with hooks) parses as ``parse_json``.

The canonical reference is the strict path alone: ``check_canonicalizable`` then
``rfc8785.dumps``.
For every generated value both must return the same bytes, or both raise an
:class:`InputError` with the same code. The strategies aim at where JSON encoders differ:
control characters and escapes, non-ASCII and non-BMP text (in keys: RFC 8785 sorts keys by
UTF-16 code units), lone surrogates, integers around ±2^53, floats, tuples, subclasses of
the built-in types and deep nesting.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from cmcp_sidecar import canonical as gateway_canonical
from cmcp_sidecar.mcp.jsonrpc import strict_loads
from cmcp_verifier import canonical
from cmcp_verifier.canonical import MAX_DEPTH, canonical_bytes, check_canonicalizable, parse_json
from cmcp_verifier.errors import InputError

from ._settings import fuzz_settings

SAFE = 2**53 - 1
# Characters where encoders disagree if they disagree at all.
_TRICKY = [chr(c) for c in range(0x20)] + [
    '"',
    "\\",
    "/",
    "\x7f",
    "\x80",
    "\u00e9",
    "\u2028",
    "\u2029",
    "\ud7ff",
    "\ue000",
    "\uffff",
    "\ufeff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
]
_chars = st.one_of(
    st.sampled_from(_TRICKY),
    st.characters(exclude_categories=["Cs"]),  # any code point but surrogates
    st.characters(),  # surrogates included: must be refused identically
)
_text = st.text(_chars, max_size=12)
_ints = st.one_of(
    st.integers(),
    st.integers(-SAFE - 3, -SAFE + 3),
    st.integers(SAFE - 3, SAFE + 3),
    st.integers(-1000, 1000),
)


class Str(str):
    pass


class Int(int):
    pass


class Dict(dict):  # type: ignore[type-arg]
    pass


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    _text,
    st.floats(),  # NaN and infinities too
    st.builds(Str, _text),
    st.builds(Int, _ints),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(_text, children, max_size=5),
        st.dictionaries(_text, children, max_size=5).map(Dict),
    )


_values = st.recursive(_scalars, _containers, max_leaves=30)
# Only what the fast path takes: exact types, no floats, keys within the BMP.
_bmp_keys = st.text(
    st.one_of(st.sampled_from(_TRICKY[:-3]), st.characters(max_codepoint=0xFFFF)), max_size=12
).filter(lambda k: all(not 0xD800 <= ord(c) <= 0xDFFF for c in k))
_plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-SAFE, SAFE), _text),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_bmp_keys, children, max_size=5),
    ),
    max_leaves=30,
)


def reference(value: Any, allow_floats: bool) -> bytes:
    """The strict path: what canonical_bytes did before the fast path existed."""
    check_canonicalizable(value, allow_floats=allow_floats)
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, RecursionError, ValueError, TypeError) as exc:
        raise InputError(f"value has no RFC 8785 form: {exc}", code="json.canonical") from None


def outcome(fn: Any, value: Any, allow_floats: bool) -> tuple[str, Any]:
    try:
        return "ok", fn(value, allow_floats=allow_floats)
    except InputError as exc:
        return "error", exc.code


ENCODERS = (canonical_bytes, gateway_canonical.canonical_bytes)


def assert_same(value: Any) -> None:
    for allow_floats in (False, True):
        want = outcome(lambda v, allow_floats: reference(v, allow_floats), value, allow_floats)
        for encoder in ENCODERS:
            got = outcome(encoder, value, allow_floats)
            assert got == want, (encoder.__module__, value, allow_floats)


@fuzz_settings
@given(_values)
def test_fast_path_equals_rfc8785(value: Any) -> None:
    assert_same(value)


@fuzz_settings
@given(_plain_values)
def test_plain_values_take_the_fast_path(value: Any) -> None:
    # Guards the property above against vacuity: these really take the fast paths.
    assert canonical.is_plain(value)
    assert_same(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ue000": 2},  # UTF-16 order differs from code point order
        {"a\ud800": 1},  # lone surrogate in a key
        ["\udfff"],
        {"x": 0.5, "y": 1e21, "z": -0.0},
        [SAFE, -SAFE],
        [SAFE + 1],
        [-SAFE - 1],
        {"k": True, "n": None, "f": False},
        {1: "non-string key"},
        [Str("a"), Int(3), Dict(b=1, a=2)],
        {'\x00\x1f\b\f\n\r\t"\\/\x7f\u2028': '\x00\x1f\b\f\n\r\t"\\/\x7f\u2028'},
        "just a string \u2028",
        42,
        None,
        (1, (2, [3])),
        {"s": {1, 2}},
        b"bytes",
    ],
)
def test_edge_cases(value: Any) -> None:
    assert_same(value)


def test_nesting_limit_is_the_strict_paths() -> None:
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2):
        value: Any = []
        for _ in range(depth):
            value = [value]
        assert_same(value)
        nested: Any = "leaf"
        for _ in range(depth):
            nested = {"k": nested}
        assert_same(nested)


def test_cycles_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    limit = sys.getrecursionlimit()
    for encoder in ENCODERS:
        assert outcome(encoder, loop, False) == ("error", "json.depth")
    assert sys.getrecursionlimit() == limit


# -- strict_loads ---------------------------------------------------------------------------

_numbers = st.one_of(
    st.integers().map(str),
    st.integers(-SAFE - 3, SAFE + 3).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1E+308", "1.5e-999", "0.1e99", "1E2", "-0", "0.0", "1e05"]),
)
_json_fragments = st.recursive(
    st.one_of(
        _numbers,
        st.sampled_from(["true", "false", "null", "NaN", "Infinity", "-Infinity"]),
        _text.map(lambda t: json.dumps(t, ensure_ascii=False)),
        _text.map(json.dumps),  # \u escapes, lone surrogates among them
        st.sampled_from(['"\\ud800"', '"\\uDC00x"', '"a\\/b"', '"\\u0041"']),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(_text.map(json.dumps), children), max_size=4).map(
            lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"
        ),
    ),
    max_leaves=20,
)


def _parsed(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", repr(fn(data))  # repr: tells -0.0 from 0, 1 from 1.0 and True
    except InputError as exc:
        return "error", exc.code


def assert_parses_alike(data: bytes) -> None:
    fast = _parsed(lambda d: strict_loads(d, max_bytes=1 << 20), data)
    strict = _parsed(lambda d: parse_json(d, allow_floats=True, max_bytes=1 << 20), data)
    assert fast == strict, data


@fuzz_settings
@given(_json_fragments)
def test_fast_parse_equals_strict_parse(text: str) -> None:
    assert_parses_alike(text.encode("utf-8", "surrogatepass"))


@fuzz_settings
@given(st.binary(max_size=64))
def test_fast_parse_equals_strict_parse_on_any_bytes(data: bytes) -> None:
    assert_parses_alike(data)
