"""Fuzzing the NVIDIA parsers: SPDM reports, certificate chains, RIM XML and its signature.

Mutated real samples and random bytes must give a verdict or a CmcpError, never a crash,
and a changed report must never verify."""

from __future__ import annotations

import contextlib
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.errors import CmcpError, InputError
from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.evidence._common import load_certificates
from cmcp_verifier.evidence._xml import canonicalize_document, parse_xml
from cmcp_verifier.evidence.nvidia import SpdmReport, verify_gpu_report
from cmcp_verifier.evidence.nvidia_rim import parse_rim

from ..conftest import EVIDENCE
from ._mutate import mutated
from ._settings import fuzz_settings

NV = EVIDENCE / "nvidia"
REPORT = bytes.fromhex((NV / "hopper.report.hex.txt").read_text().strip())
CHAIN_PEM = (NV / "hopper-cert-chain-case1.txt").read_bytes()
CHAIN = load_certificates(CHAIN_PEM, what="chain")
RIM = (NV / "vbios-rim-1010_0200_882_960074001A.swidtag").read_bytes()
POLICY = EvidencePolicy(evaluation_time=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))


@fuzz_settings
@given(st.one_of(st.binary(max_size=600), mutated(REPORT)))
def test_spdm_parser(data: bytes) -> None:
    with contextlib.suppress(InputError):
        SpdmReport.parse(data)


@fuzz_settings
@given(mutated(REPORT))
def test_mutated_reports_never_verify(data: bytes) -> None:
    assert verify_gpu_report(data, CHAIN, POLICY).verified == (data == REPORT)


@fuzz_settings
@given(mutated(CHAIN_PEM, max_ops=2))
def test_mutated_chains(data: bytes) -> None:
    try:
        chain = load_certificates(data, what="chain")
    except InputError:
        return
    verify_gpu_report(REPORT, chain, POLICY)


@fuzz_settings
@given(st.one_of(st.binary(max_size=300), mutated(RIM)))
def test_rim_xml_and_signature(data: bytes) -> None:
    with contextlib.suppress(CmcpError):
        canonicalize_document(parse_xml(data))
    try:
        rim = parse_rim(data)
    except CmcpError:
        return
    # Only edits that leave the signed content intact (e.g. outside the root) can verify.
    assert rim.measurements == parse_rim(RIM).measurements
