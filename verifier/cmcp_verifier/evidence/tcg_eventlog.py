"""TCG2 crypto-agile event logs (TCG PC Client Platform Firmware Profile, §10): parse and replay.

Generic over the register the events extend: TPM PCRs, or the measurement registers of a
confidential VM (the CCEL log of Intel TDX uses the same format with MR indices, 1..4 =
RTMR0..3). The log starts with one legacy ``TCG_PCR_EVENT`` whose data is the
``Spec ID Event03`` structure listing the digest algorithms and their sizes; every later
record is a ``TCG_PCR_EVENT2``::

    u32 index · u32 event type · u32 digest count · (u16 alg id · digest)* · u32 size · data

All integers are little-endian. Firmware reserves a fixed log area and fills the unused
tail with 0xFF (or 0x00); a tail made only of that byte ends the log. Anything else that
does not parse is an :class:`~cmcp_verifier.errors.InputError`.

Use::

    log = parse_event_log(data)
    values = replay(log.events, ALG_SHA384)        # {index: final register value}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError
from ._common import Reader

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_SM3_256 = 0x0012
HASH_NAMES = {
    ALG_SHA1: "sha1",
    ALG_SHA256: "sha256",
    ALG_SHA384: "sha384",
    ALG_SHA512: "sha512",
    ALG_SM3_256: "sm3",
}

EV_NO_ACTION = 0x00000003
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
_LEGACY_DIGEST_SIZE = 20
_MAX_ALGORITHMS = 16


@dataclass(frozen=True)
class Event:
    """One measured event: the register it extends, its type, its digests and its data."""

    index: int
    event_type: int
    digests: dict[int, bytes]
    data: bytes
    offset: int


@dataclass(frozen=True)
class SpecId:
    """The ``Spec ID Event03`` header: spec version and the digest sizes by algorithm."""

    platform_class: int
    spec_version: tuple[int, int, int]
    uintn_size: int
    digest_sizes: dict[int, int]
    vendor_info: bytes


@dataclass(frozen=True)
class EventLog:
    """A parsed log: the header, then the events in order."""

    spec_id: SpecId
    events: list[Event]
    size: int  # bytes used, excluding the unused tail


def _malformed(message: str) -> InputError:
    return InputError(message, code="eventlog.malformed")


def _parse_spec_id(data: bytes) -> SpecId:
    r = Reader(data, what="Spec ID event")
    if r.take(16) != SPEC_ID_SIGNATURE:
        raise _malformed("event log is not crypto-agile (no 'Spec ID Event03' header)")
    platform_class = r.u32le()
    minor, major, errata, uintn = r.u8(), r.u8(), r.u8(), r.u8()
    count = r.u32le()
    if not 1 <= count <= _MAX_ALGORITHMS:
        raise _malformed(f"Spec ID event lists {count} digest algorithms")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, size = r.u16le(), r.u16le()
        if alg in sizes or not 1 <= size <= 64:
            raise _malformed(f"Spec ID event: bad algorithm entry {alg:#06x} (size {size})")
        sizes[alg] = size
    vendor = r.take(r.u8())
    if r.remaining():
        raise _malformed("Spec ID event has trailing bytes")
    return SpecId(platform_class, (major, minor, errata), uintn, sizes, vendor)


def _padding_start(data: bytes) -> int:
    """Where the unused tail (only 0xFF, or only 0x00, up to the end) begins."""
    return min(len(data.rstrip(b"\xff")), len(data.rstrip(b"\x00")))


def _parse_event2(r: Reader, sizes: dict[int, int]) -> Event:
    offset = r.pos
    index, event_type, count = r.u32le(), r.u32le(), r.u32le()
    if not 1 <= count <= len(sizes):
        raise _malformed(
            f"event at offset {offset} has {count} digests (log declares {len(sizes)})"
        )
    digests: dict[int, bytes] = {}
    for _ in range(count):
        alg = r.u16le()
        if alg not in sizes or alg in digests:
            raise _malformed(f"event at offset {offset}: unexpected digest algorithm {alg:#06x}")
        digests[alg] = r.take(sizes[alg])
    data = r.take(r.u32le())
    return Event(index, event_type, digests, data, offset)


def parse_event_log(data: bytes, *, what: str = "event log") -> EventLog:
    """Parse a crypto-agile TCG2 event log; raise :class:`InputError` on malformed input."""
    r = Reader(data, what=what)
    index, event_type = r.u32le(), r.u32le()
    r.take(_LEGACY_DIGEST_SIZE)
    header = r.take(r.u32le())
    if event_type != EV_NO_ACTION:
        raise _malformed(f"{what}: first event is type {event_type:#x}, not EV_NO_ACTION")
    spec_id = _parse_spec_id(header)
    del index  # the header's register index carries no meaning
    events: list[Event] = []
    end = _padding_start(data)
    while r.pos < end:
        events.append(_parse_event2(r, spec_id.digest_sizes))
    return EventLog(spec_id, events, r.pos)


def _initial_value(events: Iterable[Event], index: int, size: int) -> bytes:
    """Zeros, except a TPM PCR 0 whose log records a StartupLocality (its last byte)."""
    for ev in events:
        if (
            ev.index == index == 0
            and ev.event_type == EV_NO_ACTION
            and ev.data.startswith(STARTUP_LOCALITY_SIGNATURE)
            and len(ev.data) == len(STARTUP_LOCALITY_SIGNATURE) + 1
        ):
            return bytes(size - 1) + ev.data[-1:]
    return bytes(size)


def replay(
    events: list[Event], alg: int, *, indices: Iterable[int] | None = None
) -> dict[int, bytes]:
    """Final register values from extending each event's ``alg`` digest in order.

    ``EV_NO_ACTION`` events are not extended. Only registers named in ``indices`` are
    returned (default: every register the log touches). Raises :class:`InputError` when an
    extended event lacks an ``alg`` digest or the algorithm is not available.
    """
    name = HASH_NAMES.get(alg)
    if name is None or name not in hashlib.algorithms_available:
        raise InputError(f"digest algorithm {alg:#06x} is not supported", code="eventlog.alg")
    size = hashlib.new(name).digest_size
    wanted = set(indices) if indices is not None else {e.index for e in events}
    values = {i: _initial_value(events, i, size) for i in wanted}
    for ev in events:
        if ev.index not in values or ev.event_type == EV_NO_ACTION:
            continue
        digest = ev.digests.get(alg)
        if digest is None or len(digest) != size:
            raise _malformed(f"event at offset {ev.offset} has no {name} digest")
        values[ev.index] = hashlib.new(name, values[ev.index] + digest).digest()
    return values
