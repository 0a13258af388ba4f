"""Mutations of real samples for fuzz targets: overwrite, insert and truncate bytes."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, sample: bytes, max_ops: int = 4) -> bytes:
    """``sample`` with 1 to ``max_ops`` random edits (it may come out unchanged)."""
    blob = bytearray(sample)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("set", "set", "set", "insert", "truncate")))
        i = draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "set" and blob:
            blob[i] = draw(st.integers(0, 255))
        elif op == "insert":
            blob[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del blob[i:]
    return bytes(blob)
