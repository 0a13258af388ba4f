"""What the operator keeps in memory: settings, work keys, the workload cache, gateway states.

The caches are filled from watch events (kopf) and from the operator's own write replies;
every reconcile reads them and re-checks against the API server on conflicts. Losing them
(a restart) costs only a re-list: nothing here is the source of truth.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import api
from .conditions import Events
from .inject import Plan, decode_record
from .kube import Kube
from .models import McpGatewaySpec
from .placement import DEFAULT_TEE_LABELS, TeeLabels
from .workqueue import WorkQueue

WORKLOAD_KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings (command-line options)."""

    sidecar_image: str = "ghcr.io/confidential-mcp/cmcp-sidecar:0.1.0"
    tee_labels: TeeLabels = field(default_factory=lambda: dict(DEFAULT_TEE_LABELS))
    workers: int = 8
    status_delay: float = 1.0  # debounce of status writes
    resync_seconds: float = 300.0  # periodic re-reconcile of every gateway and bundle
    history: int = 3  # superseded rendered ConfigMaps kept per bundle / gateway


class GatewayKey(NamedTuple):
    namespace: str
    name: str


class BundleKey(NamedTuple):
    namespace: str
    name: str


class WorkloadKey(NamedTuple):
    namespace: str
    kind: str
    name: str


class StatusKey(NamedTuple):
    namespace: str
    name: str


@dataclass
class Workload:
    """The parts of a Deployment/StatefulSet the operator needs."""

    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: dict[str, str]
    record_text: str | None
    template: dict[str, Any]
    has_annotations: bool = False

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Workload:
        meta = obj.get("metadata") or {}
        return cls(
            kind=str(obj.get("kind")),
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            labels=dict(meta.get("labels") or {}),
            record_text=(meta.get("annotations") or {}).get(api.ANN_INJECTION),
            template=dict((obj.get("spec") or {}).get("template") or {}),
            has_annotations=isinstance(meta.get("annotations"), dict),
        )

    @property
    def key(self) -> WorkloadKey:
        return WorkloadKey(self.namespace, self.kind, self.name)

    @property
    def record(self) -> dict[str, Any] | None:
        return decode_record(self.record_text)

    @property
    def opted_out(self) -> bool:
        return self.labels.get(api.LABEL_INJECT) == "false"

    @property
    def service_account(self) -> str:
        spec = self.template.get("spec") or {}
        return str(spec.get("serviceAccountName") or "default")

    def ref(self) -> dict[str, Any]:
        """Enough of the object to post an event on it."""
        return {
            "apiVersion": "apps/v1",
            "kind": self.kind,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


def newer(a: str, b: str) -> bool:
    """Is resourceVersion ``a`` at least as new as ``b``? (numeric in practice)"""
    try:
        return int(a) >= int(b)
    except ValueError:
        return True


@dataclass
class Outcome:
    """What happened to one workload in its last reconcile."""

    state: str  # injected | refused | waiting | excluded | conflict
    reason: str = ""
    message: str = ""


@dataclass
class GatewayState:
    """One McpGateway as last reconciled."""

    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    created: str = ""
    spec: McpGatewaySpec | None = None
    deleting: bool = False
    reconciled: bool = False  # False until the first reconcile finished
    plan: Plan | None = None
    plan_digest: str = ""
    bundle_hash: str | None = None
    config_map: str | None = None
    blocked: tuple[str, str] | None = None  # (reason, message) why nothing is injected
    candidate: tuple[bool | None, str, str] = (None, "", "")  # CandidateBundle condition
    outcomes: dict[WorkloadKey, Outcome] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)  # as last written
    status_written: dict[str, Any] | None = None
    service_accounts: frozenset[str] = frozenset()
    notified: dict[str, str] = field(default_factory=dict)  # condition → reason last evented

    @property
    def key(self) -> GatewayKey:
        return GatewayKey(self.namespace, self.name)

    def ref(self) -> dict[str, Any]:
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.GATEWAY_KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    def owner(self) -> dict[str, Any]:
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.GATEWAY_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass
class Context:
    """Everything a reconcile needs."""

    client: Kube
    settings: Settings
    events: Events
    queue: WorkQueue
    workloads: dict[WorkloadKey, Workload] = field(default_factory=dict)
    gateways: dict[GatewayKey, GatewayState] = field(default_factory=dict)
    # Namespaces whose workloads are all cached (those with gateways); elsewhere only
    # injected workloads are kept, so memory follows what the operator serves.
    watched: set[str] = field(default_factory=set)

    def gateways_in(self, namespace: str) -> list[GatewayState]:
        return [g for k, g in self.gateways.items() if k.namespace == namespace]

    def workloads_in(self, namespace: str) -> Iterator[Workload]:
        return (w for k, w in self.workloads.items() if k.namespace == namespace)

    def wants(self, namespace: str, record_text: str | None) -> bool:
        """Should a workload event of this namespace be cached?"""
        return namespace in self.watched or record_text is not None

    def unwatch(self, namespace: str) -> None:
        """The namespace's last gateway is gone: keep only injected workloads."""
        if any(k.namespace == namespace for k in self.gateways):
            return
        self.watched.discard(namespace)
        for key in [k for k, w in self.workloads.items() if k.namespace == namespace]:
            if self.workloads[key].record_text is None:
                del self.workloads[key]

    def remember(self, obj: Mapping[str, Any]) -> Workload:
        """Cache a workload object unless an equal or newer version is cached."""
        wl = Workload.from_object(obj)
        cur = self.workloads.get(wl.key)
        if cur is None or cur.uid != wl.uid or newer(wl.resource_version, cur.resource_version):
            self.workloads[wl.key] = wl
            return wl
        return cur
