"""Reconciling one Deployment or StatefulSet: inject, update, repair or remove the sidecar.

The desired template is ``inject(strip(current, record), plan)`` of the gateway that owns the
workload, or ``strip(current, record)`` when none does (opt-out, no longer selected, gateway
deleted). The patch is a JSON patch replacing ``spec.template`` and the injection annotation,
with ``metadata.resourceVersion`` as a precondition, sent only when the result differs from
what is stored; a stale cache gives 409 Conflict, a fresh read and another try.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from . import api, kube, metrics
from .inject import InjectionRefused, Plan, encode_record, inject, same_template, strip
from .kube import ApiError
from .selectors import matches
from .state import (
    WORKLOAD_KINDS,
    Context,
    GatewayKey,
    GatewayState,
    Outcome,
    StatusKey,
    Workload,
    WorkloadKey,
)
from .workqueue import Requeue

log = logging.getLogger("cmcp.operator.workloads")


def plan_digest(plan: Plan) -> str:
    blob = json.dumps(plan.__dict__, sort_keys=True, default=list).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def selects(gw: GatewayState, wl: Workload) -> bool:
    return (
        gw.spec is not None
        and not gw.deleting
        and not wl.opted_out
        and matches(gw.spec.selector, wl.labels)
    )


def owner_of(ctx: Context, wl: Workload, record: dict[str, Any] | None) -> GatewayState | None:
    """The gateway that should have this workload: its current one while that still selects
    it, else the oldest selecting gateway of the namespace."""
    if record is not None:
        cur = ctx.gateways.get(GatewayKey(wl.namespace, str(record.get("gateway"))))
        if cur is not None and selects(cur, wl):
            return cur
    candidates = sorted(
        (g for g in ctx.gateways_in(wl.namespace) if selects(g, wl)),
        key=lambda g: (g.created, g.name),
    )
    return candidates[0] if candidates else None


async def reconcile(ctx: Context, key: WorkloadKey) -> None:
    wl = ctx.workloads.get(key)
    if wl is None:
        return
    record = wl.record
    if record is not None:
        recorded = GatewayKey(wl.namespace, str(record.get("gateway")))
        if recorded not in ctx.gateways and await _gateway_exists(ctx, recorded):
            ctx.queue.add(recorded)  # not loaded yet: the gateway's reconcile comes back here
            return
        recorded_state = ctx.gateways.get(recorded)
        if recorded_state is not None and not recorded_state.reconciled:
            return
    owner = owner_of(ctx, wl, record)
    _note_conflicts(ctx, wl, owner)
    if owner is not None and not owner.reconciled:
        return
    base = strip(wl.template, record) if record is not None else wl.template
    if owner is None:
        if record is not None:
            await _write(ctx, wl, base, None, "remove")
        return
    if owner.plan is None:
        # Bundle missing or not matching its pin: leave the workload as it is.
        owner.outcomes[key] = Outcome("waiting", *(owner.blocked or ("", "")))
        return
    try:
        desired, new_record = inject(base, owner.plan)
    except InjectionRefused as refused:
        await _refuse(ctx, wl, owner, refused, record, base)
        return
    new_record["plan"] = owner.plan_digest
    if (record is not None and str(record.get("gateway")) != owner.name) or record is None:
        action = "inject"
    elif record.get("plan") == owner.plan_digest:
        action = "repair"
    else:
        action = "update"
    owner.outcomes[key] = Outcome("injected")
    if not same_template(wl.template, desired) or wl.record_text != encode_record(new_record):
        await _write(ctx, wl, desired, new_record, action, owner)
    if wl.service_account not in owner.service_accounts:
        ctx.queue.add(owner.key)  # the claims RoleBinding needs this service account


def _note_conflicts(ctx: Context, wl: Workload, owner: GatewayState | None) -> None:
    for gw in ctx.gateways_in(wl.namespace):
        if gw is owner:
            continue
        if selects(gw, wl) and owner is not None:
            gw.outcomes[wl.key] = Outcome(
                "conflict",
                "SelectedByOtherGateway",
                f"{wl.kind}/{wl.name} is already served by McpGateway {owner.name}",
            )
        else:
            gw.outcomes.pop(wl.key, None)


async def _gateway_exists(ctx: Context, key: GatewayKey) -> bool:
    path = kube.group(api.API_VERSION, api.GATEWAY_PLURAL, key.namespace, key.name)
    return await ctx.client.get(path) is not None


async def _refuse(
    ctx: Context,
    wl: Workload,
    owner: GatewayState,
    refused: InjectionRefused,
    record: dict[str, Any] | None,
    base: dict[str, Any],
) -> None:
    previous = owner.outcomes.get(wl.key)
    owner.outcomes[wl.key] = Outcome("refused", refused.reason, refused.message)
    if record is not None:
        await _write(ctx, wl, base, None, "remove")
    if previous is None or previous.reason != refused.reason:
        await ctx.events.warning(
            wl.ref(), "InjectionRefused", f"McpGateway {owner.name}: {refused.message}"
        )
        ctx.queue.add(StatusKey(owner.namespace, owner.name), ctx.settings.status_delay)


async def _write(
    ctx: Context,
    wl: Workload,
    template: dict[str, Any],
    record: dict[str, Any] | None,
    action: str,
    owner: GatewayState | None = None,
) -> None:
    path = kube.apps(WORKLOAD_KINDS[wl.kind], wl.namespace, wl.name)
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": wl.resource_version},
        {"op": "replace", "path": "/spec/template", "value": template},
    ]
    ann = "/metadata/annotations/" + api.ANN_INJECTION.replace("~", "~0").replace("/", "~1")
    if record is not None:
        value = encode_record(record)
        if wl.has_annotations:
            ops.append({"op": "add", "path": ann, "value": value})
        else:  # "add" to /metadata/annotations/x fails when the map itself is missing
            ops.append(
                {"op": "add", "path": "/metadata/annotations", "value": {api.ANN_INJECTION: value}}
            )
    elif wl.record_text is not None:
        ops.append({"op": "remove", "path": ann})
    try:
        obj = await ctx.client.json_patch(path, ops)
    except ApiError as exc:
        if exc.conflict:
            fresh = await ctx.client.get(path)
            if fresh is None:
                ctx.workloads.pop(wl.key, None)
                return
            ctx.workloads[wl.key] = Workload.from_object(fresh)
            raise Requeue(0, "stale workload") from None
        if exc.not_found:
            ctx.workloads.pop(wl.key, None)
            return
        raise
    ctx.remember(obj)
    metrics.WORKLOAD_PATCHES.labels(action).inc()
    gateway = owner.name if owner is not None else str((wl.record or {}).get("gateway", "?"))
    messages = {
        "inject": f"sidecar {api.SIDECAR_NAME} injected by McpGateway {gateway}",
        "update": f"sidecar updated to McpGateway {gateway}'s current configuration",
        "repair": f"injected parts restored (they had been changed); McpGateway {gateway}",
        "remove": f"sidecar and everything McpGateway {gateway} added removed",
    }
    reason = {
        "inject": "Injected",
        "update": "InjectionUpdated",
        "repair": "InjectionRepaired",
        "remove": "InjectionRemoved",
    }[action]
    await ctx.events.normal(wl.ref(), reason, messages[action])
    log.info("%s %s/%s/%s (%s)", reason, wl.namespace, wl.kind, wl.name, gateway)
    if owner is not None:
        ctx.queue.add(StatusKey(owner.namespace, owner.name), ctx.settings.status_delay)
