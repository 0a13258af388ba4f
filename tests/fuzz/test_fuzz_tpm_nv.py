"""Fuzzing the TPM NV structures of the bundle record (tpm_nv.py): TPM2B_NV_PUBLIC and the NV
certify TPMS_ATTEST, random and mutated; only InputError may escape, and check_bundle_nv never
raises."""

from __future__ import annotations

import contextlib
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence import EvidenceReport
from cmcp_verifier.evidence.tpm_keys import AkPublic
from cmcp_verifier.evidence.tpm_nv import check_bundle_nv, parse_nv_certify, parse_nv_public

from ._mutate import mutated
from ._settings import fuzz_settings

# An extend index as the gateway defines it (written), and a certification of it.
PUBLIC = struct.pack(">IHIHH", 0x018C4D50, 0x000B, 0x22040044 | 0x20000000, 0, 32)
NV_PUBLIC = struct.pack(">H", len(PUBLIC)) + PUBLIC
NAME = struct.pack(">H", 0x000B) + hashlib.sha256(PUBLIC).digest()
ATTEST = (
    struct.pack(">IH", 0xFF544347, 0x8014)
    + struct.pack(">H", 34) + NAME  # qualifiedSigner (any name)
    + struct.pack(">H", 32) + bytes(32)  # extraData
    + bytes(17 + 8)  # clockInfo, firmwareVersion
    + struct.pack(">H", len(NAME)) + NAME
    + struct.pack(">HH", 0, 32) + bytes(32)
)  # fmt: skip
AK = AkPublic(ec.generate_private_key(ec.SECP256R1()).public_key(), "test")


@fuzz_settings
@given(st.one_of(mutated(NV_PUBLIC), st.binary(max_size=64)))
def test_nv_public(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_nv_public(data)


@fuzz_settings
@given(st.one_of(mutated(ATTEST), st.binary(max_size=200)))
def test_nv_certify(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_nv_certify(data)


@fuzz_settings
@given(mutated(NV_PUBLIC), mutated(ATTEST), st.binary(max_size=80))
def test_bundle_check_never_raises(public: bytes, attest: bytes, signature: bytes) -> None:
    report = EvidenceReport(subject="fuzz", report_data=bytes(32))
    raw = {"bundle_nv_public": public, "bundle_nv_attest": attest, "bundle_nv_signature": signature}
    check_bundle_nv(raw, AK, report)
    assert "bundle_measurement" not in report.extra  # nothing here is signed by the AK
