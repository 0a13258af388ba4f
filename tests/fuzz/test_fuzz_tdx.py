"""Fuzzing the TDX parsers: quotes, DCAP collateral JSON, CRLs and issuer chains, PCK
extensions, CCEL ACPI tables (the event log parser: test_fuzz_eventlog.py).

Inputs are real samples (../shared/evidence/tdx) with random byte changes, cuts and splices,
plus raw random bytes. Nothing may raise anything but a CmcpError, and a changed quote must
never verify.
"""

from __future__ import annotations

import contextlib

from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.errors import CmcpError
from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.evidence._common import load_certificates
from cmcp_verifier.evidence.ccel import parse_ccel_table
from cmcp_verifier.evidence.sgx_pck import SGX_EXTENSION_OID, parse_sgx_extension
from cmcp_verifier.evidence.tdx import TdxCollateral, verify_td_quote
from cmcp_verifier.evidence.tdx_collateral import (
    parse_qe_identity,
    parse_signed_json,
    parse_tcb_info,
)
from cmcp_verifier.evidence.tdx_quote import parse_quote
from cmcp_verifier.report import Status

from ..conftest import EVIDENCE
from ._settings import fuzz_settings

TDX = EVIDENCE / "tdx"
QUOTES = [(TDX / f"{n}.quote.dat").read_bytes() for n in ("trustee-v5", "edgeless-v4")]
TCB_INFO = (TDX / "go-tdx-guest-v5.tcbinfo.json").read_bytes()
QE_IDENTITY = (TDX / "go-tdx-guest.qeidentity.json").read_bytes()
ACPI = (TDX / "gcp-cos-ccel.acpi-table.bin").read_bytes()
_PCK = x509.load_pem_x509_certificates(parse_quote(QUOTES[1]).pck_chain_pem.rstrip(b"\0"))[0]
SGX_EXT: bytes = _PCK.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value.value
POLICY = EvidencePolicy()


def mutate(data: st.DataObject, blob: bytes) -> bytes:
    """1-4 edits: overwrite a byte, cut the tail, duplicate or drop a slice."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        if not out:
            break
        i = data.draw(st.integers(0, len(out) - 1))
        op = data.draw(st.sampled_from(("set", "cut", "dup", "drop")))
        if op == "set":
            out[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del out[i:]
        elif op == "dup":
            out[i:i] = out[i : i + data.draw(st.integers(1, 64))]
        else:
            del out[i : i + data.draw(st.integers(1, 64))]
    return bytes(out)


@fuzz_settings
@given(st.data())
def test_mutated_quotes_never_crash_or_verify(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(QUOTES))
    blob = mutate(data, original)
    try:
        report = verify_td_quote(blob, None, POLICY)
    except CmcpError:
        return
    if blob != original and blob.rstrip(b"\0") != original.rstrip(b"\0"):
        assert not report.verified


@fuzz_settings
@given(st.binary(max_size=2048))
def test_random_bytes_as_quote(blob: bytes) -> None:
    with contextlib.suppress(CmcpError):
        verify_td_quote(blob, None, POLICY)


@fuzz_settings
@given(st.data())
def test_mutated_collateral_json(data: st.DataObject) -> None:
    member, original, parse = data.draw(
        st.sampled_from(
            [
                ("tcbInfo", TCB_INFO, parse_tcb_info),
                ("enclaveIdentity", QE_IDENTITY, parse_qe_identity),
            ]
        )
    )
    with contextlib.suppress(CmcpError):
        signed = parse_signed_json(mutate(data, original), member, what="collateral")
        parse(signed.body)


@fuzz_settings
@given(st.data())
def test_mutated_sgx_extension(data: st.DataObject) -> None:
    with contextlib.suppress(CmcpError):
        parse_sgx_extension(mutate(data, SGX_EXT))


@fuzz_settings
@given(st.data())
def test_mutated_ccel_table(data: st.DataObject) -> None:
    with contextlib.suppress(CmcpError):
        parse_ccel_table(mutate(data, ACPI))


V5_QUOTE = (TDX / "go-tdx-guest-v5.quote.dat").read_bytes()
CRLS = {
    "pck_crl": (TDX / "go-tdx-guest.pckcrl.der").read_bytes(),
    "root_crl": (TDX / "go-tdx-guest.rootcrl.der").read_bytes(),
    "pck_crl_chain": (TDX / "go-tdx-guest.pckcrl-issuer-chain.pem").read_bytes(),
}


def _signed_part(member: str, blob: bytes) -> bytes:
    if member == "pck_crl_chain":
        return load_certificates(blob, what="chain")[0].tbs_certificate_bytes
    return x509.load_der_x509_crl(blob).tbs_certlist_bytes


@fuzz_settings
@given(st.data())
def test_mutated_crls_and_issuer_chains(data: st.DataObject) -> None:
    """CRLs and the PCK CRL issuer chain through the full appraisal of the v5 quote."""
    member = data.draw(st.sampled_from(sorted(CRLS)))
    blob = mutate(data, CRLS[member])
    report = verify_td_quote(V5_QUOTE, TdxCollateral(**{**CRLS, member: blob}), POLICY)
    check = "collateral.root_crl" if member == "root_crl" else "collateral.pck_crl"
    passed = any(c.name == check and c.status is Status.PASS for c in report.checks)
    if passed and blob != CRLS[member]:
        # Only a change outside the signed content (e.g. in the signature's encoding) may
        # still pass: what was signed must be what was read.
        assert _signed_part(member, blob) == _signed_part(member, CRLS[member])
