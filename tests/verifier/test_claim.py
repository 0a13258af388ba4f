"""Claim verification: signatures, schema, freshness, nonce, binding, audit consistency."""

from __future__ import annotations

import json
import time
from typing import Any

from cmcp_verifier import audit
from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.claim import TRACE_PROFILE_V01, sign_object
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
