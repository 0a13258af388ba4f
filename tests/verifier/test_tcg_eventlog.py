"""The TCG event log parser shared by TPM and TDX (CCEL) verification.

Real logs: the GCE vTPM firmware log (crypto-agile, SHA-1/256/384) and the GCP TDX CCEL log
(crypto-agile, SHA-384, 0xFF-padded). Small synthetic logs, written by the helpers below (the
writer is test code, the parser is under test), cover the SHA-1-only format and each bound.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence.ccel import replay_rtmrs
from cmcp_verifier.evidence.tcg_eventlog import (
    ALG_SHA1,
    ALG_SHA256,
    ALG_SHA384,
    EV_NO_ACTION,
    MAX_EVENTS,
    Event,
    parse_event_log,
    replay,
)
from cmcp_verifier.evidence.tpm_gotpm import parse_gotpm_attestation
from cmcp_verifier.evidence.tpm_structures import HASH_ALGS

EV_IPL = 0xD
BANKS = {ALG_SHA1: hashlib.sha1, ALG_SHA256: hashlib.sha256}


def spec_id_event(sizes: dict[int, int], *, vendor: bytes = b"") -> bytes:
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(sizes))
    spec += b"".join(struct.pack("<HH", a, s) for a, s in sizes.items())
    spec += bytes([len(vendor)]) + vendor
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec


def event2(index: int, kind: int, data: bytes, digests: dict[int, bytes]) -> bytes:
    body = b"".join(struct.pack("<H", a) + d for a, d in digests.items())
    head = struct.pack("<III", index, kind, len(digests))
    return head + body + struct.pack("<I", len(data)) + data


def agile_log(events: list[tuple[int, bytes]], kind: int = EV_IPL) -> bytes:
    sizes = {a: h().digest_size for a, h in BANKS.items()}
    out = spec_id_event(sizes)
    for index, data in events:
        out += event2(index, kind, data, {a: h(data).digest() for a, h in BANKS.items()})
    return out


def sha1_log(events: list[tuple[int, bytes]]) -> bytes:
    return b"".join(
        struct.pack("<II", i, EV_IPL) + hashlib.sha1(d).digest() + struct.pack("<I", len(d)) + d
        for i, d in events
    )


def extend(alg: str, values: list[bytes], start: bytes | None = None) -> bytes:
    reg = start if start is not None else bytes(hashlib.new(alg).digest_size)
    for v in values:
        reg = hashlib.new(alg, reg + hashlib.new(alg, v).digest()).digest()
    return reg


EVENTS = [(0, b"crtm"), (4, b"bootloader"), (0, b"firmware"), (8, b"cmdline")]


def test_crypto_agile_log_replays_per_bank() -> None:
    log = parse_event_log(agile_log(EVENTS))
    assert log.crypto_agile and log.banks == ["sha1", "sha256"]
    assert [e.index for e in log.events] == [0, 4, 0, 8]
    assert log.events[1].type_name == "EV_IPL"
    for alg, name in ((ALG_SHA1, "sha1"), (ALG_SHA256, "sha256")):
        regs = replay(log.events, alg)  # by algorithm id …
        assert regs == replay(log.events, HASH_ALGS[alg])  # … or by HashAlg
        assert regs[0] == extend(name, [b"crtm", b"firmware"])
        assert regs[8] == extend(name, [b"cmdline"])
        assert sorted(regs) == [0, 4, 8]


def test_sha1_only_log() -> None:
    log = parse_event_log(sha1_log(EVENTS))
    assert not log.crypto_agile and log.digest_sizes == {ALG_SHA1: 20}
    assert len(log.events) == 4
    assert replay(log.events, ALG_SHA1)[4] == extend("sha1", [b"bootloader"])
    with pytest.raises(InputError) as exc:
        replay(log.events, ALG_SHA256)
    assert exc.value.code == "eventlog.digests"


def test_indices_name_the_registers_returned() -> None:
    log = parse_event_log(agile_log(EVENTS))
    regs = replay(log.events, ALG_SHA256, indices=[4, 9])
    assert regs == {4: extend("sha256", [b"bootloader"]), 9: bytes(32)}


def test_no_action_events_are_not_extended_and_startup_locality_sets_pcr0() -> None:
    sizes = {ALG_SHA256: 32}
    locality = b"StartupLocality\x00\x03"
    data = (
        spec_id_event(sizes)
        + event2(0, EV_NO_ACTION, locality, {ALG_SHA256: bytes(32)})
        + event2(0, EV_IPL, b"crtm", {ALG_SHA256: hashlib.sha256(b"crtm").digest()})
        + event2(5, EV_NO_ACTION, b"anything", {ALG_SHA256: b"\x01" * 32})
    )
    regs = replay(parse_event_log(data).events, ALG_SHA256)
    assert regs == {0: extend("sha256", [b"crtm"], start=bytes(31) + b"\x03")}
    # A StartupLocality event after PCR 0 was extended changes nothing.
    late = [
        Event(0, EV_IPL, {ALG_SHA256: bytes(32)}, b""),
        Event(0, EV_NO_ACTION, {ALG_SHA256: bytes(32)}, locality),
    ]
    assert replay(late, ALG_SHA256)[0] == hashlib.sha256(bytes(64)).digest()


@pytest.mark.parametrize("pad", [b"\xff", b"\x00"])
def test_padding_of_one_repeated_byte_ends_the_log(pad: bytes) -> None:
    data = agile_log(EVENTS)
    log = parse_event_log(data + pad * 4096)
    assert len(log.events) == 4 and log.size == len(data)


def test_mixed_or_partial_padding_is_rejected() -> None:
    data = agile_log(EVENTS)
    for tail in (b"\x00\xff", b"\xff" * 8 + b"\x01", b"\x01"):
        with pytest.raises(InputError):
            parse_event_log(data + tail)


def test_every_truncation_is_rejected_or_a_shorter_log() -> None:
    data = agile_log(EVENTS)
    for cut in range(len(data)):
        try:
            log = parse_event_log(data[:cut])
        except InputError as exc:
            assert exc.code in {"evidence.truncated", "eventlog.spec_id"}, exc.code
            continue
        rest = data[log.size : cut]  # a cut inside an event is rejected, unless what is
        assert len(set(rest)) <= 1 and set(rest) <= {0, 0xFF}  # left looks like padding


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (spec_id_event({}), "eventlog.spec_id"),  # no algorithms
        (spec_id_event({ALG_SHA256: 20}), "eventlog.spec_id"),  # wrong size for SHA-256
        (spec_id_event({0x0099: 0}), "eventlog.spec_id"),  # zero size
        (spec_id_event({ALG_SHA256: 32})[:-1] + b"\x01", "evidence.truncated"),  # vendor info
        (
            spec_id_event({ALG_SHA256: 32})
            + event2(1, EV_IPL, b"", {ALG_SHA256: bytes(32), ALG_SHA1: bytes(20)}),
            "eventlog.digests",  # more digests than declared
        ),
        (
            spec_id_event({ALG_SHA256: 32, ALG_SHA1: 20})
            + event2(1, EV_IPL, b"", {ALG_SHA256: bytes(32)}),
            "eventlog.digests",  # a declared bank missing
        ),
        (
            spec_id_event({ALG_SHA256: 32}) + event2(1, EV_IPL, b"", {ALG_SHA384: bytes(32)}),
            "eventlog.digests",  # undeclared algorithm
        ),
        (
            spec_id_event({ALG_SHA256: 32}) + struct.pack("<III", 1, EV_IPL, 0xFFFFFFFF),
            "eventlog.digests",  # huge digest count
        ),
        (
            spec_id_event({ALG_SHA256: 32})
            + struct.pack("<IIIH", 1, EV_IPL, 1, ALG_SHA256)
            + bytes(32)
            + struct.pack("<I", 0xFFFFFFF0),
            "evidence.truncated",  # huge event size
        ),
        (b"", "evidence.truncated"),
    ],
)
def test_malformed_logs_name_their_problem(data: bytes, code: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_event_log(data)
    assert exc.value.code == code


def test_event_count_is_bounded() -> None:
    one = struct.pack("<II", 1, EV_IPL) + bytes(20) + struct.pack("<I", 0)
    parse_event_log(one * MAX_EVENTS)
    with pytest.raises(InputError) as exc:
        parse_event_log(one * (MAX_EVENTS + 1))
    assert exc.value.code == "eventlog.size"


def test_unsupported_replay_algorithm() -> None:
    log = parse_event_log(agile_log(EVENTS))
    with pytest.raises(InputError) as exc:
        replay(log.events, 0x0012)  # SM3: declared size known, no implementation here
    assert exc.value.code == "eventlog.alg"


def test_real_logs(evidence_dir: Path) -> None:
    gce = parse_gotpm_attestation(
        (evidence_dir / "tpm" / "gce-cos-85-nonce9009.attestation.json").read_bytes()
    )
    log = parse_event_log(gce.event_log or b"")
    assert log.banks == ["sha1", "sha256", "sha384"] and len(log.events) == 44
    ccel_data = (evidence_dir / "tdx" / "gcp-cos-ccel.eventlog.bin").read_bytes()
    ccel = parse_event_log(ccel_data)
    assert ccel.digest_sizes == {ALG_SHA384: 48} and len(ccel.events) == 43
    assert ccel.size < len(ccel_data) and not ccel_data[ccel.size :].strip(b"\xff")
    assert len(replay_rtmrs(ccel)) == 4
