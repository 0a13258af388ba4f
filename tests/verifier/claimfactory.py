"""Builds well-formed software-mode claims for verifier tests (the sidecar has its own)."""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmcp_verifier import audit
from cmcp_verifier.binding import binding_digest
from cmcp_verifier.claim import TRACE_PROFILE, sign_claim
from cmcp_verifier.digests import ZERO_DIGEST, b64url_encode, sha256_digest
from cmcp_verifier.keys import jwk_thumbprint, public_jwk

BUNDLE = sha256_digest(b"bundle")
CATALOG = sha256_digest(b"catalog")


def make_log(session: str, decisions: list[str]) -> tuple[bytes, list[audit.AuditRecord]]:
    lines, prev = [], ZERO_DIGEST
    for seq, decision in enumerate(decisions):
        entry = {
            "v": 1,
            "seq": seq,
            "prev": prev,
            "ts_ms": 1_700_000_000_000 + seq,
            "kind": "call",
            "session": session if seq % 3 else "other",
            "decision": decision,
            "forwarded": decision != "deny",
            "tool": "echo",
        }
        line, prev = audit.encode_entry(entry)
        lines.append(line)
    data = b"".join(lines)
    return data, audit.read_log(data)


def make_claim(
    key: Ed25519PrivateKey | None = None,
    *,
    session: str = "s1",
    nonce: bytes = b"",
    decisions: list[str] | None = None,
    iat: int | None = None,
    mutate: Any = None,
    bundle: str = BUNDLE,
) -> tuple[dict[str, Any], bytes]:
    """A signed software claim and the full audit log it commits to."""
    key = key or Ed25519PrivateKey.generate()
    log, records = make_log(session, decisions or ["allow", "deny", "redact", "allow", "error"])
    chain = audit.verify_chain(records)
    mine = chain.sessions.get(session, audit.SessionSummary())
    transcript = audit.session_transcript_hash(session, mine.entry_hashes)
    jwk = public_jwk(key)
    binding = binding_digest(jwk_thumbprint(jwk), bundle, CATALOG, nonce)
    trace = {
        "eat_profile": TRACE_PROFILE,
        "iat": iat or int(time.time()),
        "subject": "spiffe://cluster.local/ns/demo/sa/agent",
        "model": {"provider": "unspecified", "model_id": "unspecified"},
        "runtime": {
            "platform": "software-only",
            "measurement": sha256_digest(b"code"),
            "nonce": b64url_encode(nonce),
        },
        "policy": {"bundle_hash": bundle, "enforcement_mode": "enforce"},
        "data_class": "internal",
        "build_provenance": {"slsa_level": 0, "digest": sha256_digest(b"code")},
        "appraisal": {"status": "none", "verifier": "urn:cmcp:gateway"},
        "cnf": {"jwk": jwk},
        "tool_transcript": {"hash": transcript, "call_count": mine.counts["calls"]},
    }
    gateway = {
        "instance_id": "i-1",
        "session_id": session,
        "session_kind": "mcp-session",
        "principal": "demo/agent",
        "audit_chain": {"root": chain.root, "tip": chain.tip, "length": chain.length},
        "transcript": {"hash": transcript, "entries": len(mine.entry_hashes)},
        "call_summary": mine.counts,
        "bundle": {"hash": bundle, "candidate_hash": None},
        "catalog": {"hash": CATALOG, "drift": []},
        "attestation": {
            "type": "software",
            "evidence": None,
            "collected_at": trace["iat"],
            "stale": False,
            "binding": {"digest": b64url_encode(binding), "nonce": b64url_encode(nonce)},
        },
    }
    if mutate:
        mutate(trace, gateway)
    return sign_claim(trace, gateway, key), log
