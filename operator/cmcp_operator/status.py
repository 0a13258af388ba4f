"""McpGateway status: workloads, pods, claims and conditions, written only when changed.

Computed from the gateway's in-memory state, the injected pods (one list by label) and the
claims seen so far; written as a merge patch of the status subresource. Conditions keep
their transition times while unchanged, and a condition changing reason posts an event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from . import api, kube, metrics
from .claims import ClaimBook, ClaimRecord, Verdict, judge, latest_per, rfc3339
from .conditions import Cond, merge
from .state import Context, GatewayKey, GatewayState, StatusKey

log = logging.getLogger("cmcp.operator.status")
MAX_LISTED = 50
SHADOW_REFS = 5  # audit references kept per disagreement row


async def write(ctx: Context, claims: ClaimBook, key: StatusKey) -> None:
    state = ctx.gateways.get(GatewayKey(*key))
    if state is None or state.deleting or not state.reconciled:
        return
    pods = await ctx.client.list(
        kube.core("pods", state.namespace), label_selector=f"{api.LABEL_GATEWAY}={state.name}"
    )
    status, computed = build(ctx, state, pods, claims)
    status["conditions"] = merge(state.conditions, computed, state.generation)
    if status == state.status_written:
        return
    path = kube.group(api.API_VERSION, api.GATEWAY_PLURAL, state.namespace, state.name)
    if not await ctx.client.patch_status(path, status):
        return
    state.status_written, state.conditions = status, status["conditions"]
    await _announce(ctx, state, computed)


def build(
    ctx: Context, state: GatewayState, pods: list[dict[str, Any]], claims: ClaimBook
) -> tuple[dict[str, Any], list[Cond]]:
    """The status body (without conditions) and the computed conditions."""
    outcomes = state.outcomes
    live = {k: o for k, o in outcomes.items() if k in ctx.workloads}
    injected = sorted(f"{k.kind}/{k.name}" for k, o in live.items() if o.state == "injected")
    refused = [o for o in live.values() if o.state == "refused"]
    conflicts = [o for o in live.values() if o.state == "conflict"]
    selected = len([o for o in live.values() if o.state != "conflict"])
    metrics.INJECTED_WORKLOADS.labels(state.namespace, state.name).set(len(injected))

    pod_uids = {(p["metadata"].get("uid") or ""): p["metadata"]["name"] for p in pods}
    mine = [r for r in claims.of_gateway(state.namespace, state.name) if r.pod_uid in pod_uids]
    spec = state.spec
    pinned = state.bundle_hash or (spec.bundle.hash if spec else "")
    allow_sw = bool(spec and spec.attestation.allow_software)
    max_age = spec.claims.max_age_seconds if spec else 0

    def verdict_of(rec: Any) -> Verdict:
        return judge(rec, pinned_hash=pinned, allow_software=allow_sw, max_age_seconds=max_age)

    per_pod = latest_per(mine, "pod")
    verdicts = {pod: verdict_of(rec) for pod, rec in per_pod.items()}
    decisions = dict.fromkeys(("calls", "allow", "deny", "redact", "error", "blocked"), 0)
    sessions = latest_per((r for r in mine if verdict_of(r).verified), "session").values()
    for rec in sessions:
        for k in decisions:
            decisions[k] += int(rec.summary.get(k, 0))
    candidate = spec.candidate_bundle.hash if spec and spec.candidate_bundle else None
    shadow = shadow_status(sessions, candidate) if candidate else None
    last = [
        {
            "pod": pod,
            "claim": rec.name,
            "session": rec.session,
            "issuedAt": rfc3339(rec.iat),
            "verdict": "verified" if verdicts[pod].verified else "rejected",
            "attested": verdicts[pod].attested,
            "reason": verdicts[pod].message,
            "bundleHash": rec.bundle_hash,
            "platform": rec.platform,
        }
        for pod, rec in sorted(per_pod.items(), key=lambda kv: -kv[1].iat)[:MAX_LISTED]
    ]
    status: dict[str, Any] = {
        "observedGeneration": state.generation,
        "enforcementMode": (spec.enforcement_mode if spec else None)
        or ctx.settings.default_enforcement_mode,
        "bundleHash": state.bundle_hash,
        "shortBundleHash": state.bundle_hash.removeprefix("sha256:")[:12]
        if state.bundle_hash
        else None,
        "configMapName": state.config_map,
        "workloads": {"selected": selected, "injected": len(injected), "refused": len(refused)},
        "injectedWorkloads": injected[:100],
        "podsInjected": len(pods),
        "podsAttested": sum(1 for v in verdicts.values() if v.verified and v.attested),
        "podsVerified": sum(1 for v in verdicts.values() if v.verified),
        "decisions": decisions,
        "lastClaims": last,
        "shadow": shadow,
    }
    unattributed = [r for r in claims.of_gateway(state.namespace, state.name) if not r.readable]
    conds = _conditions(state, selected, injected, refused, conflicts, verdicts, unattributed)
    if shadow is not None:
        counts = (
            f"; {shadow['evaluated']} decisions compared in verified claims,"
            f" {shadow['disagreeing']} decided differently"
        )
        conds = [
            replace(c, message=c.message + counts) if c.type == "CandidateBundle" and c.ok else c
            for c in conds
        ]
    return status, conds


def shadow_status(records: Iterable[ClaimRecord], candidate: str) -> dict[str, Any]:
    """The candidate's shadow results summed over the newest claim of every session
    (claims shadowing another candidate do not count)."""
    evaluated = disagreeing = 0
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in records:
        sh = rec.shadow
        if rec.candidate_hash != candidate or sh.get("bundle_hash") != candidate:
            continue
        evaluated += int(sh.get("evaluated", 0))
        disagreeing += int(sh.get("disagreeing", 0))
        for d in sh.get("disagreements") or []:
            key = (str(d["tool"]), str(d["active"]), str(d["candidate"]))
            row = rows.setdefault(
                key,
                {
                    "tool": key[0],
                    "active": key[1],
                    "candidate": key[2],
                    "count": 0,
                    "auditRefs": [],
                },
            )
            row["count"] += int(d["count"])
            refs = [f"{rec.pod}:{ref}" for ref in d.get("audit_refs") or []]
            row["auditRefs"] = (row["auditRefs"] + refs)[:SHADOW_REFS]
    listed = sorted(rows.values(), key=lambda r: (-r["count"], r["tool"]))[:MAX_LISTED]
    return {
        "candidateHash": candidate,
        "evaluated": evaluated,
        "disagreeing": disagreeing,
        "disagreements": listed,
    }


def _conditions(
    state: GatewayState,
    selected: int,
    injected: list[str],
    refused: list[Any],
    conflicts: list[Any],
    verdicts: dict[str, Verdict],
    unreadable: list[Any],
) -> list[Cond]:
    conds: list[Cond] = []
    if state.blocked is not None:
        bundle = Cond("BundleReady", False, *state.blocked)
    else:
        bundle = Cond("BundleReady", True, "BundleVerified", f"bundle {state.bundle_hash} in force")
    conds.append(bundle)
    ok, reason, message = state.candidate
    if reason:
        conds.append(Cond("CandidateBundle", ok, reason, message))
    spec = state.spec
    if selected == 0:
        sel = Cond(
            "WorkloadsSelected",
            False,
            "NoMatchingWorkloads",
            f"no Deployment or StatefulSet in namespace {state.namespace} matches the selector"
            + (f"; {conflicts[0].message}" if conflicts else ""),
        )
    else:
        sel = Cond("WorkloadsSelected", True, "WorkloadsSelected", f"{selected} selected")
    conds.append(sel)
    if refused:
        inj = Cond("Injected", False, refused[0].reason, refused[0].message)
    elif state.blocked is not None and selected:
        inj = Cond("Injected", False, "Waiting", f"nothing injected: {state.blocked[1]}")
    elif selected and len(injected) < selected:
        inj = Cond("Injected", False, "InProgress", f"{len(injected)} of {selected} injected")
    else:
        inj = Cond(
            "Injected",
            bool(selected),
            "Injected" if selected else "NothingSelected",
            f"{len(injected)} of {selected} workloads injected",
        )
    conds.append(inj)
    conds.append(_claims_condition(verdicts, unreadable))
    ready_ok = bundle.ok is True and sel.ok is True and inj.ok is True and spec is not None
    first_bad = next((c for c in (bundle, sel, inj) if c.ok is not True), None)
    conds.append(
        Cond("Ready", True, "Ready", f"{len(injected)} workloads served")
        if ready_ok
        else Cond(
            "Ready",
            False,
            first_bad.reason if first_bad else "NotReady",
            first_bad.message if first_bad else "",
        )
    )
    return conds


def _claims_condition(verdicts: dict[str, Verdict], unreadable: list[Any]) -> Cond:
    if unreadable:
        rec = unreadable[0]
        return Cond(
            "ClaimsVerified", False, "ClaimUnreadable", f"ConfigMap {rec.name}: {rec.problem}"
        )
    bad = sorted((p, v) for p, v in verdicts.items() if not v.verified)
    if bad:
        _, v = bad[0]
        more = f" (and {len(bad) - 1} more pods)" if len(bad) > 1 else ""
        return Cond("ClaimsVerified", False, v.reason, v.message + more)
    if not verdicts:
        return Cond("ClaimsVerified", None, "NoClaimsYet", "no claims from injected pods yet")
    return Cond("ClaimsVerified", True, "Verified", f"{len(verdicts)} pods' newest claims verified")


async def _announce(ctx: Context, state: GatewayState, conds: list[Cond]) -> None:
    """An event for each condition whose reason changed since the last one posted."""
    for cond in conds:
        if cond.type == "Ready" or state.notified.get(cond.type) == cond.reason:
            continue
        first = cond.type not in state.notified
        state.notified[cond.type] = cond.reason
        if first and cond.ok is not False:
            continue
        if cond.ok is False:
            await ctx.events.warning(state.ref(), cond.reason, cond.message)
        else:
            await ctx.events.normal(state.ref(), cond.reason, cond.message)
