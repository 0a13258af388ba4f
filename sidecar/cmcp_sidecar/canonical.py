"""RFC 8785 canonical bytes on the gateway's hot path (audit lines, argument/result digests).

Plain values (:func:`cmcp_verifier.canonical.is_plain`: no floats, integers within
±(2^53-1), object keys within the Basic Multilingual Plane, exact built-in types, bounded
nesting) are written by orjson with sorted keys, which is their RFC 8785 form byte for byte
and a few times faster than the standard library's encoder; everything else, and a lone
surrogate orjson refuses, goes to the verifier's strict encoder, which decides and names the
problem. ``tests/fuzz/test_fuzz_fast_paths.py`` checks both against ``rfc8785.dumps``.
The verifier itself does not use orjson: an auditor's tool keeps its few dependencies.
"""

from __future__ import annotations

from typing import Any

import orjson

from cmcp_verifier import canonical as strict

_SORTED = orjson.OPT_SORT_KEYS


def canonical_bytes(value: Any, *, allow_floats: bool = False) -> bytes:
    """The RFC 8785 bytes of ``value``; as :func:`cmcp_verifier.canonical.canonical_bytes`."""
    if strict.is_plain(value):
        try:
            return orjson.dumps(value, option=_SORTED)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the strict path below names it
    return strict.canonical_bytes(value, allow_floats=allow_floats)
