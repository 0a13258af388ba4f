"""Cedar decisions over a loaded bundle, indexed so cost does not grow with bundle size.

Cedar evaluates every policy of the set it is given, so the engine never hands it the whole
bundle. At load, policies are partitioned by their resource scope:

* ``resource == E`` / ``resource in E`` / ``resource is T in E`` → bucket ``E``;
* ``resource is T`` → bucket ``T``;
* ``resource`` (unscoped) → evaluated for every request.

A request for resource ``R`` (type ``T``) of server ``S`` can only be matched by the
unscoped policies and the buckets ``R``, ``S`` and ``T``: in the contract's entity graph a
resource's only ancestor is its server, so ``resource in E`` holds exactly when ``E`` is
``R`` or ``S``. The policy set for that combination of buckets is built on first use from
Cedar's JSON form (so decisions name the stable policy ids) and kept in a bounded LRU cache,
as are the per-resource entity handles. Nothing is parsed per call but the context.

Evaluation errors fail closed: when any policy that applies errors, the decision is deny
(``reason: error``) — Cedar itself would skip the failing policy, which for a ``forbid``
would let the request through.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cedarpy

from cmcp_verifier.cedar_bundle import LoadedBundle, PolicyInfo
from cmcp_verifier.cedar_contract import ACTION_TYPE, PRINCIPAL_TYPE, SERVER_TYPE, ContextError
from cmcp_verifier.obligations import union_all

from .decision import Decision, EvalError
from .request import PolicyRequest

DEFAULT_CACHE_SIZE = 4096
_ALL: tuple[str, ...] = ("*",)
Key = tuple[str, ...]  # ("uid", type, id) | ("is", type)
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    """A small thread-safe LRU map; ``get`` builds missing values with ``make``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K, make: Callable[[], _V]) -> _V:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                return value
        value = make()
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def scope_key(scope: dict[str, Any]) -> Key | None:
    """The bucket of a policy's resource constraint (Cedar JSON form); None: unscoped."""
    op = scope.get("op")
    entity = scope.get("entity")
    if op == "is" and isinstance(scope.get("in"), dict):
        entity = scope["in"].get("entity")
    if op in ("==", "in", "is") and isinstance(entity, dict):
        return ("uid", str(entity.get("type")), str(entity.get("id")))
    if op == "is" and isinstance(scope.get("entity_type"), str):
        return ("is", scope["entity_type"])
    return None


@dataclass(frozen=True)
class EngineStats:
    policies: int
    unscoped: int
    buckets: int
    cached_policy_sets: int
    cached_entities: int


class PolicyEngine:
    """Decides :class:`PolicyRequest` s against one loaded bundle (immutable once built)."""

    def __init__(
        self, bundle: LoadedBundle, *, indexed: bool = True, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self.bundle = bundle
        self._indexed = indexed
        self._unscoped: list[str] = []
        self._buckets: dict[Key, list[str]] = {}
        for policy in bundle.policies:
            key = scope_key(dict(policy.resource_scope)) if indexed else None
            (self._buckets.setdefault(key, []) if key else self._unscoped).append(policy.id)
        self._sets: _Lru[Key | tuple[Key, ...], Any] = _Lru(cache_size)
        self._entities: _Lru[tuple[str, str, str], Any] = _Lru(cache_size)
        self._policy_set(())  # the unscoped set: built at load, and proves the bundle builds

    @classmethod
    def from_bundle(cls, bundle: LoadedBundle, **options: Any) -> PolicyEngine:
        return cls(bundle, **options)

    @property
    def bundle_hash(self) -> str:
        return self.bundle.hash

    def decide(self, request: PolicyRequest) -> Decision:
        """Evaluate one request; never raises for bad input (it denies, fail closed)."""
        try:
            context = request.context()
        except ContextError as exc:
            return self._fail([EvalError(None, str(exc))])
        cedar_request = {
            "principal": {"type": PRINCIPAL_TYPE, "id": request.principal},
            "action": {"type": ACTION_TYPE, "id": request.action},
            "resource": {"type": request.resource_type, "id": request.resource_id},
            "context": context,
        }
        policies = self._policy_set(self._keys(request))
        entities = self._entities.get(
            (request.resource_type, request.resource_id, request.server),
            lambda: _resource_entities(request),
        )
        try:
            result = cedarpy.is_authorized(cedar_request, policies, entities)
        except Exception as exc:  # whatever Cedar could not evaluate is denied (fail closed)
            return self._fail([EvalError(None, f"Cedar rejected the request: {exc}")])
        return self._interpret(
            result.decision == cedarpy.Decision.Allow,
            result.diagnostics.reasons,
            result.diagnostics.errors,
        )

    def stats(self) -> EngineStats:
        return EngineStats(
            policies=len(self.bundle.policies),
            unscoped=len(self._unscoped),
            buckets=len(self._buckets),
            cached_policy_sets=len(self._sets),
            cached_entities=len(self._entities),
        )

    def _keys(self, request: PolicyRequest) -> tuple[Key, ...]:
        if not self._indexed:
            return ()
        candidates: tuple[Key, ...] = (
            ("uid", request.resource_type, request.resource_id),
            ("uid", SERVER_TYPE, request.server),
            ("is", request.resource_type),
        )
        return tuple(k for k in candidates if k in self._buckets)

    def _policy_set(self, keys: tuple[Key, ...]) -> Any:
        def build() -> Any:
            ids = list(self._unscoped)
            for key in keys:
                ids.extend(self._buckets[key])
            return cedarpy.PolicySet.from_json_str(self.bundle.policy_set_json(ids))

        return self._sets.get(keys or _ALL, build)

    def _interpret(self, allowed: bool, reasons: list[str], raw_errors: list[str]) -> Decision:
        ids = tuple(sorted(reasons))
        if raw_errors:
            return self._fail([EvalError.from_cedar(e) for e in raw_errors], forbids=ids)
        if not allowed:
            return Decision(
                "deny", "forbid" if ids else "no_permit", ids, bundle_hash=self.bundle.hash
            )
        plan = union_all(self._policy(i).obligations for i in ids)
        return Decision(
            "redact" if plan else "allow", "permit", ids, plan, bundle_hash=self.bundle.hash
        )

    def _fail(self, errors: list[EvalError], forbids: tuple[str, ...] = ()) -> Decision:
        failing = tuple(sorted({e.policy_id for e in errors if e.policy_id}))
        forbids = tuple(i for i in forbids if self._policy(i).effect == "forbid")
        return Decision(
            "deny",
            "forbid" if forbids else "error",
            forbids or failing,
            errors=tuple(errors),
            bundle_hash=self.bundle.hash,
        )

    def _policy(self, policy_id: str) -> PolicyInfo:
        return self.bundle.policy(policy_id)


def _resource_entities(request: PolicyRequest) -> Any:
    entity = {
        "uid": {"type": request.resource_type, "id": request.resource_id},
        "attrs": {},
        "parents": [{"type": SERVER_TYPE, "id": request.server}],
    }
    return cedarpy.Entities.from_json_str(json.dumps([entity]))
