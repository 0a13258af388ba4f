"""Wiring: kopf watches feed a work queue; the queue runs the reconcilers.

kopf provides the watches (list + watch with reconnects and server-side label selectors for
ConfigMaps) and login; its own progress storage, finalizers and
peering are not used (every handler here is a raw event handler, so kopf writes nothing to
the objects). The operator's writes go through :class:`~cmcp_operator.kube.Kube`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from . import api, bundle_controller, gateways, metrics, status, workloads
from .claims import ClaimBook
from .conditions import Events
from .kube import Credentials, Kube
from .state import (
    WORKLOAD_KINDS,
    BundleKey,
    Context,
    GatewayKey,
    Settings,
    StatusKey,
    WorkloadKey,
)
from .workqueue import WorkQueue

log = logging.getLogger("cmcp.operator")


@dataclass
class Runtime:
    """The operator's moving parts, created inside the event loop."""

    ctx: Context
    claims: ClaimBook
    bundles: set[BundleKey]

    async def dispatch(self, key: Any) -> None:
        kind = type(key).__name__.removesuffix("Key").lower()
        started = time.perf_counter()
        try:
            if isinstance(key, WorkloadKey):
                await workloads.reconcile(self.ctx, key)
            elif isinstance(key, GatewayKey):
                await gateways.reconcile(self.ctx, key)
            elif isinstance(key, BundleKey):
                await bundle_controller.reconcile(self.ctx, key)
            elif isinstance(key, StatusKey):
                await status.write(self.ctx, self.claims, key)
        except Exception:
            metrics.RECONCILES.labels(kind, "error").inc()
            raise
        metrics.RECONCILES.labels(kind, "ok").inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)

    async def resync(self) -> None:
        """Periodically re-reconcile everything (safety net for missed events)."""
        while True:
            await asyncio.sleep(self.ctx.settings.resync_seconds)
            for gw in list(self.ctx.gateways):
                self.ctx.queue.add(gw)
            for bundle in list(self.bundles):
                self.ctx.queue.add(bundle)

    # -- watch events ------------------------------------------------------------------------

    def on_gateway(self, event: Mapping[str, Any]) -> None:
        meta = event["object"]["metadata"]
        key = GatewayKey(meta["namespace"], meta["name"])
        state = self.ctx.gateways.get(key)
        if (
            event.get("type") == "MODIFIED"
            and state is not None
            and state.reconciled
            and state.generation == meta.get("generation")
            and not meta.get("deletionTimestamp")
            and api.FINALIZER in (meta.get("finalizers") or [])
        ):
            return  # our own status or finalizer write: nothing the reconcile reads changed
        self.ctx.queue.add(key)

    def on_bundle(self, event: Mapping[str, Any]) -> None:
        meta = event["object"]["metadata"]
        key = BundleKey(meta["namespace"], meta["name"])
        if event.get("type") == "DELETED":
            self.bundles.discard(key)
        else:
            self.bundles.add(key)
        self.ctx.queue.add(key)

    def on_workload(self, kind: str, event: Mapping[str, Any]) -> None:
        obj = {**event["object"], "kind": kind}
        meta = obj["metadata"]
        key = WorkloadKey(meta["namespace"], kind, meta["name"])
        if event.get("type") == "DELETED":
            self.ctx.workloads.pop(key, None)
            for gw in self.ctx.gateways_in(key.namespace):
                if gw.outcomes.pop(key, None) is not None:
                    self.ctx.queue.add(StatusKey(*gw.key), self.ctx.settings.status_delay)
            return
        record = (meta.get("annotations") or {}).get(api.ANN_INJECTION)
        if not self.ctx.wants(key.namespace, record):
            self.ctx.workloads.pop(key, None)
            return
        self.ctx.remember(obj)
        self.ctx.queue.add(key)

    async def on_configmap(self, event: Mapping[str, Any]) -> None:
        cm = event["object"]
        meta = cm["metadata"]
        component = (meta.get("labels") or {}).get(api.LABEL_COMPONENT)
        deleted = event.get("type") == "DELETED"
        if component == api.COMPONENT_CLAIM:
            await self._on_claim(cm, deleted)
            return
        if component == "bundle-source":
            for bundle in list(self.bundles):
                if bundle.namespace == meta["namespace"]:
                    self.ctx.queue.add(bundle)
            return
        if not deleted:
            return
        # A rendered ConfigMap deleted behind our back: its owner renders it again.
        for owner in meta.get("ownerReferences") or []:
            if owner.get("kind") == api.BUNDLE_KIND:
                self.ctx.queue.add(BundleKey(meta["namespace"], owner["name"]))
            elif owner.get("kind") == api.GATEWAY_KIND:
                key = GatewayKey(meta["namespace"], owner["name"])
                state = self.ctx.gateways.get(key)
                if state is not None and state.config_map == meta["name"]:
                    state.config_map = None  # forces a re-create
                self.ctx.queue.add(key)

    async def _on_claim(self, cm: Mapping[str, Any], deleted: bool) -> None:
        meta = cm["metadata"]
        if deleted:
            where = self.claims.forget(meta["namespace"], meta["name"])
        else:
            record = self.claims.observe(cm)
            where = (record.namespace, record.gateway)
            result = (
                "unreadable"
                if not record.readable
                else ("verified" if record.crypto_ok else "rejected")
            )
            metrics.CLAIMS.labels(result).inc()
            if not record.readable:
                await self.ctx.events.warning(
                    dict(cm), "ClaimUnreadable", f"not a readable claim: {record.problem}"
                )
            elif not record.crypto_ok:
                await self.ctx.events.warning(dict(cm), "ClaimRejected", record.problem)
            if record.gateway and GatewayKey(*where) not in self.ctx.gateways:
                metrics.CLAIMS.labels("orphaned").inc()
        if where is not None:
            self.ctx.queue.add(StatusKey(*where), self.ctx.settings.status_delay)


def build(settings: Settings, creds: Credentials) -> Runtime:
    client = Kube(creds, limit=max(8, settings.workers * 2))
    holder: dict[str, Runtime] = {}

    async def dispatch(key: Any) -> None:
        await holder["rt"].dispatch(key)

    queue = WorkQueue(dispatch, workers=settings.workers)
    ctx = Context(client=client, settings=settings, events=Events(client), queue=queue)
    rt = Runtime(ctx=ctx, claims=ClaimBook(), bundles=set())
    holder["rt"] = rt
    return rt


def registry(
    settings: Settings, creds: Credentials, stop: asyncio.Event | None = None
) -> kopf.OperatorRegistry:
    """The kopf registry with every handler of the operator (``stop``: the operator's stop
    flag, set again at cleanup)."""
    reg = kopf.OperatorRegistry()
    box: dict[str, Any] = {}

    @kopf.on.startup(registry=reg)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.scanning.disabled = True
        settings.peering.standalone = True
        settings.posting.level = logging.WARNING
        settings.watching.label_selectors["configmaps"] = api.LABEL_COMPONENT
        settings.watching.server_timeout = 270
        settings.watching.client_timeout = 300
        settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13)
        settings.batching.exit_timeout = 0.5  # our handlers only enqueue: nothing to wait for
        rt = build(box["settings"], creds)
        box["rt"] = rt
        rt.ctx.queue.start()
        box["resync"] = asyncio.create_task(rt.resync(), name="cmcp-resync")

    @kopf.on.cleanup(registry=reg)
    async def cleanup(**_: Any) -> None:
        rt: Runtime | None = box.get("rt")
        if rt is None:
            if stop is not None:
                stop.set()
            return
        box["resync"].cancel()
        await rt.ctx.queue.stop()
        await rt.ctx.client.close()
        if stop is not None:
            stop.set()  # kopf stopped on its own signal: release its waiter on our flag now

    @kopf.on.login(registry=reg)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=creds.server,
            ca_path=creds.ca_file,
            insecure=not creds.verify,
            scheme="Bearer" if creds.token() else None,
            token=creds.token(),
            certificate_path=creds.cert_file,
            private_key_path=creds.key_file,
        )

    @kopf.on.event(api.GROUP, api.VERSION, api.GATEWAY_PLURAL, registry=reg)
    def gateway_event(event: Mapping[str, Any], **_: Any) -> None:
        box["rt"].on_gateway(event)

    @kopf.on.event(api.GROUP, api.VERSION, api.BUNDLE_PLURAL, registry=reg)
    def bundle_event(event: Mapping[str, Any], **_: Any) -> None:
        box["rt"].on_bundle(event)

    for kind, plural in WORKLOAD_KINDS.items():

        @kopf.on.event("apps", "v1", plural, id=f"workload-{plural}", param=kind, registry=reg)
        def workload_event(event: Any, param: Any = None, **_: Any) -> None:
            box["rt"].on_workload(param, event)

    @kopf.on.event("", "v1", "configmaps", registry=reg)
    async def configmap_event(event: Mapping[str, Any], **_: Any) -> None:
        await box["rt"].on_configmap(event)

    box["settings"] = settings
    return reg
