"""Fuzzing Azure CVM evidence: HCL reports, the evidence JSON and the embedded form. Inputs are
mutations of the real samples and random bytes; the only exception allowed out of the parsers
is InputError, verification never raises, and mutated evidence never verifies."""

from __future__ import annotations

import contextlib
import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence import EvidencePolicy, evidence_types
from cmcp_verifier.evidence.azure import HclReport, evidence_from_json, verify_azure

from ..conftest import EVIDENCE
from ._mutate import mutated
from ._settings import fuzz_settings

AZ = EVIDENCE / "azure-cvm"
SNP_JSON = (AZ / "snp" / "evidence-v1.json").read_bytes()
TDX_JSON = (AZ / "tdx" / "evidence-v1.json").read_bytes()
SNP = evidence_from_json(SNP_JSON)
TDX = evidence_from_json(TDX_JSON)
POLICY = EvidencePolicy(nonce=b"challenge")
# Bytes nothing signs or pins: the HCL header's version (1 or 2 are both valid), and in a TD
# report the fields only its CPU can check (CPUSVN, MAC): see test_evidence_azure.py.
HCL_VERSION = range(4, 5)
TD_UNVERIFIABLE = range(0x20 + 16, 0x20 + 32), range(0x20 + 224, 0x20 + 256)


def _touches_only_unverifiable(kind: str, original: bytes, changed: bytes) -> bool:
    original, changed = original.rstrip(b"\0"), changed.rstrip(b"\0")  # padding is no content
    if len(original) != len(changed):
        return False
    free = (HCL_VERSION, *TD_UNVERIFIABLE) if kind == "tdx" else (HCL_VERSION,)
    diff = [i for i, (a, b) in enumerate(zip(original, changed, strict=True)) if a != b]
    return all(any(i in r for r in free) for i in diff)


@fuzz_settings
@given(st.one_of(mutated(SNP.hcl_report), mutated(TDX.hcl_report), st.binary(max_size=3000)))
def test_hcl_report_parser(data: bytes) -> None:
    with contextlib.suppress(InputError):
        HclReport.parse(data)


@fuzz_settings
@given(
    st.sampled_from(["snp", "tdx"]),
    st.sampled_from(["hcl_report", "quote", "signature", "td_quote", "vcek"]),
    st.data(),
)
def test_mutated_evidence_never_verifies(kind: str, member: str, data: st.DataObject) -> None:
    evidence = SNP if kind == "snp" else TDX
    original = getattr(evidence, member)
    if original is None:
        return
    blob = data.draw(mutated(original))
    report = verify_azure(dataclasses.replace(evidence, **{member: blob}), POLICY)
    # Trailing zero padding of quotes and certificates is ignored by design (EXPECTED.md).
    if blob.rstrip(b"\0") == original.rstrip(b"\0") or (
        member == "hcl_report" and _touches_only_unverifiable(kind, original, blob)
    ):
        return
    assert not report.verified, f"mutated {kind} {member} verified"


@fuzz_settings
@given(st.one_of(mutated(SNP_JSON), mutated(TDX_JSON), st.binary(max_size=512)))
def test_evidence_json(data: bytes) -> None:
    try:
        evidence = evidence_from_json(data)
    except InputError:
        return
    verify_azure(evidence, POLICY)


@fuzz_settings
@given(
    st.dictionaries(
        st.sampled_from(["hcl_report", "quote", "signature", "pcrs", "vcek", "chain", "td_quote"]),
        st.one_of(st.binary(max_size=64), mutated(SNP.hcl_report)).map(b64url_encode),
        max_size=7,
    )
)
def test_embedded_form(evidence: dict[str, str]) -> None:
    with contextlib.suppress(InputError):
        evidence_types()["azure-cvm"].verify_embedded(evidence, POLICY)
