"""NVIDIA Hopper GPU evidence: every nvidia row of ../shared/evidence/EXPECTED.md through the
library and the CLI, the signed RIM (real one verified, modified ones rejected), byte flips
and hostile input."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.errors import InputError, VerificationError
from cmcp_verifier.evidence import EvidencePolicy, EvidenceReport, evidence_types
from cmcp_verifier.evidence._common import load_certificates
from cmcp_verifier.evidence._xml import parse_xml
from cmcp_verifier.evidence._xmldsig import DSIG, verify_enveloped
from cmcp_verifier.evidence.nvidia import (
    REQUEST_SIZE,
    SpdmReport,
    certificate_fwids,
    verify_gpu_report,
)
from cmcp_verifier.evidence.nvidia_rim import parse_rim
from cmcp_verifier.report import Status
from cmcp_verifier.roots import root_bytes

from ..conftest import EVIDENCE
from .evidence_helpers import run_evidence_cli, status
from .rimfactory import RimSigner, measurement

NV = EVIDENCE / "nvidia"
NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
RIM = NV / "vbios-rim-1010_0200_882_960074001A.swidtag"
# Inside the RIM signer's validity (2023-09-06 … 2025-09-05); device certificates run to 9999.
AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
POLICY = EvidencePolicy(evaluation_time=AT)
# Every byte of the signed region in CI would take ~25 s; CMCP_FULL_FLIPS=1 flips them all.
RECORD_STRIDE = 1 if os.environ.get("CMCP_FULL_FLIPS") else 5


def report(name: str) -> bytes:
    return bytes.fromhex((NV / name).read_text().strip())


def chain(name: str) -> list[x509.Certificate]:
    return load_certificates((NV / name).read_bytes(), what="test chain")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    return run_evidence_cli(capsys, "gpu-cc", *args)


# --- EXPECTED.md rows ---------------------------------------------------------------------


def test_hopper_report_is_accepted() -> None:
    r = verify_gpu_report(
        report("hopper.report.hex.txt"),
        chain("hopper-cert-chain-case1.txt"),
        POLICY,
        expected_nonce=bytes.fromhex(NONCE),
    )
    assert r.verified, r.render()
    for name in ("cert.chain", "cert.fwid", "report.signature", "nonce"):
        assert status(r, name) is Status.PASS
    assert status(r, "measurements") is Status.SKIP
    assert r.report_data == bytes.fromhex(NONCE) and r.platform == "nvidia-h100"
    facts = r.facts["gpu"]
    assert (facts["nonce"], facts["driver_version"]) == (NONCE, "550.90.07")
    assert facts["vbios_version"] == "96.00.9F.00.01" and len(facts["certificates"]) == 5


def test_coco_report_is_rejected_for_measurement_index_9() -> None:
    r = verify_gpu_report(
        report("hopper-coco.report.hex.txt"),
        chain("hopper-coco.certs.txt"),
        POLICY,
        rims=[RIM.read_bytes()],
    )
    assert not r.verified
    for name in ("cert.chain", "cert.fwid", "report.signature", "rim.1.signature", "rim.1.chain"):
        assert status(r, name) is Status.PASS, name
    assert [c.name for c in r.failures] == ["measurements"]
    detail = r.failures[0].detail
    assert "11 of 12" in detail and "index 9 mismatches" in detail


def test_coco_report_without_rim_verifies_its_signature_and_chain() -> None:
    r = verify_gpu_report(
        report("hopper-coco.report.hex.txt"), chain("hopper-coco.certs.txt"), POLICY
    )
    assert r.verified, r.render()
    assert r.facts["gpu"]["driver_version"] == "580.95.05"


def test_rim_signer_expired_at_the_current_time() -> None:
    r = verify_gpu_report(
        report("hopper-coco.report.hex.txt"),
        chain("hopper-coco.certs.txt"),
        EvidencePolicy(evaluation_time=dt.datetime(2026, 6, 1, tzinfo=dt.UTC)),
        rims=[RIM.read_bytes()],
    )
    assert {c.name for c in r.failures} == {"rim.1.chain", "measurements"}
    assert "not valid at" in r.render()


@pytest.mark.parametrize("case", ["case2", "case3", "case4"])
def test_negative_chains_are_rejected(case: str) -> None:
    r = verify_gpu_report(
        report("hopper.report.hex.txt"), chain(f"hopper-cert-chain-{case}.txt"), POLICY
    )
    assert not r.verified
    assert status(r, "cert.chain") is Status.FAIL


def test_chain_of_another_gpu_is_rejected() -> None:
    r = verify_gpu_report(report("hopper.report.hex.txt"), chain("hopper-coco.certs.txt"), POLICY)
    assert {c.name for c in r.failures} == {"cert.fwid", "report.signature"}


def test_wrong_nonce_is_rejected() -> None:
    r = verify_gpu_report(
        report("hopper.report.hex.txt"),
        chain("hopper-cert-chain-case1.txt"),
        POLICY,
        expected_nonce=bytes(32),
    )
    assert [c.name for c in r.failures] == ["nonce"]


def test_leaf_fwid_extension_is_read() -> None:
    leaf = chain("hopper-cert-chain-case1.txt")[0]
    fwid = SpdmReport.parse(report("hopper.report.hex.txt")).opaque[20]
    assert certificate_fwids(leaf) == [fwid]
    assert certificate_fwids(chain("hopper-cert-chain-case1.txt")[-1]) == []


# --- the signed RIM ---------------------------------------------------------------------------


def test_real_rim_signature_verifies() -> None:
    rim = parse_rim(RIM.read_bytes())
    assert (rim.product, rim.version) == ("GH100", "96.00.74.00.1A")
    assert sorted(i for i, m in rim.measurements.items() if m.active) == [
        0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12,
    ]  # fmt: skip
    assert "HCC RIM L4 Signer" in rim.signer.subject.rfc4514_string()
    signed = verify_enveloped(parse_xml(RIM.read_bytes()))
    assert signed.canonicalization == "http://www.w3.org/2006/12/xml-c14n11"


def _runtime_index_9() -> str:
    return SpdmReport.parse(report("hopper-coco.report.hex.txt")).blocks[10].value.hex()


def test_rim_edited_to_match_is_rejected() -> None:
    """Editing the reference value so that index 9 'matches' breaks the RIM's signature."""
    text = RIM.read_text()
    edited = re.sub(
        r'(index="9"[^>]*ns2:Hash0=")[0-9a-f]+', lambda m: m.group(1) + _runtime_index_9(), text
    )
    assert edited != text
    with pytest.raises(VerificationError, match="digest"):
        parse_rim(edited.encode())
    r = verify_gpu_report(
        report("hopper-coco.report.hex.txt"),
        chain("hopper-coco.certs.txt"),
        POLICY,
        rims=[edited.encode()],
    )
    assert {c.name for c in r.failures} == {"rim.1.signature", "measurements"}


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("<ds:DigestValue>i6l7", "<ds:DigestValue>j6l7", VerificationError),
        ("<ds:SignatureValue>xWqf", "<ds:SignatureValue>yWqf", VerificationError),
        ('Algorithm="http://www.w3.org/2006/12/xml-c14n11"/><ds:SignatureMethod',
         'Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod', InputError),
        ('<ds:Reference URI="">', '<ds:Reference URI="#x">', InputError),
        ('name="GH100"', 'name="GH100x"', VerificationError),
        ("</ns0:Payload>", "</ns0:Payload><ns0:Payload/>", VerificationError),
        ("<ds:Signature ", f'<ds:Signature xmlns:ds="{DSIG}"/><ds:Signature ', InputError),
    ],
)  # fmt: skip
def test_modified_rims_are_rejected(old: str, new: str, error: type[Exception]) -> None:
    text = RIM.read_text()
    assert old in text
    with pytest.raises(error) as caught:
        parse_rim(text.replace(old, new, 1).encode())
    assert "not declared" not in str(caught.value)  # rejected by the signature logic itself


def test_sampled_rim_byte_flips_never_verify() -> None:
    data = RIM.read_bytes()
    for i in range(0, len(data), 97):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        r = verify_gpu_report(
            report("hopper-coco.report.hex.txt"),
            chain("hopper-coco.certs.txt"),
            POLICY,
            rims=[bytes(flipped)],
        )
        rim_checks = {c.name: c.status for c in r.checks if c.name.startswith("rim.1.")}
        assert Status.FAIL in rim_checks.values(), (i, r.render())


def test_rim_for_another_firmware_is_rejected() -> None:
    r = verify_gpu_report(
        report("hopper.report.hex.txt"),
        chain("hopper-cert-chain-case1.txt"),
        POLICY,
        rims=[RIM.read_bytes()],
    )
    assert {c.name for c in r.failures} == {"rim.1.version", "measurements"}
    assert "neither VBIOS 96.00.9F.00.01 nor driver 550.90.07" in r.render()


def test_two_rims_claiming_the_same_index_conflict() -> None:
    r = verify_gpu_report(
        report("hopper-coco.report.hex.txt"),
        chain("hopper-coco.certs.txt"),
        POLICY,
        rims=[RIM.read_bytes(), RIM.read_bytes()],
    )
    assert "RIMs 1 and 2 both set index 0" in r.render() and not r.verified


# --- byte flips and malformed reports ----------------------------------------------------------


def _flip_positions(data: bytes) -> list[int]:
    """Request, response header, every RECORD_STRIDE-th record byte, the rest entirely."""
    spdm = SpdmReport.parse(data)
    record_start = REQUEST_SIZE + 8
    record_end = record_start + sum(7 + len(b.value) for b in spdm.blocks.values())
    return [
        *range(record_start),
        *range(record_start, record_end, RECORD_STRIDE),
        *range(record_end, len(data)),
    ]


def test_flipped_report_bytes_are_rejected() -> None:
    data, certs = report("hopper.report.hex.txt"), chain("hopper-cert-chain-case1.txt")
    assert verify_gpu_report(data, certs, POLICY).verified
    for i in _flip_positions(data):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        r = verify_gpu_report(bytes(flipped), certs, POLICY)
        assert not r.verified, i
        assert {c.name for c in r.failures} & {"report.signature", "report.format"}, i


def test_flipped_certificate_bytes_are_rejected() -> None:
    pem = (NV / "hopper-cert-chain-case1.txt").read_bytes()
    original = [c.public_bytes(Encoding.DER) for c in chain("hopper-cert-chain-case1.txt")]
    data = report("hopper.report.hex.txt")
    for i in range(0, len(pem), 11):
        flipped = bytearray(pem)
        flipped[i] ^= 0x01
        try:
            certs = load_certificates(bytes(flipped), what="flipped")
        except InputError:
            continue
        if [c.public_bytes(Encoding.DER) for c in certs] == original:
            continue  # the flip hit PEM line breaks or armour: the same certificates
        assert not verify_gpu_report(data, certs, POLICY).verified, i


def test_padding_after_the_signature_must_be_zero() -> None:
    data = report("hopper-coco.report.hex.txt")
    assert data[-1] == 0 and SpdmReport.parse(data).padding == 1
    with pytest.raises(InputError, match="follow the signature"):
        SpdmReport.parse(data[:-1] + b"\x01")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:36], "truncated"),
        (lambda d: d[:200], "truncated"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: b"", "truncated"),
        (lambda d: b"\x12" + d[1:], "not SPDM 1.1 GET_MEASUREMENTS"),
        (lambda d: d[:2] + b"\x00" + d[3:], "did not ask for a signature"),
        (lambda d: d[:38] + b"\x61" + d[39:], "not SPDM 1.1 MEASUREMENTS"),
        (lambda d: d[:41] + b"\x00" + d[42:], "no measurement blocks"),
        (lambda d: d[:41] + b"\xff" + d[42:], "truncated"),
        (lambda d: d[:42] + b"\xff\xff\xff" + d[45:], "truncated"),
        (lambda d: d[:46] + b"\x02" + d[47:], "not DMTF"),
        (lambda d: d + b"\x00\xff", "follow the signature"),
    ],
)
def test_malformed_reports_are_rejected_with_a_reason(mutate: Any, reason: str) -> None:
    r = verify_gpu_report(
        mutate(report("hopper.report.hex.txt")), chain("hopper-cert-chain-case1.txt"), POLICY
    )
    assert [c.name for c in r.failures] == ["report.format"]
    assert reason in r.failures[0].detail


def test_huge_and_odd_opaque_fields() -> None:
    data = report("hopper.report.hex.txt")
    spdm = SpdmReport.parse(data)
    opaque_at = len(spdm.signed) - sum(4 + len(v) for v in spdm.opaque.values())
    bad = bytearray(data)
    bad[opaque_at + 2 : opaque_at + 4] = b"\xff\xff"  # first field claims 65535 bytes
    with pytest.raises(InputError, match="truncated"):
        SpdmReport.parse(bytes(bad))


# --- embedded form and CLI -------------------------------------------------------------------


def test_embedded_form() -> None:
    kind = evidence_types()["gpu-cc"]
    evidence = {
        "report": b64url_encode(report("hopper-coco.report.hex.txt")),
        "certs": b64url_encode((NV / "hopper-coco.certs.txt").read_bytes()),
        "vbios_rim": b64url_encode(RIM.read_bytes()),
    }
    r = kind.verify_embedded(evidence, POLICY)
    assert [c.name for c in r.failures] == ["measurements"]
    del evidence["vbios_rim"]
    assert kind.verify_embedded(evidence, POLICY).verified
    with pytest.raises(InputError, match="unexpected"):
        kind.verify_embedded({**evidence, "rim": "AA"}, POLICY)
    with pytest.raises(InputError, match="needs 'report' and 'certs'"):
        kind.verify_embedded({"report": evidence["report"]}, POLICY)


def test_cli_rows(capsys: pytest.CaptureFixture[str]) -> None:
    ok = [
        "--gpu-report",
        str(NV / "hopper.report.hex.txt"),
        "--gpu-certs",
        str(NV / "hopper-cert-chain-case1.txt"),
    ]
    code, out = cli(capsys, *ok, "--nonce", NONCE, "-o", "json")
    assert code == 0 and json.loads(out)["facts"]["gpu"]["driver_version"] == "550.90.07"
    coco = [
        "--gpu-report", str(NV / "hopper-coco.report.hex.txt"),
        "--gpu-certs", str(NV / "hopper-coco.certs.txt"),
        "--rim", str(RIM), "--at", AT.isoformat(),
    ]  # fmt: skip
    code, out = cli(capsys, *coco)
    assert code == 1 and "rejected: measurements: 11 of 12" in out and "index 9 mismatches" in out
    for case in ("case2", "case3", "case4"):
        args = [
            "--gpu-report",
            str(NV / "hopper.report.hex.txt"),
            "--gpu-certs",
            str(NV / f"hopper-cert-chain-{case}.txt"),
        ]
        code, out = cli(capsys, *args)
        assert code == 1 and "cert.chain" in out


def test_cli_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    certs = str(NV / "hopper-cert-chain-case1.txt")
    junk = tmp_path / "junk.hex"
    junk.write_text("11e0" + "00" * 40)
    not_xml = tmp_path / "rim.xml"
    not_xml.write_bytes(b"\x00" * 10)
    cases = [
        (["--gpu-report", str(junk), "--gpu-certs", certs], 1, "rejected: report.format"),
        (["--gpu-report", str(junk), "--gpu-certs", str(junk)], 1, "rejected"),
        (
            [
                "--gpu-report",
                str(NV / "hopper.report.hex.txt"),
                "--gpu-certs",
                certs,
                "--rim",
                str(not_xml),
            ],
            1,
            "rim.1.signature",
        ),
        (["--gpu-report", str(junk)], 2, "needs --gpu-report FILE and --gpu-certs FILE"),
        (["--gpu-report", str(tmp_path / "none"), "--gpu-certs", certs], 2, "cannot read"),
        (["--gpu-report", str(junk), "--gpu-certs", certs, "--nonce", "00"], 2, "32 bytes"),
    ]
    for args, want, text in cases:
        code, out = cli(capsys, *args)
        assert code == want and text in out, (args, out)
        assert "Traceback" not in out


def test_bundled_nvidia_roots_are_the_documented_ones() -> None:
    from cryptography.hazmat.primitives import hashes

    from cmcp_verifier.roots import root_certificates

    expected = {
        "nvidia-device-identity-root.pem": (
            "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
        ),
        "nvidia-rim-root.pem": "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1",
    }
    for name, fingerprint in expected.items():
        assert [c.fingerprint(hashes.SHA256()).hex() for c in root_certificates(name)] == [
            fingerprint
        ]


# --- RIM shapes the public RIM lacks: test-signed RIMs under a test CoRIM root ------------------


@pytest.fixture(scope="module")
def rim_signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[RimSigner, EvidencePolicy]:
    signer = RimSigner()
    roots = tmp_path_factory.mktemp("rimroots")
    for name in ("nvidia-device-identity-root.pem",):
        (roots / name).write_bytes(root_bytes(name))
    return signer, EvidencePolicy(roots_dir=signer.write_roots(roots), evaluation_time=AT)


def _coco(policy: EvidencePolicy, *rims: bytes) -> EvidenceReport:
    return verify_gpu_report(
        report("hopper-coco.report.hex.txt"), chain("hopper-coco.certs.txt"), policy, rims=rims
    )


def test_second_alternative_matches(rim_signer: tuple[RimSigner, EvidencePolicy]) -> None:
    signer, policy = rim_signer
    rim = signer.rim("580.95.05", [measurement(9, "00" * 48, _runtime_index_9())])
    r = _coco(policy, rim)
    assert r.verified, r.render()
    assert "1 of 1 reference measurements match" in r.render()


def test_driver_rim_next_to_the_real_vbios_rim(
    rim_signer: tuple[RimSigner, EvidencePolicy],
) -> None:
    signer, policy = rim_signer
    unrelated = signer.rim("580.95.05", [measurement(40, "00" * 48, active=True)])
    r = _coco(policy, RIM.read_bytes(), unrelated)
    assert "11 of 13 reference measurements match; index 9, 40 mismatch" in r.render()
    overlapping = signer.rim("580.95.05", [measurement(9, _runtime_index_9())])
    assert "RIMs 1 and 2 both set index 9" in _coco(policy, RIM.read_bytes(), overlapping).render()
    inactive = signer.rim("580.95.05", [measurement(9, _runtime_index_9(), active=False)])
    assert "11 of 12" in _coco(policy, RIM.read_bytes(), inactive).render()


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"index": "\u00b2"}, "not an integer"),
        ({"index": "-1"}, "not an integer"),
        ({"index": "256"}, "not an integer"),
        ({"alternatives": "0"}, "no alternatives"),
        ({"alternatives": "2"}, "lacks Hash1"),
        ({"alternatives": "99"}, "not an integer"),
        ({"active": "yes"}, "bad 'active'"),
        ({"h:Hash0": "abc"}, "not 48 hex bytes"),
    ],
)
def test_bad_rim_fields_are_rejected(
    rim_signer: tuple[RimSigner, EvidencePolicy], resource: dict[str, str], reason: str
) -> None:
    signer, policy = rim_signer
    rim = signer.rim("580.95.05", [{**measurement(9, "00" * 48), **resource}])
    r = _coco(policy, rim)
    assert r.failures[0].name == "rim.1.signature" and reason in r.render(), r.render()


def test_duplicate_rim_index_is_rejected(rim_signer: tuple[RimSigner, EvidencePolicy]) -> None:
    signer, policy = rim_signer
    rim = signer.rim("580.95.05", [measurement(9, "00" * 48), measurement(9, "11" * 48)])
    assert "duplicate index" in _coco(policy, rim).render()


def test_rim_from_an_untrusted_root_is_rejected(
    rim_signer: tuple[RimSigner, EvidencePolicy],
) -> None:
    signer, _ = rim_signer
    rim = signer.rim("580.95.05", [measurement(9, _runtime_index_9())])
    r = _coco(POLICY, rim)  # bundled roots: the test CoRIM root is not trusted
    assert [c.name for c in r.failures] == ["rim.1.chain"]


def test_missing_roots_reject_instead_of_raising(tmp_path: Path) -> None:
    r = _coco(EvidencePolicy(roots_dir=tmp_path, evaluation_time=AT), RIM.read_bytes())
    assert {"roots.missing", "rim.1.chain"} <= {c.name for c in r.failures}


def test_claim_with_gpu_evidence_binds_the_spdm_nonce() -> None:
    from cmcp_verifier.canonical import canonical_bytes
    from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

    from .claimfactory import make_claim

    def mutate(trace: dict[str, Any], gw: dict[str, Any]) -> None:
        trace["runtime"]["platform"] = "nvidia-h100"
        gw["attestation"]["type"] = "gpu-cc"
        gw["attestation"]["evidence"] = {
            "report": b64url_encode(report("hopper.report.hex.txt")),
            "certs": b64url_encode((NV / "hopper-cert-chain-case1.txt").read_bytes()),
        }

    claim, _ = make_claim(mutate=mutate)
    r = verify_claim(canonical_bytes(claim), ClaimPolicy())
    for name in ("gpu-cc.report.signature", "gpu-cc.cert.chain", "gpu-cc.cert.fwid"):
        assert status(r, name) is Status.PASS, name
    # The public report's nonce is not this claim's binding digest.
    assert [c.name for c in r.failures] == ["attestation.report_data"]
