"""A minimal, strict DER reader for the few structures ``cryptography`` does not decode:
vendor certificate-extension values (AMD VCEK TCB/hwID, TCG DICE FWID) and concatenated DER
certificates. Definite lengths only; anything malformed is an :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InputError

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
_CONSTRUCTED = 0x20
MAX_DEPTH = 16


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag byte, its content and the offset just past it."""

    tag: int
    content: bytes
    end: int

    @property
    def constructed(self) -> bool:
        return bool(self.tag & _CONSTRUCTED)


def _malformed(what: str, detail: str) -> InputError:
    return InputError(f"{what} is not valid DER: {detail}", code="der.malformed")


def read_tlv(data: bytes, pos: int = 0, *, what: str = "DER value") -> Tlv:
    """The element starting at ``pos``."""
    if pos + 2 > len(data):
        raise _malformed(what, "truncated header")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise _malformed(what, "multi-byte tags are not supported")
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise _malformed(what, "bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise _malformed(what, "non-minimal length")
        pos += n
    if pos + length > len(data):
        raise _malformed(what, f"element of {length} bytes runs past the end")
    return Tlv(tag, data[pos : pos + length], pos + length)


def read_whole(data: bytes, *, what: str = "DER value") -> Tlv:
    """The single element that ``data`` consists of (no trailing bytes)."""
    tlv = read_tlv(data, what=what)
    if tlv.end != len(data):
        raise _malformed(what, f"{len(data) - tlv.end} trailing bytes")
    return tlv


def children(content: bytes, *, what: str = "DER value") -> Iterator[Tlv]:
    """The elements inside a constructed element's content."""
    pos = 0
    while pos < len(content):
        tlv = read_tlv(content, pos, what=what)
        yield tlv
        pos = tlv.end


def der_integer(data: bytes, *, what: str) -> int:
    """A DER INTEGER that is the whole of ``data``."""
    tlv = read_whole(data, what=what)
    if tlv.tag != TAG_INTEGER or not tlv.content:
        raise _malformed(what, "not an INTEGER")
    return int.from_bytes(tlv.content, "big", signed=True)


def oid_string(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content ("" when empty)."""
    if not content:
        return ""
    first = min(content[0] // 40, 2)
    parts = [first, content[0] - 40 * first]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def walk(data: bytes, *, what: str = "DER value", depth: int = 0) -> Iterator[Tlv]:
    """Every element in ``data`` (a sequence of elements), depth first."""
    if depth > MAX_DEPTH:
        raise _malformed(what, "nested too deeply")
    for tlv in children(data, what=what):
        yield tlv
        if tlv.constructed:
            yield from walk(tlv.content, what=what, depth=depth + 1)


def split_concatenated(data: bytes, *, what: str, limit: int = 32) -> list[bytes]:
    """Split back-to-back DER elements (e.g. concatenated certificates)."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(parts) == limit:
            raise _malformed(what, f"more than {limit} elements")
        tlv = read_tlv(data, pos, what=what)
        parts.append(data[pos : tlv.end])
        pos = tlv.end
    return parts
