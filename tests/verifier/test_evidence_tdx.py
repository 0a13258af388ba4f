"""Intel TDX quotes: every TDX row of ../shared/evidence/EXPECTED.md, tampering, bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cmcp_verifier import cli
from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.errors import CmcpError, InputError
from cmcp_verifier.evidence import EvidencePolicy, EvidenceReport, evidence_types, tdx_appraisal
from cmcp_verifier.evidence.ccel import parse_ccel_table
from cmcp_verifier.evidence.sgx_pck import parse_pck_extensions
from cmcp_verifier.evidence.tcg_eventlog import ALG_SHA384, parse_event_log, replay
from cmcp_verifier.evidence.tdx import TdxCollateral, TdxOptions, verify_td_quote
from cmcp_verifier.evidence.tdx_collateral import (
    OUT_OF_DATE,
    REVOKED,
    SW_HARDENING_NEEDED,
    UP_TO_DATE,
    parse_signed_json,
    parse_tcb_info,
)
from cmcp_verifier.evidence.tdx_quote import parse_quote
from cmcp_verifier.evidence.tdx_tcb import NOT_SUPPORTED, RELAUNCH_ADVISED, QeResult, evaluate_tcb
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..conftest import EVIDENCE
from .claimfactory import make_claim

TDX = EVIDENCE / "tdx"
NO_COLLATERAL = ["trustee-v5", "edgeless-v4", "phala-v4"]
ACCEPTED = [*NO_COLLATERAL, "gcp-cos-ccel", "trustee-v4-outofdate"]
V5_TIME = "2026-02-15T00:00:00+00:00"  # inside the v5 TCB info's window
SPR_TIME = "2023-06-20T00:00:00+00:00"  # inside every window of the v4 collateral
TRUSTEE_TIME = "2025-11-01T00:00:00+00:00"  # inside the trustee TCB info / QE identity windows
GO_CHAIN = "go-tdx-guest.tcbinfo-issuer-chain.pem"


def raw(name: str) -> bytes:
    return (TDX / name).read_bytes()


def quote(name: str) -> bytes:
    return raw(f"{name}.quote.dat")


def at(text: str) -> EvidencePolicy:
    return EvidencePolicy(evaluation_time=dt.datetime.fromisoformat(text))


def go_collateral(tcb_info: str = "go-tdx-guest-v5.tcbinfo.json") -> TdxCollateral:
    """The go-tdx-guest collateral set: TCB info, QE identity, both CRLs and issuer chains."""
    return TdxCollateral(
        tcb_info=raw(tcb_info),
        tcb_info_chain=raw(GO_CHAIN),
        qe_identity=raw("go-tdx-guest.qeidentity.json"),
        qe_identity_chain=raw("go-tdx-guest.qeidentity-issuer-chain.pem"),
        pck_crl=raw("go-tdx-guest.pckcrl.der"),
        pck_crl_chain=raw("go-tdx-guest.pckcrl-issuer-chain.pem"),
        root_crl=raw("go-tdx-guest.rootcrl.der"),
    )


def trustee_collateral(chain: bool = True) -> TdxCollateral:
    # Intel signs all TCB info with one TCB Signing key; trustee ships no chain, so the
    # go-tdx-guest copy of Intel's chain verifies it (its certificate expired 2025-05-21).
    return TdxCollateral(
        tcb_info=raw("trustee-v4-outofdate.tcbinfo.json"),
        qe_identity=raw("trustee-v4-outofdate.qeidentity.json"),
        tcb_info_chain=raw(GO_CHAIN) if chain else None,
    )


def status(report: EvidenceReport, name: str) -> Status:
    return next(c.status for c in report.checks if c.name == name)


def failures(report: EvidenceReport) -> set[str]:
    return {c.name for c in report.failures}


CORE = ("quote.signature", "pck.chain", "qe.signature", "qe.binding")

# --- EXPECTED.md rows, through the library --------------------------------------------


@pytest.mark.parametrize("name", NO_COLLATERAL)
def test_quotes_without_collateral_are_accepted_with_tcb_unknown(name: str) -> None:
    report = verify_td_quote(quote(name), None, EvidencePolicy())
    assert report.verified, report.render()
    assert all(status(report, c) is Status.PASS for c in CORE)
    assert status(report, "tcb") is Status.WARN
    assert "no collateral supplied" in next(c.detail for c in report.checks if c.name == "tcb")
    assert report.facts["tcb_status"] == "unknown"
    assert report.platform == "intel-tdx"
    assert report.report_data is not None and len(report.report_data) == 64
    assert report.measurement == "sha384:" + report.facts["mr_td"]
    strict = verify_td_quote(quote(name), None, EvidencePolicy(), TdxOptions(strict_tcb=True))
    assert failures(strict) == {"tcb"}


def test_debug_td_is_rejected_unless_debug_is_allowed() -> None:
    report = verify_td_quote(quote("trustee-v4-debug"), None, EvidencePolicy())
    assert failures(report) == {"td.debug"}
    assert all(status(report, c) is Status.PASS for c in CORE)
    assert report.facts["debug"] is True
    allowed = verify_td_quote(quote("trustee-v4-debug"), None, EvidencePolicy(allow_debug=True))
    assert allowed.verified and status(allowed, "td.debug") is Status.WARN


def test_gcp_ccel_log_reproduces_rtmrs() -> None:
    report = verify_td_quote(
        quote("gcp-cos-ccel"),
        None,
        EvidencePolicy(),
        event_log=raw("gcp-cos-ccel.eventlog.bin"),
        acpi_table=raw("gcp-cos-ccel.acpi-table.bin"),
    )
    assert report.verified, report.render()
    assert status(report, "ccel") is Status.PASS
    assert report.report_data == bytes(64)
    assert "zero padding ignored" in report.checks[0].detail


def test_ccel_log_with_a_changed_digest_does_not_reproduce_rtmrs() -> None:
    log = bytearray(raw("gcp-cos-ccel.eventlog.bin"))
    event = parse_event_log(bytes(log)).events[5]
    log[event.offset + 14] ^= 0x01  # first byte of its SHA-384 digest
    report = verify_td_quote(quote("gcp-cos-ccel"), None, EvidencePolicy(), event_log=bytes(log))
    assert failures(report) == {"ccel"}
    assert "RTMR" in report.failures[0].detail


def test_ccel_table_and_log_api() -> None:
    table = parse_ccel_table(raw("gcp-cos-ccel.acpi-table.bin"))
    assert (table.cc_type, table.log_area_length) == (2, 262144)
    log = parse_event_log(raw("gcp-cos-ccel.eventlog.bin"))
    assert log.spec_id.digest_sizes == {ALG_SHA384: 48}
    assert len(log.events) == 43
    values = replay(log.events, ALG_SHA384, indices=range(1, 5))
    body = parse_quote(quote("gcp-cos-ccel")).body
    assert tuple(values[i] for i in range(1, 5)) == body.rtmrs


def test_go_tdx_guest_v5_is_up_to_date_but_its_collateral_does_not_overlap_now() -> None:
    strict = verify_td_quote(quote("go-tdx-guest-v5"), go_collateral(), EvidencePolicy())
    assert failures(strict) == {"collateral.validity"}, strict.render()
    assert "expired" in strict.failures[0].detail
    for check in ("tcb_info", "qe_identity", "pck_crl", "root_crl"):
        assert status(strict, f"collateral.{check}") is Status.PASS
    facts = strict.facts
    assert (facts["tcb_status"], facts["platform_tcb_status"]) == (UP_TO_DATE, UP_TO_DATE)
    assert (facts["tdx_module"], facts["tdx_module_tcb_status"]) == ("TDX_01", UP_TO_DATE)
    assert facts["qe_tcb_status"] == UP_TO_DATE
    pinned = verify_td_quote(quote("go-tdx-guest-v5"), go_collateral(), at(V5_TIME))
    assert failures(pinned) == {"collateral.validity"}  # QE identity, CRLs: 2023
    allowed = verify_td_quote(
        quote("go-tdx-guest-v5"),
        go_collateral(),
        at(V5_TIME),
        TdxOptions(allow_expired_collateral=True),
    )
    assert allowed.verified, allowed.render()
    assert status(allowed, "collateral.validity") is Status.WARN
    assert status(allowed, "tcb") is Status.PASS


def test_collateral_not_yet_valid_is_never_excused() -> None:
    early = verify_td_quote(
        quote("go-tdx-guest-v5"),
        go_collateral(),
        at("2026-01-28T00:00:00+00:00"),  # PCK valid, TCB info not yet issued
        TdxOptions(allow_expired_collateral=True),
    )
    assert failures(early) == {"collateral.validity"}
    assert "not valid before" in early.failures[0].detail


def test_go_tdx_guest_v4_spr_has_no_matching_tcb_level() -> None:
    data = quote("go-tdx-guest-v4-spr")
    col = go_collateral("go-tdx-guest-v4.tcbinfo.json")
    report = verify_td_quote(data, col, at(SPR_TIME))
    assert not report.verified
    assert all(status(report, c) is Status.PASS for c in CORE)
    assert status(report, "collateral.validity") is Status.PASS
    assert report.facts["tcb_status"] == NOT_SUPPORTED
    assert "no TCB level matches" in next(c.detail for c in report.failures if c.name == "tcb")
    # The file carries go-tdx-guest's test suffix; without it the TCB is the only failure.
    assert failures(report) == {"quote.trailing", "tcb"}
    clean = data[: -len(parse_quote(data).trailing)]
    assert failures(verify_td_quote(clean, col, at(SPR_TIME))) == {"tcb"}


def test_trustee_v4_platform_is_out_of_date() -> None:
    report = verify_td_quote(
        quote("trustee-v4-outofdate"),
        trustee_collateral(),
        at(TRUSTEE_TIME),
        TdxOptions(allow_expired_collateral=True),
    )
    assert failures(report) == {"tcb"}, report.render()
    facts = report.facts
    assert (facts["tcb_status"], facts["platform_tcb_status"]) == (OUT_OF_DATE, OUT_OF_DATE)
    assert facts["pce_svn"] == 11
    assert facts["tdx_module_tcb_status"] == UP_TO_DATE
    assert facts["qe_tcb_status"] == UP_TO_DATE
    assert status(report, "collateral") is Status.WARN  # no CRLs supplied


def test_collateral_without_its_issuer_chain_is_not_trusted() -> None:
    report = verify_td_quote(
        quote("trustee-v4-outofdate"), trustee_collateral(chain=False), at(TRUSTEE_TIME)
    )
    assert "collateral.tcb_info" in failures(report)
    assert "no issuer chain" in report.render()


def test_collateral_of_another_platform_does_not_apply() -> None:
    col = dataclasses.replace(go_collateral(), pck_crl=None, root_crl=None, pck_crl_chain=None)
    report = verify_td_quote(
        quote("edgeless-v4"), col, at(V5_TIME), TdxOptions(allow_expired_collateral=True)
    )
    assert report.facts["tcb_status"] == "TCBInfoMismatch"
    assert failures(report) == {"tcb"}


def test_azure_td_quote_verifies_as_a_library_call() -> None:
    data = (EVIDENCE / "azure-cvm" / "tdx" / "td-quote.bin").read_bytes()
    report = verify_td_quote(data, None, EvidencePolicy())
    assert report.verified, report.render()


# --- TCB evaluation branches (pure function, real parsed inputs) ----------------------


def _v5_inputs() -> tuple[Any, Any, Any]:
    info = parse_tcb_info(
        parse_signed_json(raw("go-tdx-guest-v5.tcbinfo.json"), "tcbInfo", what="t").body
    )
    q = parse_quote(quote("go-tdx-guest-v5"))
    pck = parse_pck_extensions(x509.load_pem_x509_certificates(q.pck_chain_pem.rstrip(b"\0"))[0])
    return info, q, pck


def _with_status(info: Any, platform: str | None = None, module: str | None = None) -> Any:
    levels = info.levels
    if platform:
        levels = (dataclasses.replace(levels[0], status=platform), *levels[1:])
    idents = info.module_identities
    if module:
        idents = tuple(
            dataclasses.replace(
                i, levels=(dataclasses.replace(i.levels[0], status=module), *i.levels[1:])
            )
            if i.id == "TDX_01"
            else i
            for i in idents
        )
    return dataclasses.replace(info, levels=levels, module_identities=idents)


def test_tcb_evaluation_convergence() -> None:
    info, q, pck = _v5_inputs()
    qe_ok = QeResult(UP_TO_DATE, "")
    assert evaluate_tcb(info, pck, q, qe_ok).status == UP_TO_DATE
    hardening = evaluate_tcb(_with_status(info, platform=SW_HARDENING_NEEDED), pck, q, qe_ok)
    assert hardening.status == SW_HARDENING_NEEDED
    assert evaluate_tcb(info, pck, q, QeResult(OUT_OF_DATE, "")).status == OUT_OF_DATE
    assert evaluate_tcb(info, pck, q, QeResult(REVOKED, "")).status == REVOKED
    assert evaluate_tcb(_with_status(info, module=REVOKED), pck, q, qe_ok).status == REVOKED
    # A current platform, but the TD's TDX SVNs (TEE_TCB_SVN) only meet an out-of-date level
    # and its module is out of date, while TEE_TCB_SVN2 meets the latest: relaunch the TD.
    svn = q.body.tee_tcb_svn
    stale = dataclasses.replace(
        q, body=dataclasses.replace(q.body, tee_tcb_svn=svn[:2] + b"\x02" + svn[3:])
    )
    stale_module = _with_status(info, module=OUT_OF_DATE)
    assert evaluate_tcb(stale_module, pck, stale, qe_ok).status == RELAUNCH_ADVISED
    no_svn2 = dataclasses.replace(stale, body=dataclasses.replace(stale.body, tee_tcb_svn2=None))
    assert evaluate_tcb(stale_module, pck, no_svn2, qe_ok).status == OUT_OF_DATE
    old_module = dataclasses.replace(
        q, body=dataclasses.replace(q.body, tee_tcb_svn=b"\x01" + q.body.tee_tcb_svn[1:])
    )
    assert evaluate_tcb(info, pck, old_module, qe_ok).status == NOT_SUPPORTED
    foreign = dataclasses.replace(q, body=dataclasses.replace(q.body, mr_signer_seam=b"\x01" * 48))
    assert evaluate_tcb(info, pck, foreign, qe_ok).status == "TDXModuleMismatch"


def test_relaunch_and_hardening_warn_unless_strict() -> None:
    report = EvidenceReport(subject="t")
    info, q, pck = _v5_inputs()
    result = evaluate_tcb(_with_status(info, platform=SW_HARDENING_NEEDED), pck, q, None)
    tdx_appraisal._judge_tcb(result, TdxOptions(), report)
    tdx_appraisal._judge_tcb(result, TdxOptions(strict_tcb=True), report)
    assert [c.status for c in report.checks] == [Status.WARN, Status.FAIL]


def test_revoked_certificate_is_found_in_a_crl() -> None:
    # Intel's CRLs revoke none of the sample certificates, so a local CA issues one that does.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1234)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    entry = x509.RevokedCertificateBuilder().serial_number(1234).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    report = EvidenceReport(subject="t")
    windows = tdx_appraisal._Windows(now)
    der = crl.public_bytes(Encoding.DER)
    tdx_appraisal._check_crl(
        der, cert, [cert], name="crl", what="CRL", windows=windows, report=report
    )
    assert report.checks[-1].status is Status.FAIL and "revoked" in report.checks[-1].detail


# --- tampering ------------------------------------------------------------------------


def _rejected(data: bytes, collateral: TdxCollateral | None = None, **kw: Any) -> bool:
    try:
        return not verify_td_quote(data, collateral, **kw).verified
    except CmcpError:
        return True


@pytest.mark.parametrize("name", ACCEPTED)
def test_flipping_any_signed_or_signature_byte_rejects(name: str) -> None:
    data = quote(name)
    q = parse_quote(data)
    regions = range(len(q.signed_data) + 4 + 64)  # header ‖ body, length, signature
    for i in regions:
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        assert _rejected(bytes(flipped), policy=EvidencePolicy()), i
    rng = random.Random(name)
    for i in rng.sample(range(len(data)), 300):
        flipped = bytearray(data)
        flipped[i] ^= rng.randrange(1, 256)
        assert _rejected(bytes(flipped), policy=EvidencePolicy()), i


@pytest.mark.parametrize("name", ["edgeless-v4", "trustee-v5"])
def test_flipping_any_byte_at_all_rejects(name: str) -> None:
    data = quote(name)
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        assert _rejected(bytes(flipped), policy=EvidencePolicy()), i


@pytest.mark.parametrize(
    ("member", "step"), [("qe_identity", 1), ("tcb_info", 5), ("pck_crl", 3), ("root_crl", 1)]
)
def test_flipping_collateral_bytes_rejects(member: str, step: int) -> None:
    data, col = quote("go-tdx-guest-v5"), go_collateral()
    options = TdxOptions(allow_expired_collateral=True)
    assert verify_td_quote(data, col, at(V5_TIME), options).verified
    blob = getattr(col, member)
    for i in range(0, len(blob), step):
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        changed = dataclasses.replace(col, **{member: bytes(flipped)})
        assert _rejected(data, changed, policy=at(V5_TIME), options=options), i


# --- bad input ------------------------------------------------------------------------


def _parse_error(data: bytes) -> str:
    with pytest.raises(InputError) as info:
        parse_quote(data)
    return info.value.code


def test_truncated_quotes_are_rejected_cleanly() -> None:
    data = quote("trustee-v5")
    for n in range(0, len(data), 3):
        assert _parse_error(data[:n]) in ("evidence.truncated", "tdx.quote.malformed"), n


def test_hostile_headers_and_lengths() -> None:
    data = bytearray(quote("edgeless-v4"))
    body_end = 48 + 584
    cases = {
        "tdx.quote.version": (0, struct.pack("<H", 3)),
        "tdx.quote.tee_type": (4, struct.pack("<I", 0)),
        "tdx.quote.key_type": (2, struct.pack("<H", 3)),
        "tdx.quote.malformed": (body_end, struct.pack("<I", 0xFFFFFFFF)),
        "tdx.quote.cert_type": (body_end + 4 + 128, struct.pack("<H", 5)),
    }
    for code, (offset, value) in cases.items():
        bad = bytearray(data)
        bad[offset : offset + len(value)] = value
        assert _parse_error(bytes(bad)) == code, code
    v5 = bytearray(quote("trustee-v5"))
    v5[48:54] = struct.pack("<HI", 2, 648)  # TD 1.0 type with the TD 1.5 size
    assert _parse_error(bytes(v5)) == "tdx.quote.malformed"
    assert _parse_error(bytes(data) + bytes(1 << 20)) == "tdx.quote.too_large"


def test_garbage_pck_chain_fails_the_chain_check() -> None:
    data = bytearray(quote("edgeless-v4"))
    start = data.index(b"-----BEGIN CERTIFICATE-----")
    data[start + 40 : start + 60] = b"!" * 20
    report = verify_td_quote(bytes(data), None, EvidencePolicy())
    assert {"pck.chain", "qe.signature"} <= failures(report)


def test_malformed_collateral_is_a_failed_check() -> None:
    col = TdxCollateral(
        tcb_info=b'{"tcbInfo": {"id": "TDX", "version": 3}, "signature": "00"}',
        qe_identity=b"[1.5]",
        root_crl=b"not a crl",
        tcb_info_chain=raw(GO_CHAIN),
    )
    report = verify_td_quote(quote("edgeless-v4"), col, EvidencePolicy())
    assert {"collateral.tcb_info", "collateral.qe_identity"} <= failures(report)
    assert "collateral.root_crl" in failures(report)


# --- the claim form and the CLI -------------------------------------------------------


def test_embedded_evidence_members() -> None:
    kind = evidence_types()["tdx"]
    members = {
        "quote": b64url_encode(quote("gcp-cos-ccel")),
        "event_log": b64url_encode(raw("gcp-cos-ccel.eventlog.bin")),
    }
    report = kind.verify_embedded(members, EvidencePolicy(nonce=b"n", expected_measurement="x"))
    assert report.verified and status(report, "ccel") is Status.PASS
    # The claim verifier checks nonce and measurement through the binding and the trace.
    assert not {"nonce", "measurement"} & {c.name for c in report.checks}
    with pytest.raises(InputError):
        kind.verify_embedded({**members, "extra": ""}, EvidencePolicy())
    with pytest.raises(InputError):
        kind.verify_embedded({"event_log": members["event_log"]}, EvidencePolicy())
    with pytest.raises(InputError):
        kind.verify_embedded({"quote": members["quote"] + "="}, EvidencePolicy())


def test_claim_with_tdx_evidence_checks_the_quote_and_its_binding() -> None:
    q = quote("trustee-v5")
    mr_td = parse_quote(q).body.mr_td.hex()

    def to_tdx(trace: dict[str, Any], gateway: dict[str, Any]) -> None:
        trace["runtime"].update(platform="intel-tdx", measurement="sha384:" + mr_td)
        trace["appraisal"]["status"] = "affirming"
        gateway["attestation"].update(type="tdx", evidence={"quote": b64url_encode(q)})

    claim, _ = make_claim(mutate=to_tdx)
    report = verify_claim(canonical_bytes(claim), ClaimPolicy())
    names = {c.name: c.status for c in report.checks}
    assert names["tdx.quote.signature"] is Status.PASS
    assert names["runtime.measurement"] is Status.PASS
    # A public quote cannot carry this claim's key: the binding must fail.
    assert names["attestation.report_data"] is Status.FAIL


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = cli.main(["evidence", "--type", "tdx", *argv, "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def _files(*pairs: tuple[str, str]) -> list[str]:
    return [arg for option, name in pairs for arg in (option, str(TDX / name))]


GO_FILES = _files(
    ("--tcb-info-chain", GO_CHAIN),
    ("--qe-identity", "go-tdx-guest.qeidentity.json"),
    ("--qe-identity-chain", "go-tdx-guest.qeidentity-issuer-chain.pem"),
    ("--pck-crl", "go-tdx-guest.pckcrl.der"),
    ("--pck-crl-chain", "go-tdx-guest.pckcrl-issuer-chain.pem"),
    ("--root-crl", "go-tdx-guest.rootcrl.der"),
)
V5 = ("--tdx-quote", "go-tdx-guest-v5.quote.dat"), ("--tcb-info", "go-tdx-guest-v5.tcbinfo.json")
SPR = (
    ("--tdx-quote", "go-tdx-guest-v4-spr.quote.dat"),
    ("--tcb-info", "go-tdx-guest-v4.tcbinfo.json"),
)
TRUSTEE = (
    ("--tdx-quote", "trustee-v4-outofdate.quote.dat"),
    ("--tcb-info", "trustee-v4-outofdate.tcbinfo.json"),
    ("--qe-identity", "trustee-v4-outofdate.qeidentity.json"),
    ("--tcb-info-chain", GO_CHAIN),
)
CCEL = (
    ("--tdx-quote", "gcp-cos-ccel.quote.dat"),
    ("--tdx-event-log", "gcp-cos-ccel.eventlog.bin"),
    ("--tdx-acpi-table", "gcp-cos-ccel.acpi-table.bin"),
)
DEBUG = (("--tdx-quote", "trustee-v4-debug.quote.dat"),)
EXPIRED_OK = "--tdx-allow-expired-collateral"
CLI_ROWS = [
    *[(_files(("--tdx-quote", f"{n}.quote.dat")), 0) for n in NO_COLLATERAL],
    (_files(*DEBUG), 1),
    ([*_files(*DEBUG), "--allow-debug"], 0),
    (_files(*CCEL), 0),
    ([*_files(*V5), *GO_FILES], 1),
    ([*_files(*V5), *GO_FILES, "--at", V5_TIME, EXPIRED_OK], 0),
    ([*_files(*SPR), *GO_FILES, "--at", SPR_TIME], 1),
    ([*_files(*TRUSTEE), "--at", TRUSTEE_TIME, EXPIRED_OK], 1),
]


@pytest.mark.parametrize(("argv", "exit_code"), CLI_ROWS)
def test_cli_judges_every_row(
    argv: list[str], exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _cli(argv, capsys)
    assert code == exit_code, out
    assert out["verdict"] == ("verified" if exit_code == 0 else "rejected")


def test_cli_tcb_facts(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = _cli(CLI_ROWS[-1][0], capsys)
    assert out["facts"]["tcb_status"] == OUT_OF_DATE
    assert [c["name"] for c in out["checks"] if c["status"] == "fail"] == ["tcb"]


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (
        [],
        ["--tdx-quote", str(tmp_path / "missing")],
        [*_files(("--tdx-quote", "edgeless-v4.quote.dat")), "--at", "yesterday"],
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(["evidence", "--type", "tdx", *argv])
        assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_bad_input_is_a_one_line_rejection(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(quote("edgeless-v4")[:1000])
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cmcp_verifier",
            "evidence",
            "--type",
            "tdx",
            "--tdx-quote",
            str(bad),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert "rejected: tdx.quote.malformed: signature data length" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_allow_network_says_fetching_is_not_implemented() -> None:
    policy = EvidencePolicy(allow_network=True)
    report = verify_td_quote(quote("edgeless-v4"), None, policy)
    assert "not implemented" in next(c.detail for c in report.checks if c.name == "tcb")


def test_standalone_nonce_and_measurement_pins() -> None:
    data = quote("gcp-cos-ccel")  # REPORTDATA is all zero
    mr_td = "sha384:" + parse_quote(data).body.mr_td.hex()
    good = verify_td_quote(data, None, EvidencePolicy(nonce=bytes(8), expected_measurement=mr_td))
    assert good.verified
    assert status(good, "nonce") is status(good, "measurement") is Status.PASS
    bad = verify_td_quote(data, None, EvidencePolicy(nonce=b"\x01", expected_measurement="x"))
    assert failures(bad) == {"nonce", "measurement"}


def test_crl_name_of_the_wrong_asn1_type_is_a_clean_rejection() -> None:
    # Found by the 100 000-input campaign: a name attribute re-tagged as BIT STRING made
    # cryptography raise TypeError while the root CRL was loaded.
    crl = bytearray(raw("go-tdx-guest.rootcrl.der"))
    at_value = crl.index(b"Santa Clara")
    assert crl[at_value - 1] == len(b"Santa Clara")
    crl[at_value - 2] = 0x03  # BIT STRING
    collateral = dataclasses.replace(go_collateral(), root_crl=bytes(crl))
    report = verify_td_quote(quote("go-tdx-guest-v5"), collateral, at(V5_TIME))
    detail = next(c.detail for c in report.checks if c.status is Status.FAIL)
    assert not report.verified and "not an X.509 CRL" in detail, report.render()
