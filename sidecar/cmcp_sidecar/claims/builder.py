"""Building and signing one claim: a TRACE v0.2 record inside the gateway envelope.

:func:`build_claim` is pure (no I/O): given the signing identity, static
:class:`ClaimSettings`, the gateway's :class:`PolicyStatus`, a ledger snapshot, the chain
position and the bound evidence, it returns the signed envelope of
:mod:`cmcp_verifier.claim` — exactly what :func:`cmcp_verifier.verify_claim.verify_claim`
checks. Field by field: docs/formats.md.

* ``policy.bundle_hash`` and ``gateway.catalog.hash`` are the hashes the evidence binds, so
  the binding always verifies (:meth:`Attestor.update` makes evidence current only together
  with its bundle).
* ``appraisal`` is always ``{"status": "none", "verifier": APPRAISAL_VERIFIER}``: the
  gateway is the attester; appraising its own evidence would be the attester vouching for
  itself. An auditor's verifier (``cmcp-verify``) appraises the embedded evidence.
* ``build_provenance`` is SLSA level 0 (nothing verified a build provenance here) with the
  package self-measurement as digest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.claim import TRACE_PROFILE, sign_claim
from cmcp_verifier.digests import b64url_encode

from ..attest.attestor import BoundEvidence
from ..attest.identity import SigningIdentity
from ..audit.entries import Mode
from .ledger import LedgerSnapshot

ENFORCEMENT_MODES: dict[str, str] = {
    "enforcing": "enforce",
    "advisory": "advisory",
    "silent": "silent",
}
APPRAISAL_VERIFIER = "urn:cmcp:gateway:no-self-appraisal"
DEFAULT_TRUST_DOMAIN = "cluster.local"
_SPIFFE_RE = re.compile(r"^spiffe://[^/]+/.+$")
_SEGMENT_RE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class ModelInfo:
    """TRACE ``model``: what the agent runs on (from config; ``unspecified`` otherwise)."""

    provider: str = "unspecified"
    model_id: str = "unspecified"
    version: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"provider": self.provider, "model_id": self.model_id}
        if self.version:
            out["version"] = self.version
        return out


@dataclass(frozen=True)
class ClaimSettings:
    """What stays the same for every claim of one gateway process."""

    instance_id: str
    subject: str
    build_digest: str
    model: ModelInfo = ModelInfo()
    slsa_level: int = 0

    def __post_init__(self) -> None:
        if not _SPIFFE_RE.match(self.subject) and not self.subject.startswith("did:"):
            raise ValueError(f"claims.subject {self.subject!r} is not a SPIFFE ID or DID")


@dataclass(frozen=True)
class PolicyStatus:
    """What the gateway knows about its policy when a claim is made."""

    enforcement_mode: Mode = "enforcing"
    candidate_hash: str | None = None  # a reload candidate not (yet) in force
    catalog_drift: tuple[str, ...] = ()  # approved tools whose live definition differs


@dataclass(frozen=True)
class ChainPoint:
    """The whole chain as it was when the claim was made."""

    root: str | None
    tip: str
    length: int


def default_subject(
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    *,
    instance_id: str,
    namespace: str | None = None,
    service_account: str | None = None,
) -> str:
    """``spiffe://<td>/ns/<ns>/sa/<sa>`` in a pod, ``spiffe://<td>/cmcp/gateway/<instance>``
    standalone (the gateway instance is then the workload it can name)."""
    if namespace and service_account:
        return f"spiffe://{trust_domain}/ns/{_segment(namespace)}/sa/{_segment(service_account)}"
    return f"spiffe://{trust_domain}/cmcp/gateway/{_segment(instance_id)}"


def _segment(text: str) -> str:
    return _SEGMENT_RE.sub("-", text) or "-"


def build_claim(
    *,
    identity: SigningIdentity,
    settings: ClaimSettings,
    policy: PolicyStatus,
    ledger: LedgerSnapshot,
    chain: ChainPoint,
    attestation: BoundEvidence,
    stale: bool,
    reason: str,
    now: int | None = None,
    shadow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The signed claim envelope (see the module docs); ``shadow``: the session's shadow
    evaluation of a candidate bundle (``gateway.shadow``), when there is one."""
    iat = int(time.time()) if now is None else now
    transcript = ledger.transcript_hash
    trace = {
        "eat_profile": TRACE_PROFILE,
        "iat": iat,
        "subject": settings.subject,
        "model": settings.model.to_json(),
        "runtime": _runtime(attestation),
        "policy": {
            "bundle_hash": attestation.bundle_hash,
            "enforcement_mode": ENFORCEMENT_MODES[policy.enforcement_mode],
        },
        "data_class": ledger.data_class,
        "build_provenance": {"slsa_level": settings.slsa_level, "digest": settings.build_digest},
        "appraisal": {"status": "none", "verifier": APPRAISAL_VERIFIER},
        "cnf": {"jwk": dict(identity.jwk)},
        "tool_transcript": {"hash": transcript, "call_count": ledger.counts["calls"]},
    }
    gateway = {
        "instance_id": settings.instance_id,
        "session_id": ledger.session_id,
        "session_kind": ledger.kind,
        "principal": ledger.principal,
        "reason": reason,
        "activity": {"first_ms": ledger.first_ms, "last_ms": ledger.last_ms},
        "audit_chain": {"root": chain.root, "tip": chain.tip, "length": chain.length},
        "transcript": {"hash": transcript, "entries": ledger.entries},
        "call_summary": dict(ledger.counts),
        "bundle": {"hash": attestation.bundle_hash, "candidate_hash": policy.candidate_hash},
        "catalog": {"hash": attestation.catalog_hash, "drift": sorted(policy.catalog_drift)},
        "attestation": attestation.claim_member(stale=stale),
    }
    if shadow is not None:
        gateway["shadow"] = dict(shadow)
    return sign_claim(trace, gateway, identity.signing_key)


def _runtime(attestation: BoundEvidence) -> dict[str, str]:
    runtime = {"platform": attestation.platform, "measurement": attestation.evidence.measurement}
    if attestation.nonce:
        runtime["nonce"] = b64url_encode(attestation.nonce)
    return runtime


def encode_claim(claim: dict[str, Any]) -> bytes:
    """The claim's bytes as written and served: RFC 8785 canonical JSON."""
    return canonical_bytes(claim)
