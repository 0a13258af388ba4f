"""Fuzzing the SEV-SNP parsers: reports, certificate tables, VCEKs and the DER reader.

Mutated real samples and random bytes must give a verdict or an InputError, never a crash,
and a changed report must never verify."""

from __future__ import annotations

import contextlib
import datetime as dt

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.evidence._common import load_certificate, load_certificates
from cmcp_verifier.evidence._der import der_integer, split_concatenated, walk
from cmcp_verifier.evidence.sevsnp import (
    SnpReport,
    parse_cert_table,
    verify_endorsement_chain,
    verify_snp_report,
)

from ..conftest import EVIDENCE
from ..verifier.snpfactory import make_cert_table
from ._mutate import mutated
from ._settings import fuzz_settings

SNP = EVIDENCE / "sev-snp"
REPORT = (SNP / "trustee-milan.report.bin").read_bytes()
V5_REPORT = (SNP / "gcp-v5-x25519-bound.report.bin").read_bytes()
VCEK_DER = (SNP / "trustee-milan.vcek.der").read_bytes()
VCEK = load_certificate(VCEK_DER, what="VCEK")
POLICY = EvidencePolicy(evaluation_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
ASK_ARK = [
    c.public_bytes(Encoding.DER)
    for c in load_certificates((SNP / "virtee-milan.ask-ark.pem").read_bytes(), what="chain")
]
TABLE = make_cert_table({"vcek": VCEK_DER, "ask": ASK_ARK[0], "ark": ASK_ARK[1]})


@fuzz_settings
@given(st.one_of(st.binary(max_size=1300), mutated(REPORT), mutated(V5_REPORT)))
def test_report_parser(data: bytes) -> None:
    with contextlib.suppress(InputError):
        SnpReport.parse(data)


@fuzz_settings
@given(mutated(REPORT))
def test_mutated_reports_never_verify(data: bytes) -> None:
    report = verify_snp_report(data, VCEK, POLICY)
    assert report.verified == (data == REPORT)


@fuzz_settings
@given(st.one_of(st.binary(max_size=200), mutated(TABLE)))
def test_cert_table(data: bytes) -> None:
    try:
        vcek = parse_cert_table(data).get("vcek")
    except InputError:
        vcek = None
    report = verify_snp_report(REPORT, None, POLICY, cert_table=data)
    assert not report.verified or vcek == VCEK_DER


@fuzz_settings
@given(mutated(VCEK_DER))
def test_mutated_vcek(data: bytes) -> None:
    try:
        cert = load_certificate(data, what="VCEK")
    except InputError:
        return
    verified = verify_endorsement_chain(cert, POLICY).verified
    assert not verified or cert.public_bytes(Encoding.DER) == VCEK_DER
    verify_snp_report(REPORT, cert, POLICY)


@fuzz_settings
@given(st.one_of(st.binary(max_size=64), mutated(VCEK_DER[:200])))
def test_der_reader(data: bytes) -> None:
    for parse in (
        lambda: list(walk(data)),
        lambda: der_integer(data, what="x"),
        lambda: split_concatenated(data, what="x"),
    ):
        with contextlib.suppress(InputError):
            parse()
