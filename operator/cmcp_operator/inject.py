"""Admission-free injection: what the operator adds to a pod template, and how it is removed.

:func:`inject` takes a workload's own pod template (no injection in it) and a :class:`Plan`
and returns the injected template plus a *record* of exactly what was added or replaced;
:func:`strip` uses that record to give back the original template. The record is kept as JSON
in the workload's ``cmcp.dev/injection`` annotation, so the operator can always recompute
``inject(strip(current))`` and patch only when it differs from what is there: unchanged inputs
give a byte-identical template (no rollout), an edited sidecar is restored, the user's own
edits to the rest of the template are kept, and removal leaves the template as it was.

Everything we add is fully specified, including the values the API server would default, so
the stored template compares equal to ours.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from . import api
from .placement import combine_terms

RECORD_VERSION = 1
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


class InjectionRefused(Exception):
    """This workload cannot be injected; ``reason`` is a condition/event reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Plan:
    """Everything one McpGateway adds to a pod template."""

    gateway: str
    sidecar: dict[str, Any]
    volumes: list[dict[str, Any]]
    endpoint_env: str
    endpoint_url: str
    containers: tuple[str, ...] = ()  # agent containers that get the endpoint; () = all
    node_terms: list[dict[str, Any]] = field(default_factory=list)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    runtime_class: str | None = None


# -- injecting ---------------------------------------------------------------------------------


def inject(template: Mapping[str, Any], plan: Plan) -> tuple[dict[str, Any], dict[str, Any]]:
    """The injected copy of an un-injected ``template`` and the record of what changed."""
    tpl = copy.deepcopy(dict(template))
    spec = tpl.setdefault("spec", {})
    _check_clashes(spec)
    _check_isolation(spec)
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "gateway": plan.gateway,
        "sidecar": api.SIDECAR_NAME,
        "volumes": [v["name"] for v in plan.volumes],
        "envName": plan.endpoint_env,
        "env": {},
        "tolerations": [],
        "restore": [],
    }
    spec["initContainers"] = [copy.deepcopy(plan.sidecar), *(spec.get("initContainers") or [])]
    spec["volumes"] = [*(spec.get("volumes") or []), *copy.deepcopy(plan.volumes)]
    _inject_env(spec, plan, record)
    _set(tpl, ["metadata", "labels", api.LABEL_GATEWAY], plan.gateway, record)
    _set(tpl, ["spec", "automountServiceAccountToken"], False, record)
    if plan.runtime_class is not None:
        _set(tpl, ["spec", "runtimeClassName"], plan.runtime_class, record)
    if plan.node_terms:
        path = ["spec", "affinity", "nodeAffinity", _REQUIRED]
        existing = (_get(tpl, path) or {}).get("nodeSelectorTerms") or []
        terms = combine_terms(existing, plan.node_terms)
        required = {**(_get(tpl, path) or {}), "nodeSelectorTerms": terms}
        _set(tpl, path, required, record)
    tolerations = list(spec.get("tolerations") or [])
    for tol in plan.tolerations:
        if tol not in tolerations:
            tolerations.append(copy.deepcopy(tol))
            record["tolerations"].append(tol)
    if record["tolerations"]:
        _set(tpl, ["spec", "tolerations"], tolerations, record, remember_value=False)
    return tpl, record


def _check_clashes(spec: Mapping[str, Any]) -> None:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    for c in containers:
        if c.get("name") == api.SIDECAR_NAME:
            raise InjectionRefused(
                "ContainerNameClash",
                f"the pod template already has a container named {api.SIDECAR_NAME!r} that the"
                " operator did not add; rename it or opt the workload out"
                f" ({api.LABEL_INJECT}=false)",
            )
        for mount in c.get("volumeMounts") or []:
            if mount.get("name") in api.OUR_VOLUMES:
                raise InjectionRefused(
                    "VolumeNameClash",
                    f"container {c.get('name')!r} mounts a volume named {mount['name']!r},"
                    " a name the sidecar uses; the sidecar's volumes are only for the sidecar",
                )
    for vol in spec.get("volumes") or []:
        if vol.get("name") in api.OUR_VOLUMES:
            raise InjectionRefused(
                "VolumeNameClash",
                f"the pod template already has a volume named {vol['name']!r}, which the"
                " sidecar uses",
            )


def _check_isolation(spec: Mapping[str, Any]) -> None:
    """The agent must not reach into the sidecar: with a shared process namespace its
    containers can read the sidecar's memory and files through ``/proc/<pid>/root`` and
    ``/proc/<pid>/mem`` (signing key, API token, audit log)."""
    for key in ("shareProcessNamespace", "hostPID"):
        if spec.get(key):
            raise InjectionRefused(
                "SharedProcessNamespace",
                f"the pod template sets spec.{key}: true, which would let the agent containers"
                " read the sidecar's memory and files (its signing key and API token); remove"
                f" it or opt the workload out ({api.LABEL_INJECT}=false)",
            )


def _inject_env(spec: dict[str, Any], plan: Plan, record: dict[str, Any]) -> None:
    names = [c.get("name") for c in spec.get("containers") or []]
    targets = [n for n in names if not plan.containers or n in plan.containers]
    if not targets:
        raise InjectionRefused(
            "ContainerNotFound",
            f"none of the containers {list(plan.containers)} named in spec.injection.containers"
            f" is in the pod template (it has {names})",
        )
    for container in spec["containers"]:
        if container.get("name") not in targets:
            continue
        env = container.get("env")
        entry = {"name": plan.endpoint_env, "value": plan.endpoint_url}
        original = None
        if env is None:
            container["env"] = [entry]
        else:
            for i, item in enumerate(env):
                if item.get("name") == plan.endpoint_env:
                    original = item
                    env[i] = entry
                    break
            else:
                env.append(entry)
        record["env"][container["name"]] = {"hadList": env is not None, "original": original}


def _get(obj: Mapping[str, Any], path: list[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _set(
    obj: dict[str, Any],
    path: list[str],
    value: Any,
    record: dict[str, Any],
    *,
    remember_value: bool = True,
) -> None:
    """Set ``path`` to ``value``, remembering what was there (and which parents we made)."""
    parent = obj
    created = []
    for i, key in enumerate(path[:-1]):
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
            created.append(i + 1)
        parent = parent[key]
    leaf = path[-1]
    entry: dict[str, Any] = {"path": path, "had": leaf in parent, "created": created}
    if remember_value and leaf in parent:
        entry["value"] = copy.deepcopy(parent[leaf])
    record["restore"].append(entry)
    parent[leaf] = value


# -- stripping ---------------------------------------------------------------------------------


def strip(template: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """The template without what ``record`` says was injected (missing pieces are fine)."""
    tpl = copy.deepcopy(dict(template))
    spec = tpl.get("spec")
    if not isinstance(spec, dict):
        return tpl
    for entry in reversed(record.get("restore") or []):
        _restore(tpl, entry, record)
    sidecar = record.get("sidecar")
    _drop_named(spec, "initContainers", {sidecar})
    _drop_named(spec, "volumes", set(record.get("volumes") or []))
    env_name = record.get("envName")
    for container in spec.get("containers") or []:
        saved = (record.get("env") or {}).get(container.get("name"))
        if saved is not None:
            _strip_env(container, env_name, saved)
    return tpl


def _restore(tpl: dict[str, Any], entry: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    path = list(entry["path"])
    parents = [tpl]
    for key in path[:-1]:
        nxt = parents[-1].get(key)
        if not isinstance(nxt, dict):
            return
        parents.append(nxt)
    parent, leaf = parents[-1], path[-1]
    if path == ["spec", "tolerations"]:
        _strip_tolerations(parent, record, had=entry["had"])
    elif entry["had"]:
        parent[leaf] = copy.deepcopy(entry.get("value"))
    else:
        parent.pop(leaf, None)
    for depth in sorted(entry.get("created") or [], reverse=True):
        holder, key = parents[depth - 1], path[depth - 1]
        if holder.get(key) == {}:
            del holder[key]


def _strip_tolerations(spec: dict[str, Any], record: Mapping[str, Any], *, had: bool) -> None:
    remaining = list(spec.get("tolerations") or [])
    for tol in record.get("tolerations") or []:
        if tol in remaining:
            remaining.remove(tol)
    if remaining or had:
        spec["tolerations"] = remaining
    else:
        spec.pop("tolerations", None)


def _drop_named(spec: dict[str, Any], key: str, names: set[Any]) -> None:
    items = spec.get(key)
    if not isinstance(items, list):
        return
    kept = [i for i in items if not (isinstance(i, dict) and i.get("name") in names)]
    if kept:
        spec[key] = kept
    else:
        spec.pop(key, None)


def _strip_env(container: dict[str, Any], name: Any, saved: Mapping[str, Any]) -> None:
    env = container.get("env")
    if not isinstance(env, list):
        return
    for i, item in enumerate(env):
        if isinstance(item, dict) and item.get("name") == name:
            if saved.get("original") is not None:
                env[i] = copy.deepcopy(saved["original"])
            else:
                del env[i]
            break
    if not env and not saved.get("hadList"):
        container.pop("env", None)


# -- records and comparison --------------------------------------------------------------------


def encode_record(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def decode_record(text: str | None) -> dict[str, Any] | None:
    """The record of an annotation value; None when absent or unreadable."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
        return None
    return record


def same_template(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Equal, with resource quantities compared by value (the API server canonicalises
    ``0.5`` to ``500m``)."""
    return bool(_normalise(current) == _normalise(desired))


def _normalise(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if key in ("requests", "limits"):
            return {k: _quantity(v) for k, v in value.items()}
        return {k: _normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


_SUFFIX = {
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def _quantity(value: Any) -> Any:
    text = str(value)
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * _SUFFIX[suffix]
            except InvalidOperation:
                return text
    try:
        return Decimal(text)
    except InvalidOperation:
        return text
