"""Status conditions (``metav1.Condition``) and Kubernetes events.

:func:`merge` keeps a condition's ``lastTransitionTime`` while its status stays the same, so
an unchanged outcome writes an unchanged status (no status churn). :class:`Events` posts
``core/v1`` events on the objects the operator acts on; callers post on transitions only.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import kube
from .kube import ApiError, Kube

log = logging.getLogger("cmcp.operator.events")
MAX_MESSAGE = 1024


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Cond:
    """A condition as computed (no timestamps)."""

    type: str
    ok: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status(self) -> str:
        return "Unknown" if self.ok is None else ("True" if self.ok else "False")


def merge(
    previous: Iterable[Mapping[str, Any]], computed: Iterable[Cond], generation: int | None
) -> list[dict[str, Any]]:
    """The conditions to write: ``computed``, keeping transition times of unchanged ones."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    out = []
    for cond in computed:
        old = before.get(cond.type)
        changed = old is None or old.get("status") != cond.status
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message[:MAX_MESSAGE],
            "lastTransitionTime": now() if changed else old.get("lastTransitionTime", now()),  # type: ignore[union-attr]
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


class Events:
    """Posts events (best effort: a failure is logged, never raised)."""

    def __init__(self, client: Kube, component: str = "cmcp-operator") -> None:
        self.client = client
        self.component = component

    async def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        stamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'unknown')[:200]}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.create(kube.core("events", namespace), event)
        except ApiError as exc:
            log.warning("cannot post event %s on %s: %s", reason, meta.get("name"), exc)

    async def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        await self.post(obj, "Normal", reason, message)

    async def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        await self.post(obj, "Warning", reason, message)
