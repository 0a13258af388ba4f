"""TCG event logs (TCG PC Client Platform Firmware Profile, §10): parse and replay.

Reads the crypto-agile format (a TCG_PCR_EVENT header carrying "Spec ID Event03", then
TCG_PCR_EVENT2 records with one digest per algorithm) and the older SHA-1-only format
(TCG_PCR_EVENT records throughout). Little-endian, strictly bounded; the only bytes allowed
after the last event are padding of one repeated 0x00 or 0xFF byte (firmware tables such as
the CCEL are padded). Errors are :class:`~cmcp_verifier.errors.InputError` (code ``eventlog.*``).

:func:`replay` extends, per bank, every event's digest into its register (PCR, or the CC
measurement register index for a CCEL log), skipping EV_NO_ACTION events and honouring the
StartupLocality event for PCR 0. It checks the log's integrity against the registers, not what
the event data means: data whose digest a verifier relies on must be checked separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError
from ._common import Reader
from .tpm_structures import HASH_ALGS, OTHER_HASH_SIZES, HashAlg, alg_name

EV_NO_ACTION = 0x3
SHA1_ALG = 0x0004
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY = b"StartupLocality\x00"
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
    """One measured event: register index, type, digest per algorithm id, event data."""

    index: int
    type: int
    digests: dict[int, bytes]
    data: bytes

    @property
    def type_name(self) -> str:
        return EVENT_TYPES.get(self.type, f"0x{self.type:08x}")


@dataclass(frozen=True)
class EventLog:
    """A parsed log: its events (header excluded) and the digest sizes it declares."""

    events: tuple[Event, ...]
    digest_sizes: dict[int, int]  # algorithm id → digest size
    crypto_agile: bool

    @property
    def banks(self) -> list[str]:
        return [alg_name(a) for a in self.digest_sizes]


def parse_event_log(data: bytes) -> EventLog:
    """Parse a crypto-agile (or SHA-1-only) TCG event log."""
    r = Reader(data, what="event log")
    first = _read_sha1_event(r)
    sizes = _spec_id_sizes(first)
    if sizes is None:  # SHA-1-only log: the first record is an ordinary event
        events = [first]
        while not _only_padding(r):
            _check_count(events)
            events.append(_read_sha1_event(r))
        return EventLog(tuple(events), {SHA1_ALG: 20}, crypto_agile=False)
    events = []
    while not _only_padding(r):
        _check_count(events)
        events.append(_read_event2(r, sizes))
    return EventLog(tuple(events), sizes, crypto_agile=True)


def _check_count(events: list[Event]) -> None:
    if len(events) >= MAX_EVENTS:
        raise InputError(f"event log has more than {MAX_EVENTS} events", code="eventlog.size")


def _only_padding(r: Reader) -> bool:
    rest = r.data[r.pos :]
    return not rest or (rest[0] in (0x00, 0xFF) and rest.count(rest[:1]) == len(rest))


def _read_sha1_event(r: Reader) -> Event:
    index, kind = r.u32le(), r.u32le()
    digest = r.take(20)
    data = r.take(r.u32le())
    return Event(index, kind, {SHA1_ALG: digest}, data)


def _spec_id_sizes(event: Event) -> dict[int, int] | None:
    """Digest sizes from a Spec ID Event03 header; None when ``event`` is not one."""
    if event.type != EV_NO_ACTION or not event.data.startswith(SPEC_ID_SIGNATURE):
        return None
    r = Reader(event.data, what="Spec ID event", offset=len(SPEC_ID_SIGNATURE))
    r.take(4 + 4)  # platformClass, spec version minor/major, errata, uintnSize
    count = r.u32le()
    if not 0 < count <= MAX_ALGORITHMS:
        raise InputError(f"Spec ID event declares {count} algorithms", code="eventlog.spec_id")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, size = r.u16le(), r.u16le()
        known = HASH_ALGS[alg].size if alg in HASH_ALGS else OTHER_HASH_SIZES.get(alg)
        if alg in sizes or not 0 < size <= 64 or (known is not None and known != size):
            raise InputError(
                f"Spec ID event: bad entry for algorithm 0x{alg:04x} (size {size})",
                code="eventlog.spec_id",
            )
        sizes[alg] = size
    r.take(r.u8())  # vendorInfo
    if r.remaining():
        raise InputError("Spec ID event has trailing bytes", code="eventlog.spec_id")
    return sizes


def _read_event2(r: Reader, sizes: dict[int, int]) -> Event:
    start = r.pos
    index, kind, count = r.u32le(), r.u32le(), r.u32le()
    if count != len(sizes):
        raise InputError(
            f"event at offset {start} has {count} digests, the log declares {len(sizes)}",
            code="eventlog.digests",
        )
    digests: dict[int, bytes] = {}
    for _ in range(count):
        alg = r.u16le()
        if alg not in sizes or alg in digests:
            raise InputError(
                f"event at offset {start}: unexpected digest algorithm 0x{alg:04x}",
                code="eventlog.digests",
            )
        digests[alg] = r.take(sizes[alg])
    data = r.take(r.u32le())
    return Event(index, kind, digests, data)


def replay(events: Iterable[Event], alg: HashAlg) -> dict[int, bytes]:
    """Register values after extending every event's ``alg`` digest, from reset state."""
    regs: dict[int, bytes] = {}
    zero = bytes(alg.size)
    for ev in events:
        if ev.type == EV_NO_ACTION:
            locality = ev.data[:16] == STARTUP_LOCALITY and len(ev.data) == 17
            if locality and ev.index == 0 and 0 not in regs:
                regs[0] = zero[:-1] + ev.data[16:17]
            continue
        digest = ev.digests.get(alg.alg_id)
        if digest is None:
            raise InputError(
                f"event {ev.type_name} for register {ev.index} has no {alg.name} digest",
                code="eventlog.digests",
            )
        regs[ev.index] = alg.digest(regs.get(ev.index, zero) + digest)
    return regs
