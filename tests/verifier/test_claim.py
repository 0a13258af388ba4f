"""Claim verification: signatures, schema, freshness, nonce, binding, audit consistency."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cmcp_verifier import audit
from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.claim import TRACE_PROFILE_V01, sign_object
from cmcp_verifier.digests import b64url_decode, b64url_encode
from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.evidence.tdx_quote import parse_quote
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from .claimfactory import BUNDLE, make_claim

SOFT = ClaimPolicy(allow_software=True)


def _status(report: Any, name: str) -> Status:
    return next(c.status for c in report.checks if c.name == name)


def test_software_claim_verifies_only_when_software_is_allowed() -> None:
    claim, log = make_claim()
    data = canonical_bytes(claim)
    ok = verify_claim(
        data, ClaimPolicy(allow_software=True, audit_log=log, approved_bundle_hashes=(BUNDLE,))
    )
    assert ok.verified, ok.render()
    assert _status(ok, "attestation.evidence") is Status.WARN
    strict = verify_claim(data, ClaimPolicy())
    assert not strict.verified
    assert _status(strict, "attestation.evidence") is Status.FAIL


def test_any_flipped_byte_is_rejected() -> None:
    claim, _ = make_claim()
    data = json.dumps(claim).encode()
    for i in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        assert not verify_claim(bytes(flipped), SOFT).verified, i


def test_v01_profile_is_rejected_by_name() -> None:
    claim, _ = make_claim(mutate=lambda t, g: t.update(eat_profile=TRACE_PROFILE_V01))
    report = verify_claim(canonical_bytes(claim), SOFT)
    assert not report.verified and "v0.1" in report.render()


def test_schema_violation_is_rejected() -> None:
    claim, _ = make_claim(mutate=lambda t, g: t.update(extra_member=1))
    report = verify_claim(canonical_bytes(claim), SOFT)
    assert _status(report, "trace.schema") is Status.FAIL


def test_resigned_with_other_key_fails_binding_not_signature() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cmcp_verifier.keys import public_jwk

    claim, _ = make_claim()
    other = Ed25519PrivateKey.generate()
    trace = dict(claim["trace"], cnf={"jwk": public_jwk(other)})
    forged = sign_object({**claim, "trace": sign_object(trace, other)}, other)
    report = verify_claim(canonical_bytes(forged), SOFT)
    assert _status(report, "envelope.signature") is Status.PASS
    assert _status(report, "attestation.binding") is Status.FAIL


def test_freshness_and_future() -> None:
    old, _ = make_claim(iat=int(time.time()) - 100_000)
    assert _status(verify_claim(canonical_bytes(old), SOFT), "claim.freshness") is Status.FAIL
    future, _ = make_claim(iat=int(time.time()) + 3600)
    assert _status(verify_claim(canonical_bytes(future), SOFT), "claim.freshness") is Status.FAIL


def test_nonce_must_match_when_required() -> None:
    claim, _ = make_claim(nonce=b"abc")
    data = canonical_bytes(claim)
    assert verify_claim(data, ClaimPolicy(allow_software=True, nonce=b"abc")).verified
    wrong = verify_claim(data, ClaimPolicy(allow_software=True, nonce=b"abd"))
    assert _status(wrong, "claim.nonce") is Status.FAIL


def test_bundle_pin() -> None:
    claim, _ = make_claim()
    report = verify_claim(
        canonical_bytes(claim),
        ClaimPolicy(allow_software=True, approved_bundle_hashes=("sha256:" + "f" * 64,)),
    )
    assert _status(report, "policy.bundle_hash") is Status.FAIL


def test_audit_log_must_match_claim() -> None:
    claim, log = make_claim()
    data = canonical_bytes(claim)
    records = audit.read_log(log)
    # Drop one of the session's entries from an export: transcript no longer matches.
    session_lines = [r.line + b"\n" for r in records if r.entry["session"] == "s1"]
    export = b"".join(session_lines)
    assert verify_claim(data, ClaimPolicy(allow_software=True, audit_log=export)).verified
    short = b"".join(session_lines[:-1])
    report = verify_claim(data, ClaimPolicy(allow_software=True, audit_log=short))
    assert _status(report, "audit.transcript") is Status.FAIL
    # A tampered full log fails on the entry hash.
    tampered = log.replace(b'"decision":"deny"', b'"decision":"allow"', 1)
    report = verify_claim(data, ClaimPolicy(allow_software=True, audit_log=tampered))
    assert not report.verified


def _detail(report: Any, name: str) -> str:
    return next(c.detail for c in report.checks if c.name == name)


def test_failed_checks_say_what_was_expected(evidence_dir: Path) -> None:
    claim, log = make_claim(nonce=b"abc", iat=int(time.time()) - 100_000)
    data = canonical_bytes(claim)
    policy = ClaimPolicy(
        allow_software=True,
        nonce=b"abd",
        approved_bundle_hashes=("sha256:" + "f" * 64,),
        evidence=EvidencePolicy(expected_measurement="sha256:" + "0" * 64),
        audit_log=b"".join(r.line + b"\n" for r in audit.read_log(log)[1:2]),
    )
    report = verify_claim(data, policy)
    details = {c.name: c.detail for c in report.failures}
    assert "expected 616264, found 616263; first difference at byte 2" in details["claim.nonce"]
    assert "expected one of sha256:ffff" in details["policy.bundle_hash"]
    assert "expected at most 86400 s" in details["claim.freshness"]
    assert "expected the pinned sha256:0000" in details["runtime.expected_measurement"]
    assert "the claim states sha256:" in details["audit.transcript"]
    assert set(details) == {
        "claim.nonce",
        "policy.bundle_hash",
        "claim.freshness",
        "runtime.expected_measurement",
        "audit.transcript",
        "audit.counters",
    }, details
    # Bound to another nonce than the gateway says: the binding check names both digests.
    forged, _ = make_claim(
        mutate=lambda t, g: g["attestation"]["binding"].update(digest=b64url_encode(bytes(32)))
    )
    binding = _detail(verify_claim(canonical_bytes(forged), SOFT), "attestation.binding")
    assert "'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'" in binding and "give '" in binding


def test_report_data_failure_shows_expected_and_found(evidence_dir: Path) -> None:
    quote = (evidence_dir / "tdx" / "trustee-v5.quote.dat").read_bytes()
    parsed = parse_quote(quote)

    def to_tdx(trace: dict[str, Any], gateway: dict[str, Any]) -> None:
        trace["runtime"].update(
            platform="intel-tdx", measurement=f"sha384:{parsed.body.mr_td.hex()}"
        )
        trace["appraisal"]["status"] = "affirming"
        gateway["attestation"].update(type="tdx", evidence={"quote": b64url_encode(quote)})

    claim, _ = make_claim(mutate=to_tdx)
    report = verify_claim(canonical_bytes(claim), ClaimPolicy())
    detail = _detail(report, "attestation.report_data")
    binding = b64url_decode(claim["gateway"]["attestation"]["binding"]["digest"])
    expected = binding + bytes(32)
    assert f"expected {expected.hex()}, found {parsed.body.report_data.hex()}" in detail
    first = next(i for i in range(64) if expected[i] != parsed.body.report_data[i])
    assert detail.endswith(f"first difference at byte {first}")
    assert detail != "hardware report data carries the binding digest"


def test_audit_log_as_a_file_is_streamed_with_the_same_verdicts(tmp_path: Path) -> None:
    claim, log = make_claim()
    data = canonical_bytes(claim)
    records = audit.read_log(log)
    foreign = b"".join(r.line + b"\n" for r in records if r.entry["session"] != "s1")
    relinked = log.replace(records[1].line, records[1].line.replace(b'"seq":1', b'"seq":1 '))
    for name, content in (("full", log), ("foreign", foreign), ("broken", relinked)):
        path = tmp_path / name
        path.write_bytes(content)
        from_file = verify_claim(data, ClaimPolicy(allow_software=True, audit_log=path))
        in_memory = verify_claim(data, ClaimPolicy(allow_software=True, audit_log=content))
        assert from_file.to_json() == in_memory.to_json()
        assert from_file.verified == (name == "full"), from_file.render()
    missing = verify_claim(data, ClaimPolicy(allow_software=True, audit_log=tmp_path / "none"))
    assert [c.name for c in missing.failures] == ["audit.unreadable"]


def test_an_overlong_bound_nonce_is_rejected_not_raised() -> None:
    # Found by the structured claim fuzzer: binding_digest refuses nonces over 64 bytes.
    claim, _ = make_claim(mutate=lambda t, g: g["attestation"]["binding"].update(nonce="A" * 100))
    report = verify_claim(canonical_bytes(claim), SOFT)
    assert [c.name for c in report.failures] == ["binding.nonce_too_long"]


def test_future_claim_names_the_tolerated_skew() -> None:
    claim, _ = make_claim(iat=int(time.time()) + 3600)
    detail = _detail(verify_claim(canonical_bytes(claim), SOFT), "claim.freshness")
    assert "in the future; expected at most 60 s ahead" in detail
