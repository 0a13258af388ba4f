"""Reconciling an McpPolicyBundle: read, validate, check the pin, render, report.

Conditions: ``Valid`` (the sidecar's loader accepts it; the message names file and line of
the first problem), ``HashMatches`` (its hash equals ``spec.expectedHash`` when set) and
``Ready`` (both, and the immutable ConfigMap named by the hash exists). A refused bundle
renders nothing; ConfigMaps rendered earlier stay, so workloads keep their bundle. A bundle
that a gateway still pins cannot be deleted (finalizer) until no gateway pins it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from . import api, bundles, kube, metrics
from .conditions import Cond, merge
from .gateways import bundle_path, ensure_finalizer, remove_finalizer
from .kube import ApiError
from .models import McpPolicyBundleSpec
from .state import BundleKey, Context, GatewayKey
from .workqueue import Requeue

log = logging.getLogger("cmcp.operator.bundles")
IN_USE_RECHECK = 5.0


def pinned_by(ctx: Context, namespace: str, bundle: str) -> list[tuple[str, str]]:
    """(gateway, hash) for every live gateway of the namespace naming this bundle."""
    out = []
    for gw in ctx.gateways_in(namespace):
        if gw.spec is None or gw.deleting:
            continue
        for ref in (gw.spec.bundle, gw.spec.candidate_bundle):
            if ref is not None and ref.name == bundle:
                out.append((gw.name, ref.hash))
    return sorted(out)


async def reconcile(ctx: Context, key: BundleKey) -> None:
    obj = await ctx.client.get(bundle_path(*key))
    if obj is None:
        _wake_gateways(ctx, key)
        return
    meta = obj["metadata"]
    users = pinned_by(ctx, key.namespace, key.name)
    if meta.get("deletionTimestamp"):
        await _deleting(ctx, obj, users)
        return
    await ensure_finalizer(ctx, bundle_path(*key), obj)
    try:
        spec = McpPolicyBundleSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        await _write_status(ctx, obj, _invalid_spec(str(exc).splitlines()[0]), users)
        return
    source, missing = await _source(ctx, key.namespace, spec)
    if source is None:
        metrics.BUNDLES.labels("source_missing").inc()
        result = _Result(
            conds=[
                Cond("Valid", False, "SourceNotFound", missing),
                Cond("HashMatches", None, "SourceNotFound", missing),
                Cond("Ready", False, "SourceNotFound", missing),
            ]
        )
        await _write_status(ctx, obj, result, users)
        return
    outcome = bundles.validate(source)
    result = _Result(outcome=outcome, files=sorted(source.files))
    valid = Cond("Valid", outcome.valid, outcome.reason, outcome.message)
    pin = _pin_condition(spec.expected_hash, outcome.hash)
    result.conds = [valid, pin]
    if outcome.valid and pin.ok is not False and outcome.hash is not None:
        rendered = bundles.render(
            key.name, key.namespace, _owner(obj), source, outcome.hash, outcome.catalog_hash
        )
        ready = await _ensure_rendered(ctx, rendered)
        if ready.ok:
            result.config_map = rendered["metadata"]["name"]
            await _gc(ctx, key, result.config_map, users)
        result.conds.append(ready)
        metrics.BUNDLES.labels("valid").inc()
    else:
        first = valid if not valid.ok else pin
        result.conds.append(Cond("Ready", False, first.reason, first.message))
        metrics.BUNDLES.labels("invalid" if not outcome.valid else "hash_mismatch").inc()
    await _write_status(ctx, obj, result, users)


class _Result:
    def __init__(
        self,
        conds: list[Cond] | None = None,
        outcome: bundles.Outcome | None = None,
        files: list[str] | None = None,
    ) -> None:
        self.conds = conds or []
        self.outcome = outcome
        self.files = files or []
        self.config_map: str | None = None


def _invalid_spec(message: str) -> _Result:
    return _Result(conds=[Cond(t, False, "InvalidSpec", message) for t in ("Valid", "Ready")])


def _pin_condition(expected: str | None, actual: str | None) -> Cond:
    if expected is None:
        return Cond(
            "HashMatches",
            True,
            "NotPinned",
            "spec.expectedHash is not set; gateways pin the hash they require",
        )
    if actual is None:
        return Cond("HashMatches", False, "NoHash", "the bundle is incomplete; no hash to compare")
    if actual != expected:
        return Cond(
            "HashMatches",
            False,
            "HashMismatch",
            f"content hashes to {actual}, spec.expectedHash pins {expected}; nothing rendered,"
            " workloads keep the bundle they have",
        )
    return Cond("HashMatches", True, "HashMatches", f"content matches the pin {expected}")


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.BUNDLE_KIND,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def _source(
    ctx: Context, namespace: str, spec: McpPolicyBundleSpec
) -> tuple[bundles.Source | None, str]:
    if spec.config_map_ref is None:
        return bundles.from_spec(spec), ""
    name = spec.config_map_ref.name
    cm = await ctx.client.get(kube.core("configmaps", namespace, name))
    if cm is None:
        return None, f"ConfigMap {name} (spec.configMapRef) does not exist"
    return bundles.from_configmap(cm), ""


async def _ensure_rendered(ctx: Context, cm: dict[str, Any]) -> Cond:
    ns, name = cm["metadata"]["namespace"], cm["metadata"]["name"]
    existing = await ctx.client.get(kube.core("configmaps", ns, name))
    if existing is None:
        try:
            await ctx.client.create(kube.core("configmaps", ns), cm)
        except ApiError as exc:
            if not exc.conflict:
                raise
            raise Requeue(0, "rendered ConfigMap appeared meanwhile") from None
    elif not bundles.rendered_matches(existing, cm):
        return Cond(
            "Ready",
            False,
            "RenderConflict",
            f"ConfigMap {name} exists with other content; delete it so the operator can"
            " render the bundle",
        )
    return Cond("Ready", True, "Rendered", f"rendered as immutable ConfigMap {name}")


async def _gc(ctx: Context, key: BundleKey, current: str, users: list[tuple[str, str]]) -> None:
    """Delete superseded rendered ConfigMaps no gateway pins, beyond the newest few."""
    pinned = {h for _, h in users}
    selector = (
        f"{api.LABEL_COMPONENT}={api.COMPONENT_BUNDLE},"
        f"{api.LABEL_BUNDLE}={api.bounded(key.name, 63)}"
    )
    items = await ctx.client.list(kube.core("configmaps", key.namespace), label_selector=selector)
    old = sorted(
        (
            c
            for c in items
            if c["metadata"]["name"] != current
            and (c["metadata"].get("annotations") or {}).get(api.ANN_BUNDLE_HASH) not in pinned
        ),
        key=lambda c: c["metadata"].get("creationTimestamp", ""),
        reverse=True,
    )
    for cm in old[ctx.settings.history :]:
        await ctx.client.delete(kube.core("configmaps", key.namespace, cm["metadata"]["name"]))


async def _write_status(
    ctx: Context, obj: dict[str, Any], result: _Result, users: list[tuple[str, str]]
) -> None:
    meta = obj["metadata"]
    old = obj.get("status") or {}
    outcome = result.outcome
    digest = outcome.hash if outcome else None
    status = {
        "observedGeneration": meta.get("generation"),
        "hash": digest,
        "shortHash": digest.removeprefix("sha256:")[:12] if digest else None,
        "catalogHash": outcome.catalog_hash if outcome else None,
        "configMapName": result.config_map,
        "files": result.files,
        "policyCount": outcome.policy_count if outcome else 0,
        "problems": outcome.problems if outcome else [],
        "usedBy": sorted({g for g, _ in users}),
        "conditions": merge(old.get("conditions") or [], result.conds, meta.get("generation")),
    }
    comparable = {k: v for k, v in status.items() if v is not None}
    if comparable == old:
        return
    if not await ctx.client.patch_status(bundle_path(meta["namespace"], meta["name"]), status):
        return
    await _announce(ctx, obj, old, result.conds)
    _wake_gateways(ctx, BundleKey(meta["namespace"], meta["name"]))


async def _announce(
    ctx: Context, obj: dict[str, Any], old: dict[str, Any], conds: list[Cond]
) -> None:
    before = {c.get("type"): c.get("reason") for c in old.get("conditions") or []}
    for cond in conds:
        if before.get(cond.type) == cond.reason:
            continue
        if cond.ok is False:
            await ctx.events.warning(obj, cond.reason, cond.message)
        elif cond.type == "Ready" and cond.ok:
            await ctx.events.normal(obj, cond.reason, cond.message)


def _wake_gateways(ctx: Context, key: BundleKey) -> None:
    for gw, _ in pinned_by(ctx, key.namespace, key.name):
        ctx.queue.add(GatewayKey(key.namespace, gw))


async def _deleting(ctx: Context, obj: dict[str, Any], users: list[tuple[str, str]]) -> None:
    meta = obj["metadata"]
    if users:
        names = ", ".join(g for g, _ in users)
        message = (
            f"deletion waits: pinned by McpGateway {names}; its workloads keep this bundle"
            " until the gateway is re-pinned or deleted"
        )
        conds = [Cond("Ready", False, "InUse", message)]
        old = obj.get("status") or {}
        current = {c.get("type"): c.get("reason") for c in old.get("conditions") or []}
        if current.get("Ready") != "InUse":
            kept = [c for c in old.get("conditions") or [] if c.get("type") != "Ready"]
            ready = merge(old.get("conditions") or [], conds, meta.get("generation"))
            path = bundle_path(meta["namespace"], meta["name"])
            await ctx.client.patch_status(path, {"conditions": kept + ready})
            await ctx.events.warning(obj, "InUse", message)
            _wake_gateways(ctx, BundleKey(meta["namespace"], meta["name"]))
        raise Requeue(IN_USE_RECHECK, "bundle in use")
    await remove_finalizer(ctx, bundle_path(meta["namespace"], meta["name"]), obj)
