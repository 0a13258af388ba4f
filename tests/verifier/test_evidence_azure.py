"""Azure confidential VM evidence (EXPECTED.md, "Azure confidential VMs"): every row through the
library and ``cmcp-verify evidence --type azure-cvm``, the embedded (claim) form, byte flips and
hostile input."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.cli import main
from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence import EvidencePolicy, evidence_types
from cmcp_verifier.evidence.azure import (
    AzureEvidence,
    HclReport,
    evidence_from_json,
    verify_azure,
)
from cmcp_verifier.evidence.tpm_pcrs import pcrs_to_json
from cmcp_verifier.report import Status

from ..conftest import EVIDENCE

AZ = EVIDENCE / "azure-cvm"
CHALLENGE = b"challenge"
V2_NONCE = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
GENOA_NONCE = bytes.fromhex(
    "0218488bae25d2509232bf676f1a66a30d7372add909109b36016ef136f2938c"
    "a05475f8b46094de6b64270ea35d950f"
)
ROWS = {  # file: (platform, extraData the quote carries)
    "snp/evidence-v0.json": ("azure-cvm-sev-snp", CHALLENGE),
    "snp/evidence-v1.json": ("azure-cvm-sev-snp", CHALLENGE),
    "snp/evidence-v2.json": ("azure-cvm-sev-snp", V2_NONCE),
    "snp/evidence-genoa.json": ("azure-cvm-sev-snp", GENOA_NONCE),
    "tdx/evidence-v0.json": ("intel-tdx", CHALLENGE),
    "tdx/evidence-v1.json": ("intel-tdx", CHALLENGE),
}


def load(name: str) -> AzureEvidence:
    return evidence_from_json((AZ / name).read_bytes())


def names(report: object, status: Status) -> set[str]:
    return {c.name for c in report.checks if c.status is status}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_expected_rows_verify(name: str) -> None:
    platform, nonce = ROWS[name]
    report = verify_azure(load(name), EvidencePolicy(nonce=nonce))
    assert report.verified, report.render()
    assert report.platform == platform
    assert report.report_data == nonce
    passed = names(report, Status.PASS)
    assert {"hcl.format", "hcl.runtime_data", "hcl.ak", "tpm.quote.signature"} <= passed
    assert {"tpm.quote.nonce", "tpm.quote.pcr_digest"} <= passed
    if platform == "intel-tdx":
        assert {"tdx.quote.signature", "tdx.pck.chain", "hcl.td_report"} <= passed
        assert report.measurement and report.measurement.startswith("sha384:")
    else:
        assert {"snp.report.signature", "snp.cert.chain", "snp.guest.policy"} <= passed


def test_v2_user_data_is_the_quoted_nonce() -> None:
    hcl = HclReport.parse(load("snp/evidence-v2.json").hcl_report)
    assert hcl.user_data is not None
    assert bytes.fromhex(hcl.user_data)[: len(V2_NONCE)] == V2_NONCE
    assert set(hcl.runtime) == {"keys", "vm-configuration", "user-data"}


def test_genoa_chains_to_the_genoa_root() -> None:
    report = verify_azure(load("snp/evidence-genoa.json"), EvidencePolicy())
    detail = next(c.detail for c in report.checks if c.name == "snp.cert.chain")
    assert "Genoa" in detail and report.verified


@pytest.mark.parametrize("name", sorted(ROWS))
def test_cli(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    nonce = ROWS[name][1]
    argv = ["evidence", "--type", "azure-cvm", "--azure-evidence", str(AZ / name)]
    assert main([*argv, "--nonce", nonce.hex()]) == 0
    assert "verified" in capsys.readouterr().out
    assert main([*argv, "--nonce", "00" * 9]) == 1  # a verifier's own nonce: not in this quote
    assert "tpm.quote.nonce" in capsys.readouterr().out


def test_cli_vcek_override_must_match(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evidence", "--type", "azure-cvm", "--azure-evidence", str(AZ / "snp/evidence-v1.json")]
    assert main([*argv, "--vcek", str(AZ / "snp/vcek-genoa.pem")]) == 1
    out = capsys.readouterr().out
    assert "snp.report.signature" in out or "snp.cert" in out


def embedded(ev: AzureEvidence) -> dict[str, str]:
    members = {"hcl_report": ev.hcl_report, "quote": ev.quote, "signature": ev.signature}
    if ev.pcrs is not None:
        members["pcrs"] = canonical_bytes(pcrs_to_json(ev.pcrs))
    for name in ("vcek", "chain", "td_quote"):
        if getattr(ev, name) is not None:
            members[name] = getattr(ev, name)
    return {k: b64url_encode(v) for k, v in members.items()}


@pytest.mark.parametrize("name", ["snp/evidence-v1.json", "tdx/evidence-v1.json"])
def test_embedded_form_ignores_the_raw_nonce(name: str) -> None:
    """In a claim extraData carries the binding digest, compared by the claim verifier."""
    kind = evidence_types()["azure-cvm"]
    report = kind.verify_embedded(embedded(load(name)), EvidencePolicy(nonce=b"other"))
    assert report.verified, report.render()
    assert report.report_data == CHALLENGE


def test_embedded_form_rejects_unknown_or_missing_members() -> None:
    kind = evidence_types()["azure-cvm"]
    members = embedded(load("snp/evidence-v1.json"))
    with pytest.raises(InputError):
        kind.verify_embedded({**members, "extra": "AA"}, EvidencePolicy())
    with pytest.raises(InputError):
        kind.verify_embedded({k: v for k, v in members.items() if k != "quote"}, EvidencePolicy())


def test_tdx_without_td_quote_is_rejected() -> None:
    ev = dataclasses.replace(load("tdx/evidence-v1.json"), td_quote=None)
    assert "tdx.quote" in names(verify_azure(ev, EvidencePolicy()), Status.FAIL)


def test_quote_from_another_vm_is_rejected() -> None:
    """The v0 quote (signed by another VM's HCL key) next to the v2 HCL report."""
    v0, v2 = load("snp/evidence-v0.json"), load("snp/evidence-v2.json")
    mixed = dataclasses.replace(v2, quote=v0.quote, signature=v0.signature, pcrs=v0.pcrs)
    report = verify_azure(mixed, EvidencePolicy())
    assert "tpm.quote.signature" in names(report, Status.FAIL)


def test_td_quote_of_another_td_is_rejected() -> None:
    """A genuine TD quote (GCP) that was not made from this HCL's TD report."""
    other = (EVIDENCE / "tdx" / "gcp-cos-ccel.quote.dat").read_bytes()
    report = verify_azure(
        dataclasses.replace(load("tdx/evidence-v1.json"), td_quote=other), EvidencePolicy()
    )
    assert "hcl.td_report" in names(report, Status.FAIL)
    assert "tdx.quote.signature" in names(report, Status.PASS)


# --- every byte matters ----------------------------------------------------------------------

FLIP_STRIDE = (
    int(os.environ.get("CMCP_AZURE_FLIP_STRIDE", "0")) or None
)  # 1: every byte (default: every third)


# A TD report's CPUSVN and MAC can be checked only by the CPU that made it (the MAC key never
# leaves it); the signed TD quote is what vouches for the TD. Flips there are undetectable
# offline, everywhere else they must be rejected.
TD_REPORT_UNVERIFIABLE = {*range(0x20 + 16, 0x20 + 32), *range(0x20 + 224, 0x20 + 256)}


def _positions(name: str, member: str, size: int) -> list[int]:
    skip = TD_REPORT_UNVERIFIABLE if (name.startswith("tdx/") and member == "hcl_report") else ()
    return [i for i in range(0, size, FLIP_STRIDE or 3) if i not in skip]


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("snp/evidence-v1.json", "hcl_report"),
        ("snp/evidence-v1.json", "quote"),
        ("snp/evidence-v1.json", "signature"),
        ("snp/evidence-v1.json", "vcek"),
        ("tdx/evidence-v1.json", "hcl_report"),
        ("tdx/evidence-v1.json", "td_quote"),
    ],
)
def test_any_flipped_byte_is_rejected(name: str, member: str) -> None:
    ev = load(name)
    data = getattr(ev, member)
    policy = EvidencePolicy(nonce=CHALLENGE)
    accepted = []
    for i in _positions(name, member, len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        if verify_azure(dataclasses.replace(ev, **{member: bytes(flipped)}), policy).verified:
            accepted.append(i)
    assert not accepted, f"{member} flips accepted at {accepted[:10]}"


def test_flipped_pcr_value_is_rejected() -> None:
    ev = load("snp/evidence-v1.json")
    assert ev.pcrs is not None
    pcrs = {bank: dict(values) for bank, values in ev.pcrs.items()}
    bank = next(iter(pcrs))
    pcrs[bank][7] = bytes([pcrs[bank][7][0] ^ 1]) + pcrs[bank][7][1:]
    report = verify_azure(dataclasses.replace(ev, pcrs=pcrs), EvidencePolicy())
    assert "tpm.quote.pcr_digest" in names(report, Status.FAIL)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"HCLA",
        b"HCLA" + bytes(2600),
        (AZ / "snp/hcl-report.bin").read_bytes()[:0x4D4],
        (AZ / "snp/hcl-report.bin").read_bytes()[:2000],
    ],
)
def test_hostile_hcl_reports_fail_cleanly(blob: bytes) -> None:
    ev = dataclasses.replace(load("snp/evidence-v1.json"), hcl_report=blob)
    report = verify_azure(ev, EvidencePolicy())
    assert not report.verified
    assert "hcl.format" in names(report, Status.FAIL)


def test_runtime_data_without_hclakpub_is_rejected(tmp_path: Path) -> None:
    raw = bytearray(load("snp/evidence-v1.json").hcl_report)
    at = raw.find(b'"HCLAkPub"')
    raw[at + 1 : at + 9] = b"NotAnAk!"
    report = verify_azure(
        dataclasses.replace(load("snp/evidence-v1.json"), hcl_report=bytes(raw)), EvidencePolicy()
    )
    assert {"hcl.ak", "hcl.runtime_data"} <= names(report, Status.FAIL)


def test_malformed_evidence_json_is_an_input_error(tmp_path: Path) -> None:
    for doc in ([], {"tpm_quote": 1}, {"tpm_quote": {"message": "zz", "signature": "00"}}):
        with pytest.raises(InputError):
            evidence_from_json(json.dumps(doc).encode())
    path = tmp_path / "bad.json"
    path.write_text('{"tpm_quote": {}}')
    assert main(["evidence", "--type", "azure-cvm", "--azure-evidence", str(path)]) != 0
