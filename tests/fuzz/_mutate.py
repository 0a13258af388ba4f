"""Mutations of real samples for fuzz targets: overwrite, insert and truncate bytes (and, with
``splice``, duplicate or drop a slice, which shifts everything behind it)."""

from __future__ import annotations

from hypothesis import strategies as st

_OPS = ("set", "set", "set", "insert", "truncate")
_SPLICE_OPS = (*_OPS, "dup", "drop")


@st.composite
def mutated(draw: st.DrawFn, sample: bytes, max_ops: int = 4, *, splice: bool = False) -> bytes:
    """``sample`` with 1 to ``max_ops`` random edits (it may come out unchanged)."""
    blob = bytearray(sample)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(_SPLICE_OPS if splice else _OPS))
        i = draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "set" and blob:
            blob[i] = draw(st.integers(0, 255))
        elif op == "insert":
            blob[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "dup":
            blob[i:i] = blob[i : i + draw(st.integers(1, 64))]
        elif op == "drop":
            del blob[i : i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del blob[i:]
    return bytes(blob)
