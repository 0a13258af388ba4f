"""Reconciling an McpGateway: bundle check, config ConfigMap, claims RBAC, finalizer.

The gateway's *plan* (what the sidecar looks like) exists only while its bundle is there,
valid and at the pinned hash; otherwise nothing is injected and already injected workloads
keep what they have (condition BundleReady says why). Workloads themselves are reconciled one
by one (:mod:`.workloads`); deleting the gateway strips them all before the finalizer goes.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pydantic import ValidationError

from . import api, kube, metrics
from .conditions import find
from .kube import ApiError
from .models import BundleRef, McpGatewaySpec
from .plan import build_plan
from .sidecar_config import config_map, render_config
from .state import WORKLOAD_KINDS, Context, GatewayKey, GatewayState, StatusKey
from .workloads import plan_digest, selects
from .workqueue import Requeue

log = logging.getLogger("cmcp.operator.gateways")


def gateway_path(namespace: str, name: str) -> str:
    return kube.group(api.API_VERSION, api.GATEWAY_PLURAL, namespace, name)


def bundle_path(namespace: str, name: str) -> str:
    return kube.group(api.API_VERSION, api.BUNDLE_PLURAL, namespace, name)


def claims_rbac_name(gateway: str) -> str:
    return f"cmcp-claims-{api.bounded(gateway, 63)}"


async def reconcile(ctx: Context, key: GatewayKey) -> None:
    obj = await ctx.client.get(gateway_path(*key))
    if obj is None:
        _forget(ctx, key)
        return
    state = ctx.gateways.setdefault(key, GatewayState(*key))
    meta = obj["metadata"]
    state.uid, state.generation = meta.get("uid", ""), int(meta.get("generation", 0))
    state.created = meta.get("creationTimestamp", "")
    if not state.conditions:
        state.conditions = list((obj.get("status") or {}).get("conditions") or [])
    try:
        spec = McpGatewaySpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        state.spec, state.plan, state.reconciled = None, None, True
        state.blocked = ("InvalidSpec", str(exc).splitlines()[0])
        ctx.queue.add(StatusKey(*key), ctx.settings.status_delay)
        return
    state.spec = spec
    if meta.get("deletionTimestamp"):
        await _finalize(ctx, state, obj)
        return
    await ensure_finalizer(ctx, gateway_path(*key), obj)
    await _list_workloads(ctx, key.namespace)
    await _plan(ctx, state, spec)
    state.reconciled = True
    for wl in list(ctx.workloads_in(key.namespace)):
        record = wl.record
        if selects(state, wl) or (record is not None and record.get("gateway") == state.name):
            ctx.queue.add(wl.key)
    accounts = frozenset(
        wl.service_account for wl in ctx.workloads_in(key.namespace) if selects(state, wl)
    )
    # Every reconcile (resyncs included): Roles are not watched, so one deleted or widened
    # behind our back is only found by looking.
    await _ensure_rbac(ctx, state, accounts)
    ctx.queue.add(StatusKey(*key), ctx.settings.status_delay)


async def _list_workloads(ctx: Context, namespace: str) -> None:
    """Cache every workload of a namespace the first time a gateway there is reconciled
    (afterwards watch events keep the cache current)."""
    if namespace in ctx.watched:
        return
    # Watched before listing: a workload event arriving while the lists are awaited must be
    # cached, not dropped as "not wanted" (which also evicted the workload just listed, so it
    # was never injected until its next change). remember() keeps the newer version.
    ctx.watched.add(namespace)
    try:
        for kind, plural in WORKLOAD_KINDS.items():
            for obj in await ctx.client.list(kube.apps(plural, namespace)):
                ctx.remember({**obj, "kind": kind})
    except BaseException:
        ctx.watched.discard(namespace)  # list again on the next reconcile
        raise


def _forget(ctx: Context, key: GatewayKey) -> None:
    """The gateway is gone (deleted without our finalizer): strip its workloads."""
    ctx.gateways.pop(key, None)
    with contextlib.suppress(KeyError):
        metrics.INJECTED_WORKLOADS.remove(*key)
    for wl in list(ctx.workloads_in(key.namespace)):
        record = wl.record
        if record is not None and record.get("gateway") == key.name:
            ctx.queue.add(wl.key)
    ctx.unwatch(key.namespace)


async def _plan(ctx: Context, state: GatewayState, spec: McpGatewaySpec) -> None:
    ok, reason, message, bundle = await bundle_readiness(ctx, state.namespace, spec.bundle)
    candidate = await _candidate(ctx, state, spec)
    if not ok or bundle is None:
        state.plan, state.bundle_hash, state.blocked = None, None, (reason, message)
        return
    status = bundle.get("status") or {}
    candidate_status = (candidate or {}).get("status") or {}
    candidate_cm = str(candidate_status["configMapName"]) if candidate is not None else None
    config = render_config(
        spec,
        has_catalog=bool(status.get("catalogHash")),
        default_mode=ctx.settings.default_enforcement_mode,
        has_candidate=candidate is not None,
        candidate_has_catalog=bool(candidate_status.get("catalogHash")),
    )
    cm = config_map(state.name, state.namespace, state.owner(), config)
    if not await _ensure_configmap(ctx, state, cm):
        return
    plan = build_plan(
        spec,
        state.name,
        bundle_cm=str(status["configMapName"]),
        config_cm=cm["metadata"]["name"],
        image=ctx.settings.sidecar_image,
        tee_labels=ctx.settings.tee_labels,
        candidate_cm=candidate_cm,
    )
    previous_config = state.config_map
    state.plan, state.plan_digest = plan, plan_digest(plan)
    state.bundle_hash, state.config_map, state.blocked = (
        spec.bundle.hash,
        cm["metadata"]["name"],
        None,
    )
    if previous_config != state.config_map:
        await gc_configmaps(ctx, state)


async def _candidate(
    ctx: Context, state: GatewayState, spec: McpGatewaySpec
) -> dict[str, Any] | None:
    """The candidate McpPolicyBundle when it is usable (its ConfigMap is then mounted for
    shadow evaluation); sets the CandidateBundle condition either way."""
    if spec.candidate_bundle is None:
        state.candidate = (None, "", "")
        return None
    ok, reason, message, bundle = await bundle_readiness(
        ctx, state.namespace, spec.candidate_bundle
    )
    if not ok or bundle is None:
        state.candidate = (False, "Candidate" + reason, f"{message}; not evaluated in shadow")
        return None
    state.candidate = (True, "ShadowEvaluating", f"candidate {message}; evaluated in shadow")
    return bundle


async def bundle_readiness(
    ctx: Context, namespace: str, ref: BundleRef
) -> tuple[bool, str, str, dict[str, Any] | None]:
    """(usable, reason, message, bundle object) for a bundle reference."""
    bundle = await ctx.client.get(bundle_path(namespace, ref.name))
    if bundle is None:
        return False, "BundleNotFound", f"McpPolicyBundle {ref.name} does not exist", None
    meta, status = bundle["metadata"], bundle.get("status") or {}
    if meta.get("deletionTimestamp"):
        return (
            False,
            "BundleDeleting",
            f"McpPolicyBundle {ref.name} is being deleted; it is kept while this gateway pins"
            " it, and injected workloads keep their bundle; re-pin the gateway or recreate"
            " the bundle",
            bundle,
        )
    if status.get("observedGeneration") != meta.get("generation"):
        return False, "BundlePending", f"McpPolicyBundle {ref.name} is not validated yet", bundle
    if status.get("hash") != ref.hash:
        return (
            False,
            "HashMismatch",
            f"the gateway pins {ref.hash} but McpPolicyBundle {ref.name} has"
            f" {status.get('hash') or 'no valid hash'}",
            bundle,
        )
    ready = find(status.get("conditions"), "Ready")
    if ready is None or ready.get("status") != "True" or not status.get("configMapName"):
        why = (ready or {}).get("message") or "not ready"
        return (
            False,
            f"Bundle{(ready or {}).get('reason') or 'NotReady'}",
            f"McpPolicyBundle {ref.name}: {why}",
            bundle,
        )
    return (
        True,
        "BundleVerified",
        f"McpPolicyBundle {ref.name} at {ref.hash} is valid, rendered as ConfigMap"
        f" {status['configMapName']}",
        bundle,
    )


async def _ensure_configmap(ctx: Context, state: GatewayState, cm: dict[str, Any]) -> bool:
    """Create the config ConfigMap unless it exists (same name = same content)."""
    name = cm["metadata"]["name"]
    # Its DELETED event is missed when it goes while no watch is open: look.
    path = kube.core("configmaps", state.namespace, name)
    if state.config_map == name and await ctx.client.get(path) is not None:
        return True
    try:
        await ctx.client.create(kube.core("configmaps", state.namespace), cm)
        return True
    except ApiError as exc:
        if not exc.conflict:
            raise
    existing = await ctx.client.get(kube.core("configmaps", state.namespace, name))
    if existing is None:
        raise Requeue(0.5, "config ConfigMap vanished")
    if existing.get("data") == cm["data"]:
        return True
    state.plan, state.bundle_hash = None, None
    state.blocked = (
        "ConfigMapConflict",
        f"ConfigMap {name} exists with other content; delete it (the operator names its"
        " config ConfigMaps by their content hash)",
    )
    return False


async def gc_configmaps(ctx: Context, state: GatewayState) -> None:
    """Delete superseded config ConfigMaps beyond the newest ``history``."""
    selector = f"{api.LABEL_COMPONENT}={api.COMPONENT_CONFIG},{api.LABEL_GATEWAY}={state.name}"
    items = await ctx.client.list(kube.core("configmaps", state.namespace), label_selector=selector)
    old = sorted(
        (c for c in items if c["metadata"]["name"] != state.config_map),
        key=lambda c: c["metadata"].get("creationTimestamp", ""),
        reverse=True,
    )
    for cm in old[ctx.settings.history :]:
        await ctx.client.delete(kube.core("configmaps", state.namespace, cm["metadata"]["name"]))


async def _ensure_rbac(ctx: Context, state: GatewayState, accounts: frozenset[str]) -> None:
    """A Role allowing only ``create`` on ConfigMaps (claims), bound to the service accounts
    of the selected workloads; both owned by the gateway."""
    name = claims_rbac_name(state.name)
    meta = {
        "name": name,
        "namespace": state.namespace,
        "labels": {api.LABEL_GATEWAY: state.name, api.LABEL_MANAGED_BY: api.MANAGED_BY},
        "ownerReferences": [state.owner()],
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": sa, "namespace": state.namespace}
            for sa in sorted(accounts)
        ],
    }
    rbac = "rbac.authorization.k8s.io/v1"
    for obj, plural, field in ((role, "roles", "rules"), (binding, "rolebindings", "subjects")):
        path = kube.group(rbac, plural, state.namespace, name)
        current = await ctx.client.get(path)
        if current is None:
            await ctx.client.create(kube.group(rbac, plural, state.namespace), obj)
        elif "roleRef" in obj and current.get("roleRef") != obj["roleRef"]:
            await _replace_binding(ctx, state, current, obj)
        elif (current.get(field) or []) != obj[field]:
            await ctx.client.merge_patch(path, {field: obj[field]})
    state.service_accounts = accounts


async def _replace_binding(
    ctx: Context, state: GatewayState, current: dict[str, Any], binding: dict[str, Any]
) -> None:
    """A RoleBinding's ``roleRef`` cannot be changed: delete the one pointing elsewhere
    (only the version looked at) and create ours again."""
    meta = current["metadata"]
    rbac = "rbac.authorization.k8s.io/v1"
    path = kube.group(rbac, "rolebindings", state.namespace, meta["name"])
    found = current.get("roleRef") or {}
    if meta.get("deletionTimestamp"):  # held by someone's finalizer: wait, do not spin
        raise Requeue(5, f"RoleBinding {meta['name']} is being deleted")
    try:
        await ctx.client.delete(
            path, preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        )
        await ctx.client.create(kube.group(rbac, "rolebindings", state.namespace), binding)
    except ApiError as exc:
        if exc.conflict:  # changed under us, or its deletion is not finished yet: look again
            raise Requeue(1, f"RoleBinding {meta['name']} changed while being replaced") from None
        raise
    message = (
        f"RoleBinding {meta['name']} pointed at {found.get('kind')} {found.get('name')}"
        f" instead of Role {binding['roleRef']['name']}; roleRef cannot be changed, so it was"
        " deleted and created again"
    )
    log.warning("McpGateway %s/%s: %s", state.namespace, state.name, message)
    await ctx.events.warning(state.ref(), "ClaimsRoleBindingReplaced", message)


async def _finalize(ctx: Context, state: GatewayState, obj: dict[str, Any]) -> None:
    """Strip every workload this gateway injected, then let it go."""
    state.deleting, state.plan = True, None
    remaining = [
        wl
        for wl in ctx.workloads_in(state.namespace)
        if (wl.record or {}).get("gateway") == state.name
    ]
    for wl in remaining:
        ctx.queue.add(wl.key)
    if remaining:
        raise Requeue(0.5, f"{len(remaining)} workloads still carry the sidecar")
    await remove_finalizer(ctx, gateway_path(state.namespace, state.name), obj)
    ctx.gateways.pop(state.key, None)
    ctx.unwatch(state.namespace)
    log.info("McpGateway %s/%s: removed from every workload", state.namespace, state.name)


async def ensure_finalizer(ctx: Context, path: str, obj: dict[str, Any]) -> None:
    finalizers = list(obj["metadata"].get("finalizers") or [])
    if api.FINALIZER in finalizers:
        return
    rv = obj["metadata"]["resourceVersion"]
    ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": rv}]
    if finalizers:
        ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": api.FINALIZER})
    else:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": [api.FINALIZER]})
    await _patch_or_requeue(ctx, path, ops)


async def remove_finalizer(ctx: Context, path: str, obj: dict[str, Any]) -> None:
    finalizers = list(obj["metadata"].get("finalizers") or [])
    if api.FINALIZER not in finalizers:
        return
    rv = obj["metadata"]["resourceVersion"]
    ops = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": f"/metadata/finalizers/{finalizers.index(api.FINALIZER)}"},
    ]
    await _patch_or_requeue(ctx, path, ops)


async def _patch_or_requeue(ctx: Context, path: str, ops: list[dict[str, Any]]) -> None:
    try:
        await ctx.client.json_patch(path, ops)
    except ApiError as exc:
        if exc.conflict:
            raise Requeue(0, "stale object") from None
        if not exc.not_found:
            raise
