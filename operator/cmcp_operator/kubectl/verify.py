"""``kubectl cmcp verify``: fetch claim ConfigMaps, verify each pod's newest claim offline.

Verification is :func:`cmcp_operator.claims.read` (the full :mod:`cmcp_verifier` check of
the claim: signatures, TRACE schema, binding, hardware evidence with the bundled roots, no
network) judged by :func:`cmcp_operator.claims.judge` against the McpGateway the claim
belongs to (its pinned bundle hash, ``allowSoftware``, ``claims.maxAgeSeconds``) — the same
rules the operator applies, computed on this machine from the raw claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..claims import ClaimRecord, Verdict, judge, latest_per, read, rfc3339
from ..models import McpGatewaySpec

if TYPE_CHECKING:
    from .cluster import Cluster


@dataclass(frozen=True)
class Target:
    """What to verify: a gateway, a pod, or everything in scope."""

    gateway: str | None = None
    pod: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Target:
        if not text:
            return cls()
        kind, sep, name = text.partition("/")
        if sep and not name:
            raise ValueError(f"cannot verify {text!r}: the name is missing")
        if sep and kind in ("pod", "pods", "po"):
            return cls(pod=name)
        if sep and kind in ("mcpgateway", "mcpgateways", "mcpgw"):
            return cls(gateway=name)
        if sep:
            raise ValueError(f"cannot verify {text!r}: name a gateway, mcpgw/NAME or pod/NAME")
        return cls(gateway=text)


@dataclass(frozen=True)
class Policy:
    """The gateway's requirements on its claims."""

    pinned_hash: str
    allow_software: bool
    max_age_seconds: int
    problem: str = ""  # set when the gateway is missing or unusable: every claim fails


def gateway_policy(gw: dict[str, Any] | None, name: str) -> Policy:
    if gw is None:
        return Policy("", False, 0, f"McpGateway {name!r} not found")
    try:
        spec = McpGatewaySpec.model_validate(gw.get("spec") or {})
    except ValidationError as exc:
        return Policy("", False, 0, f"McpGateway {name!r} has an invalid spec: {exc.errors()[0]}")
    pinned = (gw.get("status") or {}).get("bundleHash") or spec.bundle.hash
    return Policy(pinned, spec.attestation.allow_software, spec.claims.max_age_seconds)


def row(rec: ClaimRecord, verdict: Verdict) -> dict[str, Any]:
    return {
        "namespace": rec.namespace,
        "gateway": rec.gateway,
        "pod": rec.pod,
        "claim": rec.name,
        "session": rec.session,
        "issuedAt": rfc3339(rec.iat) if rec.iat else "",
        "bundleHash": rec.bundle_hash,
        "platform": rec.platform or rec.evidence_type,
        "verdict": "verified" if verdict.verified else "rejected",
        "attested": verdict.attested,
        "reason": verdict.reason,
        "message": verdict.message,
    }


def verify(cluster: Cluster, namespace: str | None, target: Target) -> list[dict[str, Any]]:
    """One row per pod: its newest claim and the verdict."""
    records = [read(cm) for cm in cluster.claim_configmaps(namespace, target.gateway)]
    if target.pod:
        records = [r for r in records if r.pod == target.pod]
    policies: dict[tuple[str, str], Policy] = {}
    rows = []
    by_namespace: dict[str, list[ClaimRecord]] = {}
    for rec in records:
        by_namespace.setdefault(rec.namespace, []).append(rec)
    newest = [r for recs in by_namespace.values() for r in latest_per(recs, "pod").values()]
    for rec in sorted(newest, key=lambda r: (r.namespace, r.gateway, r.pod)):
        key = (rec.namespace, rec.gateway)
        if key not in policies:
            policies[key] = gateway_policy(cluster.gateway(*key), rec.gateway)
        pol = policies[key]
        if pol.problem:
            verdict = Verdict(False, False, "GatewayNotUsable", pol.problem)
        else:
            verdict = judge(
                rec,
                pinned_hash=pol.pinned_hash,
                allow_software=pol.allow_software,
                max_age_seconds=pol.max_age_seconds,
            )
        rows.append(row(rec, verdict))
    return rows
