"""TCG event logs (TCG PC Client Platform Firmware Profile, §10): parse and replay.

One parser for every log this verifier reads: a TPM's firmware log
(``/sys/kernel/security/tpm0/binary_bios_measurements``) and the CCEL log of an Intel TDX
guest, whose register index is the TDX measurement register (0 = MRTD, 1..4 = RTMR0..3).

Two formats, told apart by the first record (a legacy ``TCG_PCR_EVENT``):

- crypto-agile: the first record is an ``EV_NO_ACTION`` event whose data is the
  ``Spec ID Event03`` structure listing the digest algorithms and their sizes; every later
  record is a ``TCG_PCR_EVENT2``::

      u32 index · u32 event type · u32 digest count · (u16 alg id · digest)* · u32 size · data

  carrying exactly one digest per declared algorithm;
- SHA-1 only: every record is a ``TCG_PCR_EVENT`` (``u32 index · u32 type · 20-byte SHA-1 ·
  u32 size · data``).

All integers are little-endian and every length is bounded by the bytes present. Firmware
reserves a fixed log area and fills the unused tail with 0xFF (or 0x00): a tail made only of
one of those bytes ends the log. Anything else that does not parse is an
:class:`~cmcp_verifier.errors.InputError` (codes ``eventlog.*``, ``evidence.truncated``).

:func:`replay` extends, per bank, every event's digest into its register, skipping
``EV_NO_ACTION`` events and honouring a StartupLocality event for register 0. It checks the
log against the registers, not what the event data means.

Use::

    log = parse_event_log(data)
    values = replay(log.events, ALG_SHA384, indices=range(1, 5))   # {index: final value}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InputError
from ._common import Reader
from .tpm_structures import HASH_ALGS, OTHER_HASH_SIZES, HashAlg, alg_name

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D

EV_NO_ACTION = 0x00000003
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
SHA1_DIGEST_SIZE = 20
MAX_EVENTS = 100_000
MAX_ALGORITHMS = 16

EVENT_TYPES = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}


@dataclass(frozen=True)
class Event:
    """One measured event: the register it extends, its type, a digest per algorithm id, its
    data, and where it starts in the log."""

    index: int
    event_type: int
    digests: dict[int, bytes]
    data: bytes
    offset: int = 0

    @property
    def type_name(self) -> str:
        return EVENT_TYPES.get(self.event_type, f"0x{self.event_type:08x}")


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
    """A parsed log: its header (None for a SHA-1-only log), its events, the bytes used."""

    spec_id: SpecId | None
    events: tuple[Event, ...]
    size: int  # bytes used, excluding the unused tail

    @property
    def crypto_agile(self) -> bool:
        return self.spec_id is not None

    @property
    def digest_sizes(self) -> dict[int, int]:
        """Algorithm id → digest size of every bank the log carries."""
        return self.spec_id.digest_sizes if self.spec_id else {ALG_SHA1: SHA1_DIGEST_SIZE}

    @property
    def banks(self) -> list[str]:
        return [alg_name(a) for a in self.digest_sizes]


def parse_event_log(data: bytes, *, what: str = "event log") -> EventLog:
    """Parse a crypto-agile or SHA-1-only TCG event log; raise :class:`InputError`."""
    r = Reader(data, what=what)
    end = _padding_start(data)
    first = _read_sha1_event(r)
    spec_id = _spec_id(first, what) if first.event_type == EV_NO_ACTION else None
    events: list[Event] = [] if spec_id else [first]
    while r.pos < end:
        if len(events) >= MAX_EVENTS:
            raise InputError(f"{what} has more than {MAX_EVENTS} events", code="eventlog.size")
        if spec_id is None:
            events.append(_read_sha1_event(r))
        else:
            events.append(_read_event2(r, spec_id.digest_sizes, what))
    return EventLog(spec_id, tuple(events), r.pos)


def _padding_start(data: bytes) -> int:
    """Where the unused tail (only 0xFF, or only 0x00, up to the end) begins."""
    return min(len(data.rstrip(b"\xff")), len(data.rstrip(b"\x00")))


def _read_sha1_event(r: Reader) -> Event:
    offset = r.pos
    index, event_type = r.u32le(), r.u32le()
    digest = r.take(SHA1_DIGEST_SIZE)
    return Event(index, event_type, {ALG_SHA1: digest}, r.take(r.u32le()), offset)


def _spec_id(header: Event, what: str) -> SpecId | None:
    """The Spec ID Event03 header; None when ``header`` is not one (a SHA-1-only log)."""
    if not header.data.startswith(SPEC_ID_SIGNATURE):
        return None
    r = Reader(header.data, what="Spec ID event", offset=len(SPEC_ID_SIGNATURE))
    platform_class = r.u32le()
    minor, major, errata, uintn = r.u8(), r.u8(), r.u8(), r.u8()
    count = r.u32le()
    if not 0 < count <= MAX_ALGORITHMS:
        raise _bad_spec_id(what, f"declares {count} digest algorithms")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, size = r.u16le(), r.u16le()
        known = HASH_ALGS[alg].size if alg in HASH_ALGS else OTHER_HASH_SIZES.get(alg)
        if alg in sizes or not 0 < size <= 64 or (known is not None and known != size):
            raise _bad_spec_id(what, f"bad entry for algorithm 0x{alg:04x} (size {size})")
        sizes[alg] = size
    vendor = r.take(r.u8())
    if r.remaining():
        raise _bad_spec_id(what, f"{r.remaining()} trailing bytes")
    return SpecId(platform_class, (major, minor, errata), uintn, sizes, vendor)


def _bad_spec_id(what: str, detail: str) -> InputError:
    return InputError(f"{what}: Spec ID event {detail}", code="eventlog.spec_id")


def _read_event2(r: Reader, sizes: dict[int, int], what: str) -> Event:
    offset = r.pos
    index, event_type, count = r.u32le(), r.u32le(), r.u32le()
    if count != len(sizes):
        raise InputError(
            f"{what}: event at offset {offset} has {count} digests, the log declares {len(sizes)}",
            code="eventlog.digests",
        )
    digests: dict[int, bytes] = {}
    for _ in range(count):
        alg = r.u16le()
        if alg not in sizes or alg in digests:
            raise InputError(
                f"{what}: event at offset {offset}: unexpected digest algorithm 0x{alg:04x}",
                code="eventlog.digests",
            )
        digests[alg] = r.take(sizes[alg])
    return Event(index, event_type, digests, r.take(r.u32le()), offset)


def _startup_locality(event: Event) -> int | None:
    """The locality a StartupLocality event (EV_NO_ACTION, register 0) records, else None."""
    data = event.data
    if (
        event.index == 0
        and event.event_type == EV_NO_ACTION
        and len(data) == len(STARTUP_LOCALITY_SIGNATURE) + 1
        and data.startswith(STARTUP_LOCALITY_SIGNATURE)
    ):
        return data[-1]
    return None


def replay(
    events: Sequence[Event], alg: HashAlg | int, *, indices: Iterable[int] | None = None
) -> dict[int, bytes]:
    """Register values after extending each event's ``alg`` digest in order, from reset.

    ``alg`` is a :class:`~.tpm_structures.HashAlg` or its TPM_ALG_ID. ``EV_NO_ACTION`` events
    are not extended; a StartupLocality event seen before register 0 is first extended sets
    its initial value (the locality in the last byte). Returned: the registers named in
    ``indices`` (untouched ones at their initial value), by default every register the log
    extends. Raises :class:`InputError` when an extended event lacks an ``alg`` digest or the
    algorithm is not supported.
    """
    hash_alg = alg if isinstance(alg, HashAlg) else HASH_ALGS.get(alg)
    if hash_alg is None:
        raise InputError(f"digest algorithm 0x{alg:04x} is not supported", code="eventlog.alg")
    zero = bytes(hash_alg.size)
    regs: dict[int, bytes] = {}
    for ev in events:
        if ev.event_type == EV_NO_ACTION:
            locality = _startup_locality(ev)
            if locality is not None and 0 not in regs:
                regs[0] = zero[:-1] + bytes([locality])
            continue
        digest = ev.digests.get(hash_alg.alg_id)
        if digest is None or len(digest) != hash_alg.size:
            raise InputError(
                f"event {ev.type_name} at offset {ev.offset} for register {ev.index} has no "
                f"{hash_alg.name} digest",
                code="eventlog.digests",
            )
        regs[ev.index] = hash_alg.digest(regs.get(ev.index, zero) + digest)
    if indices is None:
        return regs
    return {i: regs.get(i, zero) for i in indices}
