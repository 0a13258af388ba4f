"""The Confidential Computing Event Log (CCEL) of a TDX guest: ACPI table and RTMR replay.

The ``CCEL`` ACPI table (UEFI 2.10 / ACPI 6.5) says where firmware put the log: a 36-byte
ACPI header, then ``u8 CC type (2 = TDX) · u8 subtype · u16 reserved · u64 log area minimum
length (LAML) · u64 log area start address (LASA)``. The log itself is a TCG2 crypto-agile
event log (:mod:`.tcg_eventlog`) whose register index is the TDX measurement register:
0 = MRTD, 1..4 = RTMR0..3, extended with SHA-384.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import InputError
from .tcg_eventlog import ALG_SHA384, EventLog, replay

CCEL_SIGNATURE = b"CCEL"
CC_TYPE_TDX = 2
_TABLE_SIZE = 56
RTMR_COUNT = 4


@dataclass(frozen=True)
class CcelTable:
    cc_type: int
    cc_subtype: int
    log_area_length: int
    log_area_start: int


def parse_ccel_table(data: bytes) -> CcelTable:
    """Parse and checksum the CCEL ACPI table; raise :class:`InputError` when malformed."""
    if len(data) < _TABLE_SIZE or data[:4] != CCEL_SIGNATURE:
        raise InputError("not a CCEL ACPI table", code="ccel.table")
    (length,) = struct.unpack_from("<I", data, 4)
    if length != len(data) or sum(data) % 256:
        raise InputError("CCEL ACPI table length or checksum is wrong", code="ccel.table")
    cc_type, subtype, _, laml, lasa = struct.unpack_from("<BBHQQ", data, 36)
    return CcelTable(cc_type, subtype, laml, lasa)


def replay_rtmrs(log: EventLog) -> tuple[bytes, ...]:
    """RTMR0..3 as the log's SHA-384 digests extend them from zero."""
    if ALG_SHA384 not in log.digest_sizes:
        raise InputError("CCEL event log carries no SHA-384 digests", code="ccel.alg")
    values = replay(log.events, ALG_SHA384, indices=range(1, RTMR_COUNT + 1))
    return tuple(values[i] for i in range(1, RTMR_COUNT + 1))
