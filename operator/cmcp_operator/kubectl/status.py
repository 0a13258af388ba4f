"""``kubectl cmcp status``: gateways, their pods and claims, decisions, shadow evaluation.

Everything comes from the McpGateway status the operator writes (its verification of the
claims) and the injected pods; ``kubectl cmcp verify`` re-verifies the claims locally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import Cluster


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def _short(digest: str | None) -> str:
    return (digest or "").removeprefix("sha256:")[:12]


def gateway_summary(gw: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    meta, spec, st = gw["metadata"], gw.get("spec") or {}, gw.get("status") or {}
    ready = _condition(gw, "Ready")
    candidate = spec.get("candidateBundle") or {}
    shadow = st.get("shadow") or {}
    mine = [
        p
        for p in pods
        if p["metadata"]["namespace"] == meta["namespace"]
        and (p["metadata"].get("labels") or {}).get("cmcp.dev/gateway") == meta["name"]
    ]
    return {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "mode": st.get("enforcementMode") or spec.get("enforcementMode") or "",
        "bundle": (spec.get("bundle") or {}).get("name", ""),
        "bundleHash": st.get("bundleHash") or (spec.get("bundle") or {}).get("hash", ""),
        "candidate": candidate.get("name", ""),
        "candidateHash": candidate.get("hash", ""),
        "pods": [
            {
                "name": p["metadata"]["name"],
                "phase": (p.get("status") or {}).get("phase", ""),
                "node": (p.get("spec") or {}).get("nodeName", ""),
            }
            for p in sorted(mine, key=lambda p: p["metadata"]["name"])
        ],
        "podsInjected": st.get("podsInjected", 0),
        "podsAttested": st.get("podsAttested", 0),
        "podsVerified": st.get("podsVerified", 0),
        "decisions": st.get("decisions") or {},
        "lastClaims": st.get("lastClaims") or [],
        "shadow": shadow,
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "message": ready.get("message", ""),
    }


def status(cluster: Cluster, namespace: str | None) -> list[dict[str, Any]]:
    gateways = cluster.gateways(namespace)
    pods = cluster.injected_pods(namespace) if gateways else []
    return [
        gateway_summary(g, pods)
        for g in sorted(gateways, key=lambda g: (g["metadata"]["namespace"], g["metadata"]["name"]))
    ]


def gateway_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "namespace": s["namespace"],
            "name": s["name"],
            "mode": s["mode"],
            "bundle": f"{s['bundle']}@{_short(s['bundleHash'])}",
            "candidate": f"{s['candidate']}@{_short(s['candidateHash'])}" if s["candidate"] else "",
            "pods": s["podsInjected"],
            "attested": s["podsAttested"],
            "verified": s["podsVerified"],
            "calls": s["decisions"].get("calls", 0),
            "deny": s["decisions"].get("deny", 0),
            "ready": s["ready"],
            "reason": s["reason"],
        }
        for s in summaries
    ]


def claim_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "namespace": s["namespace"],
            "gateway": s["name"],
            "pod": c.get("pod", ""),
            "verdict": c.get("verdict", ""),
            "attested": c.get("attested", False),
            "platform": c.get("platform", ""),
            "issued": c.get("issuedAt", ""),
            "session": c.get("session", ""),
            "reason": c.get("reason", ""),
        }
        for s in summaries
        for c in s["lastClaims"]
    ]


def shadow_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the candidate bundle would decide differently (per tool and decision pair)."""
    out = []
    for s in summaries:
        for d in (s["shadow"] or {}).get("disagreements") or []:
            out.append(
                {
                    "namespace": s["namespace"],
                    "gateway": s["name"],
                    "tool": d.get("tool", ""),
                    "active": d.get("active", ""),
                    "candidate": d.get("candidate", ""),
                    "count": d.get("count", 0),
                    "examples": ",".join(d.get("auditRefs") or [])[:80],
                }
            )
    return out
