"""AMD SEV-SNP evidence: every sev-snp row of ../shared/evidence/EXPECTED.md, through the library
and the CLI, plus byte flips, hostile input and the embedded (claim) form."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence import EvidencePolicy, EvidenceReport, evidence_types
from cmcp_verifier.evidence._common import load_certificate, load_certificates
from cmcp_verifier.evidence.sevsnp import (
    CERT_TABLE_GUIDS,
    REPORT_SIZE,
    SIGNED_SIZE,
    SnpReport,
    TcbVersion,
    parse_cert_table,
    verify_endorsement_chain,
    verify_snp_report,
)
from cmcp_verifier.report import Status
from cmcp_verifier.roots import root_bytes

from ..conftest import EVIDENCE
from . import snpfactory
from .evidence_helpers import run_evidence_cli, status
from .snpfactory import AmdHierarchy, make_cert_table

SNP = EVIDENCE / "sev-snp"
# Evaluation times inside every certificate's validity; the AWS VLEK expired on 2025-12-10.
AT = {
    "virtee-milan": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "go-sev-guest-milan-debug": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "gcp-v5-x25519-bound": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "trustee-milan": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "aws-vlek": dt.datetime(2025, 6, 1, tzinfo=dt.UTC),
}
# sample -> (report file, key certificate, chain file or None)
SAMPLES = {
    "virtee-milan": (
        "virtee-milan.report.hex",
        "virtee-milan.vcek.der",
        "virtee-milan.ask-ark.pem",
    ),
    "go-sev-guest-milan-debug": (
        "go-sev-guest-milan-debug.report.bin",
        "go-sev-guest-milan-debug.vcek.der",
        None,
    ),
    "gcp-v5-x25519-bound": (
        "gcp-v5-x25519-bound.report.bin",
        "gcp-v5-x25519-bound.vcek.pem",
        "gcp-v5-x25519-bound.ask-ark.pem",
    ),
    "trustee-milan": ("trustee-milan.report.bin", "trustee-milan.vcek.der", None),
    "aws-vlek": ("aws-vlek.report.bin", "aws-vlek.vlek.der", None),
}
ACCEPTED = ["virtee-milan", "gcp-v5-x25519-bound", "trustee-milan", "aws-vlek"]


def report_bytes(name: str) -> bytes:
    data = (SNP / SAMPLES[name][0]).read_bytes()
    return bytes.fromhex(data.decode()) if name == "virtee-milan" else data


def key_cert(name: str) -> x509.Certificate:
    return load_certificate((SNP / SAMPLES[name][1]).read_bytes(), what="test VCEK")


def chain_certs(name: str) -> list[x509.Certificate]:
    chain = SAMPLES[name][2]
    return load_certificates((SNP / chain).read_bytes(), what="test chain") if chain else []


def verify(name: str, **policy: Any) -> EvidenceReport:
    return verify_snp_report(
        report_bytes(name),
        key_cert(name),
        EvidencePolicy(evaluation_time=AT[name], **policy),
        chain=chain_certs(name),
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    return run_evidence_cli(capsys, "sev-snp", *args)


def sample_args(name: str) -> list[str]:
    report, cert, chain = SAMPLES[name]
    args = ["--report", str(SNP / report), "--vcek", str(SNP / cert)]
    args += ["--chain", str(SNP / chain)] if chain else []
    return [*args, "--at", AT[name].isoformat()]


# --- EXPECTED.md rows, library -------------------------------------------------------------


@pytest.mark.parametrize("name", ACCEPTED)
def test_expected_accepts(name: str) -> None:
    report = verify(name)
    assert report.verified, report.render()
    assert all(c.status is Status.PASS for c in report.checks if c.name != "cert.chip_id")
    assert report.platform == "amd-sev-snp"
    assert report.report_data is not None and len(report.report_data) == 64
    assert report.measurement is not None and report.measurement.startswith("sha384:")
    assert report.facts["sev_snp"]["product"] == "Milan"


def test_debug_report_is_rejected_unless_debug_is_allowed() -> None:
    strict = verify("go-sev-guest-milan-debug")
    assert not strict.verified
    assert [c.name for c in strict.failures] == ["guest.policy"]
    assert "DEBUG" in strict.render()
    assert status(strict, "report.signature") is Status.PASS
    assert status(strict, "cert.chain") is Status.PASS
    assert strict.report_data is not None and strict.report_data.startswith(bytes([1, 2, 3, 4, 5]))
    assert strict.facts["sev_snp"]["policy"] == "0xb0000"
    lenient = verify("go-sev-guest-milan-debug", allow_debug=True)
    assert lenient.verified and status(lenient, "guest.policy") is Status.WARN


def test_gcp_v5_report_binds_the_x25519_key() -> None:
    values = dict(
        line.split("=", 1) for line in (SNP / "gcp-v5-x25519-bound.values.txt").read_text().split()
    )
    binding = hashlib.sha512(
        bytes.fromhex(values["NONCE"]) + bytes.fromhex(values["X25519_KEY"])
    ).digest()
    report = verify_snp_report(
        report_bytes("gcp-v5-x25519-bound"),
        key_cert("gcp-v5-x25519-bound"),
        EvidencePolicy(evaluation_time=AT["gcp-v5-x25519-bound"]),
        expected_report_data=binding,
    )
    assert report.verified, report.render()
    assert status(report, "report_data") is Status.PASS
    facts = report.facts["sev_snp"]
    assert (facts["version"], facts["vmpl"], facts["policy_bits"]["debug"]) == (5, 1, False)
    assert facts["launch_mit_vector"] == "0xb"
    wrong = verify_snp_report(
        report_bytes("gcp-v5-x25519-bound"),
        key_cert("gcp-v5-x25519-bound"),
        EvidencePolicy(evaluation_time=AT["gcp-v5-x25519-bound"]),
        expected_report_data=hashlib.sha512(bytes.fromhex(values["NONCE"])).digest(),
    )
    assert [c.name for c in wrong.failures] == ["report_data"]


def test_aws_vlek_report_is_a_v3_vlek_report() -> None:
    report = verify("aws-vlek")
    assert "VLEK ← ASVK SEV-VLEK-Milan ← ARK-Milan" in report.render()
    facts = report.facts["sev_snp"]
    assert (facts["version"], facts["signing_key"], facts["cpuid"]["family"]) == (3, "vlek", 0x19)
    assert status(report, "cert.chip_id") is Status.SKIP


def test_expired_vlek_is_rejected_at_the_current_time() -> None:
    report = verify_snp_report(
        report_bytes("aws-vlek"),
        key_cert("aws-vlek"),
        EvidencePolicy(evaluation_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    )
    assert [c.name for c in report.failures] == ["cert.chain"]
    assert "not valid at" in report.render()


def test_turin_vcek_chains_to_the_turin_ark() -> None:
    report = verify_endorsement_chain(
        load_certificate((SNP / "virtee-turin.vcek.der").read_bytes(), what="t"),
        EvidencePolicy(evaluation_time=AT["virtee-milan"]),
        chain=load_certificates((SNP / "virtee-turin.ask-ark.pem").read_bytes(), what="t"),
    )
    assert report.verified, report.render()
    assert report.facts["sev_snp"]["product"] == "Turin"
    assert "ARK-Turin" in report.render()


@pytest.mark.parametrize("name", ["legacy", "new"])
def test_vceks_with_a_bad_ask_signature_are_rejected(name: str) -> None:
    cert = load_certificate((SNP / f"negative-vcek-bad-ask-sig-{name}.der").read_bytes(), what="t")
    report = verify_endorsement_chain(cert, EvidencePolicy(evaluation_time=AT["virtee-milan"]))
    assert not report.verified
    assert "not signed by a pinned AMD ASK" in report.render()
    milan = load_certificates((SNP / "virtee-milan.ask-ark.pem").read_bytes(), what="t")
    with_chain = verify_endorsement_chain(
        cert, EvidencePolicy(evaluation_time=AT["virtee-milan"]), chain=milan
    )
    assert not with_chain.verified


def test_report_with_another_chips_vcek_is_rejected() -> None:
    report = verify_snp_report(
        report_bytes("virtee-milan"),
        key_cert("trustee-milan"),
        EvidencePolicy(evaluation_time=AT["virtee-milan"]),
    )
    assert {c.name for c in report.failures} == {"report.signature", "cert.chip_id"}


def test_vlek_report_with_a_vcek_is_rejected() -> None:
    report = verify_snp_report(
        report_bytes("aws-vlek"),
        key_cert("virtee-milan"),
        EvidencePolicy(evaluation_time=AT["aws-vlek"]),
    )
    assert [c.name for c in report.failures] == ["cert.kind"]


# --- TCB encodings --------------------------------------------------------------------------


def test_tcb_layouts() -> None:
    raw = int.from_bytes(bytes([1, 2, 3, 4, 0, 0, 5, 6]), "little")
    assert TcbVersion.decode(raw, turin=False) == TcbVersion(1, 2, 5, 6)
    assert TcbVersion.decode(raw, turin=True) == TcbVersion(2, 3, 4, 6, fmc=1)
    assert TcbVersion.decode(raw, turin=True).as_dict()["fmc"] == 1


# --- every flipped byte is rejected -------------------------------------------------------------


@pytest.mark.parametrize("name", ACCEPTED)
def test_every_flipped_report_byte_is_rejected(name: str) -> None:
    data, cert, chain = report_bytes(name), key_cert(name), chain_certs(name)
    policy = EvidencePolicy(evaluation_time=AT[name])
    assert verify_snp_report(data, cert, policy, chain=chain).verified
    for i in range(REPORT_SIZE):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        report = verify_snp_report(bytes(flipped), cert, policy, chain=chain)
        failed = {c.name for c in report.failures}
        assert failed & {"report.signature", "report.format"}, (name, hex(i), report.render())


@pytest.mark.parametrize("name", ["virtee-milan", "aws-vlek"])
def test_flipped_certificate_bytes_are_rejected(name: str) -> None:
    der = (SNP / SAMPLES[name][1]).read_bytes()
    policy = EvidencePolicy(evaluation_time=AT[name])
    for i in range(0, len(der), 3):
        flipped = bytearray(der)
        flipped[i] ^= 0x01
        try:
            cert = load_certificate(bytes(flipped), what="flipped")
        except InputError:
            continue  # unreadable: rejected before any check
        assert not verify_snp_report(report_bytes(name), cert, policy).verified, (name, i)


def test_flipped_chain_bytes_are_rejected() -> None:
    pem = (SNP / "virtee-milan.ask-ark.pem").read_bytes()
    der = b"".join(c.public_bytes(Encoding.DER) for c in load_certificates(pem, what="t"))
    policy = EvidencePolicy(evaluation_time=AT["virtee-milan"])
    data, cert = report_bytes("virtee-milan"), key_cert("virtee-milan")
    for i in range(0, len(der), 5):
        flipped = bytearray(der)
        flipped[i] ^= 0x01
        try:
            chain = load_certificates(bytes(flipped), what="flipped")
        except InputError:
            continue
        assert not verify_snp_report(data, cert, policy, chain=chain).verified, i


# --- hostile and malformed input ------------------------------------------------------------


def _resized(data: bytes, size: int) -> bytes:
    return data[:size] if size < len(data) else data + bytes(size - len(data))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:100], "exactly 1184"),
        (lambda d: d[:-1], "exactly 1184"),
        (lambda d: _resized(d, 4096), "exactly 1184"),
        (lambda d: b"", "exactly 1184"),
        (lambda d: struct.pack("<I", 1) + d[4:], "unsupported report version 1"),
        (lambda d: struct.pack("<I", 0xFFFFFFFF) + d[4:], "unsupported report version"),
        (lambda d: d[:0x34] + struct.pack("<I", 2) + d[0x38:], "signature algorithm"),
        (lambda d: d[:0x48] + struct.pack("<I", 0x10) + d[0x4C:], "SIGNER_INFO"),
        (lambda d: d[:0x1F8] + b"\xff" + d[0x1F9:], "reserved bytes"),
        (lambda d: d[:-1] + b"\x01", "reserved bytes"),
        (lambda d: d[:0x8] + struct.pack("<Q", 0) + d[0x10:], "bit 17"),
    ],
)
def test_malformed_reports_are_rejected_with_a_reason(mutate: Any, reason: str) -> None:
    report = verify_snp_report(
        mutate(report_bytes("virtee-milan")), key_cert("virtee-milan"), EvidencePolicy()
    )
    assert not report.verified
    assert [c.name for c in report.failures] == ["report.format"]
    assert reason in report.failures[0].detail


def test_parse_exposes_the_layout() -> None:
    snp = SnpReport.parse(report_bytes("gcp-v5-x25519-bound"))
    assert (snp.version, snp.vmpl, snp.signing_key, snp.debug) == (5, 1, "vcek", False)
    assert snp.cpuid == (0x19, 1, 1) and snp.cpuid_product == "Milan"
    assert snp.current_mit_vector == 0xB and len(snp.signed_bytes) == SIGNED_SIZE
    assert SnpReport.parse(report_bytes("virtee-milan")).cpuid is None


def test_missing_vcek_names_where_to_fetch_it() -> None:
    report = verify_snp_report(report_bytes("gcp-v5-x25519-bound"), None, EvidencePolicy())
    assert not report.verified
    detail = next(c.detail for c in report.failures if c.name == "report.signature")
    assert "kdsintf.amd.com/vcek/v1/Milan/980cf7b6" in detail and "ucodeSPL=222" in detail


def test_missing_roots_fail_closed(tmp_path: Path) -> None:
    report = verify_snp_report(
        report_bytes("virtee-milan"),
        key_cert("virtee-milan"),
        EvidencePolicy(roots_dir=tmp_path, evaluation_time=AT["virtee-milan"]),
    )
    assert "no pinned AMD root" in report.render() and not report.verified
    (tmp_path / "amd-genoa-ask-ark-asvk.pem").write_bytes(root_bytes("amd-genoa-ask-ark-asvk.pem"))
    only_genoa = verify_snp_report(
        report_bytes("virtee-milan"),
        key_cert("virtee-milan"),
        EvidencePolicy(roots_dir=tmp_path, evaluation_time=AT["virtee-milan"]),
    )
    assert not only_genoa.verified and "(Genoa)" in only_genoa.render()


def test_a_foreign_root_in_the_supplied_chain_is_rejected() -> None:
    foreign = load_certificates(root_bytes("nvidia-rim-root.pem"), what="t")
    report = verify_snp_report(
        report_bytes("virtee-milan"),
        key_cert("virtee-milan"),
        EvidencePolicy(evaluation_time=AT["virtee-milan"]),
        chain=[*chain_certs("virtee-milan"), *foreign],
    )
    assert [c.name for c in report.failures] == ["cert.chain"]
    assert "neither pinned nor issued by a pinned ARK" in report.render()


# --- certificate table (extended report auxblob) ----------------------------------------------


def test_cert_table_supplies_the_vcek_and_chain() -> None:
    pem = (SNP / "virtee-milan.ask-ark.pem").read_bytes()
    ask, ark = (c.public_bytes(Encoding.DER) for c in load_certificates(pem, what="t"))
    table = make_cert_table(
        {"vcek": (SNP / "virtee-milan.vcek.der").read_bytes(), "ask": ask, "ark": ark}
    )
    assert set(parse_cert_table(table)) == {"vcek", "ask", "ark"}
    report = verify_snp_report(
        report_bytes("virtee-milan"),
        None,
        EvidencePolicy(evaluation_time=AT["virtee-milan"]),
        cert_table=table,
    )
    assert report.verified, report.render()


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (b"", "truncated"),
        (bytes(23), "truncated"),
        (uuid.uuid4().bytes + struct.pack("<II", 1, 1) + bytes(24), "outside"),
        (
            next(iter(CERT_TABLE_GUIDS)).bytes + struct.pack("<II", 48, 0xFFFFFFFF) + bytes(24),
            "outside",
        ),
        ((uuid.uuid4().bytes + struct.pack("<II", 99, 1)) * 40, "too many"),
    ],
)
def test_bad_cert_tables_are_rejected(table: bytes, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        parse_cert_table(table)
    report = verify_snp_report(
        report_bytes("virtee-milan"), None, EvidencePolicy(), cert_table=table or bytes(1)
    )
    assert not report.verified


# --- embedded form (claims) -------------------------------------------------------------------


def test_embedded_form_verifies_like_files() -> None:
    kind = evidence_types()["sev-snp"]
    evidence = {
        "report": b64url_encode(report_bytes("trustee-milan")),
        "vcek": b64url_encode((SNP / "trustee-milan.vcek.der").read_bytes()),
    }
    policy = EvidencePolicy(evaluation_time=AT["trustee-milan"])
    assert kind.verify_embedded(evidence, policy).verified
    with pytest.raises(InputError, match="unexpected"):
        kind.verify_embedded({**evidence, "extra": "AA"}, policy)
    with pytest.raises(InputError, match="needs 'report'"):
        kind.verify_embedded({"vcek": evidence["vcek"]}, policy)
    with pytest.raises(InputError, match="base64url"):
        kind.verify_embedded({"report": "a+b"}, policy)


def test_claim_with_sev_snp_evidence_checks_the_report_and_the_binding() -> None:
    from cmcp_verifier.canonical import canonical_bytes
    from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

    from .claimfactory import make_claim

    def mutate(trace: dict[str, Any], gw: dict[str, Any]) -> None:
        trace["runtime"]["platform"] = "amd-sev-snp"
        trace["runtime"]["measurement"] = (
            "sha384:" + SnpReport.parse(report_bytes("trustee-milan")).measurement.hex()
        )
        gw["attestation"]["type"] = "sev-snp"
        gw["attestation"]["evidence"] = {
            "report": b64url_encode(report_bytes("trustee-milan")),
            "vcek": b64url_encode((SNP / "trustee-milan.vcek.der").read_bytes()),
        }

    claim, _ = make_claim(mutate=mutate)
    report = verify_claim(canonical_bytes(claim), ClaimPolicy())
    assert status(report, "sev-snp.report.signature") is Status.PASS
    assert status(report, "sev-snp.cert.chain") is Status.PASS
    assert status(report, "runtime.measurement") is Status.PASS
    # The public sample's REPORT_DATA cannot carry this claim's binding digest.
    assert status(report, "attestation.report_data") is Status.FAIL


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACCEPTED)
def test_cli_accepts(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out = cli(capsys, *sample_args(name))
    assert code == 0, out
    assert out.rstrip().endswith("verified")


def test_cli_debug_and_allow_debug(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, *sample_args("go-sev-guest-milan-debug"))
    assert code == 1 and "rejected: guest.policy" in out
    code, _ = cli(capsys, *sample_args("go-sev-guest-milan-debug"), "--allow-debug")
    assert code == 0


def test_cli_json_and_nonce(capsys: pytest.CaptureFixture[str]) -> None:
    values = dict(
        line.split("=", 1) for line in (SNP / "gcp-v5-x25519-bound.values.txt").read_text().split()
    )
    binding = hashlib.sha512(bytes.fromhex(values["NONCE"] + values["X25519_KEY"])).hexdigest()
    code, out = cli(capsys, *sample_args("gcp-v5-x25519-bound"), "--nonce", binding, "-o", "json")
    data = json.loads(out)
    assert code == 0 and data["verdict"] == "verified"
    assert {"name": "report_data", "status": "pass"}.items() <= data["checks"][-1].items()
    assert data["facts"]["sev_snp"]["vmpl"] == 1
    code, out = cli(capsys, *sample_args("gcp-v5-x25519-bound"), "--nonce", values["NONCE"])
    assert code == 1 and "rejected: report_data" in out


def test_cli_certificate_only(capsys: pytest.CaptureFixture[str]) -> None:
    turin = [
        "--vcek",
        str(SNP / "virtee-turin.vcek.der"),
        "--chain",
        str(SNP / "virtee-turin.ask-ark.pem"),
    ]
    assert cli(capsys, *turin, "--at", "2026-01-01")[0] == 0
    for name in ("legacy", "new"):
        code, out = cli(capsys, "--vcek", str(SNP / f"negative-vcek-bad-ask-sig-{name}.der"))
        assert code == 1 and "rejected: cert.chain" in out


def test_cli_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    vcek = str(SNP / "virtee-milan.vcek.der")
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(report_bytes("virtee-milan")[:500])
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"\x30\x82\xff\xff" + bytes(100))
    odd_hex = tmp_path / "odd.hex"
    odd_hex.write_text("abc")
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(17 * 1024 * 1024)  # sparse: larger than the 16 MiB input limit
    cases = [
        (["--report", str(truncated), "--vcek", vcek], 1, "rejected: report.format"),
        (["--report", str(odd_hex), "--vcek", vcek], 1, "exactly 1184"),
        (
            ["--report", str(SNP / "trustee-milan.report.bin"), "--vcek", str(garbage)],
            1,
            "rejected",
        ),
        (
            ["--report", str(SNP / "trustee-milan.report.bin"), "--chain", str(garbage)],
            1,
            "rejected",
        ),
        (["--report", str(huge), "--vcek", vcek], 1, "rejected: evidence.too_large"),
        (["--report", str(tmp_path / "missing.bin")], 2, "cannot read"),
        ([], 2, "needs --report"),
        (["--report", str(truncated), "--nonce", "00" * 65], 2, "longer than REPORT_DATA"),
    ]
    for args, want, text in cases:
        code, out = cli(capsys, *args)
        assert code == want and text in out, (args, out)
        assert "Traceback" not in out


def test_cli_entry_point_runs_without_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\xff" * 700)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cmcp_verifier",
            "evidence",
            "--type",
            "sev-snp",
            "--report",
            str(junk),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "rejected:" in proc.stdout and "Traceback" not in proc.stderr


def test_bundled_amd_roots_are_the_expected_arks() -> None:
    expected = {
        "milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        "genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        "turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    }
    for product, fingerprint in expected.items():
        certs = load_certificates(root_bytes(f"amd-{product}-ask-ark-asvk.pem"), what="t")
        arks = [c for c in certs if c.subject == c.issuer]
        assert [a.fingerprint(hashes.SHA256()).hex() for a in arks] == [fingerprint]


# --- layouts no public sample covers: a test AMD hierarchy ------------------------------------


@pytest.fixture(scope="module")
def turin(tmp_path_factory: pytest.TempPathFactory) -> tuple[AmdHierarchy, Path]:
    amd = AmdHierarchy("Turin")
    return amd, amd.write_roots(tmp_path_factory.mktemp("roots"))


TURIN_SPL = {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}
TURIN_CPUID = (0x1A, 0x02, 0x01)


def _turin_report(amd: AmdHierarchy, **fields: Any) -> tuple[bytes, x509.Certificate]:
    hwid = fields.pop("hwid", b"\x01\x02\x03\x04\x05\x06\x07\x08")
    key, cert = amd.endorsement_key(fields.pop("spl", TURIN_SPL), hwid=hwid)
    tcb_value = snpfactory.tcb("Turin", bl=2, tee=3, snp=4, ucode=5, fmc=1)
    fields.setdefault("reported_tcb", tcb_value)
    fields.setdefault("chip_id", b"\x01\x02\x03\x04\x05\x06\x07\x08")
    fields.setdefault("cpuid", TURIN_CPUID)
    return snpfactory.make_report(key, **fields), cert


def test_turin_report_with_fmc_and_8_byte_hwid(turin: tuple[AmdHierarchy, Path]) -> None:
    amd, roots = turin
    data, cert = _turin_report(amd)
    report = verify_snp_report(
        data, cert, EvidencePolicy(roots_dir=roots, evaluation_time=snpfactory.AT)
    )
    assert report.verified, report.render()
    assert "fmc=1" in report.render() and report.facts["sev_snp"]["product"] == "Turin"
    assert report.facts["sev_snp"]["reported_tcb"] == TURIN_SPL


@pytest.mark.parametrize(
    ("fields", "failed"),
    [
        ({"spl": {**TURIN_SPL, "fmc": 9}}, {"cert.tcb"}),
        ({"spl": {k: v for k, v in TURIN_SPL.items() if k != "fmc"}}, {"cert.tcb"}),
        ({"chip_id": b"\x09" * 8}, {"cert.chip_id"}),
        ({"chip_id": b"\x01\x02\x03\x04\x05\x06\x07\x08" + b"\x01"}, {"cert.chip_id"}),
        ({"cpuid": (0x19, 0x01, 0x01)}, {"cert.product"}),
        ({"signer_info": 7 << 2}, {"report.signature"}),
        ({"policy": 0x30000 | 1 << 19}, {"guest.policy"}),
    ],
)
def test_turin_mismatches_are_rejected(
    turin: tuple[AmdHierarchy, Path], fields: dict[str, Any], failed: set[str]
) -> None:
    amd, roots = turin
    data, cert = _turin_report(amd, **fields)
    report = verify_snp_report(
        data, cert, EvidencePolicy(roots_dir=roots, evaluation_time=snpfactory.AT)
    )
    assert {c.name for c in report.failures} == failed, report.render()


@pytest.mark.parametrize("version", [3, 4, 5])
def test_masked_chip_id_is_skipped(turin: tuple[AmdHierarchy, Path], version: int) -> None:
    amd, roots = turin
    data, cert = _turin_report(amd, chip_id=b"", signer_info=2, version=version)
    report = verify_snp_report(
        data, cert, EvidencePolicy(roots_dir=roots, evaluation_time=snpfactory.AT)
    )
    assert report.verified, report.render()
    assert status(report, "cert.chip_id") is Status.SKIP


def test_vlek_signed_turin_report(turin: tuple[AmdHierarchy, Path]) -> None:
    amd, roots = turin
    key, vlek = amd.endorsement_key(TURIN_SPL, vlek=True)
    data = snpfactory.make_report(
        key,
        reported_tcb=snpfactory.tcb("Turin", bl=2, tee=3, snp=4, ucode=5, fmc=1),
        cpuid=TURIN_CPUID,
        signer_info=1 << 2,
    )
    policy = EvidencePolicy(roots_dir=roots, evaluation_time=snpfactory.AT)
    report = verify_snp_report(data, vlek, policy)
    assert report.verified and "VLEK ← ASVK SEV-VLEK-Turin" in report.render()
    table = make_cert_table({"vlek": vlek.public_bytes(Encoding.DER)})
    assert verify_snp_report(data, None, policy, cert_table=table).verified
    as_vcek = snpfactory.make_report(key, cpuid=TURIN_CPUID)  # claims VCEK, signed by the VLEK
    assert [c.name for c in verify_snp_report(as_vcek, vlek, policy).failures] == ["cert.kind"]
