"""Cedar decisions over a loaded bundle, indexed so cost does not grow with bundle size.

Cedar evaluates every policy of the set it is given, so the engine never hands it the whole
bundle. At load, policies are partitioned by their resource scope:

* ``resource == E`` / ``resource in E`` / ``resource is T in E`` → bucket ``E``;
* ``resource is T`` → bucket ``T``;
* ``resource`` (unscoped) → evaluated for every request.

A request for resource ``R`` (type ``T``) of server ``S`` can only be matched by the
unscoped policies and the buckets ``R``, ``S`` and ``T``: in the contract's entity graph a
resource's only ancestor is its server, so ``resource in E`` holds exactly when ``E`` is
``R`` or ``S``. Each bucket becomes its own Cedar policy set on first use (built from Cedar's
JSON form, so decisions name the stable policy ids); a request evaluates the sets of its
non-empty buckets and the results are combined exactly as Cedar combines policies (any
satisfied forbid denies; else any satisfied permit allows; else deny). When the unscoped
policies are few enough (:data:`INLINE_BUDGET`), they are copied into every bucket's set so
that the usual request costs one Cedar call. Every policy is held at most once plus those
copies, so memory is bounded by the bundle, and nothing is parsed per call but the context.

Evaluation errors fail closed: when any policy that applies errors, the decision is deny
(``reason: error``) — Cedar itself would skip the failing policy, which for a ``forbid``
would let the request through.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cedarpy

from cmcp_verifier.cedar_bundle import LoadedBundle, PolicyInfo
from cmcp_verifier.cedar_contract import ACTION_TYPE, PRINCIPAL_TYPE, SERVER_TYPE, ContextError
from cmcp_verifier.obligations import union_all

from .decision import Decision, EvalError
from .request import PolicyRequest

#: Copies of unscoped policies (unscoped × buckets) the engine may make to save Cedar calls.
INLINE_BUDGET = 50_000
#: Per-resource entity handles kept (an agent can name any number of tools).
ENTITY_CACHE_SIZE = 4096
Key = tuple[str, ...]  # ("uid", type, id) | ("is", type)
_UNSCOPED: Key = ()


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
    inline_unscoped: bool
    policy_sets: int  # built so far (one per bucket used, plus the unscoped set)
    cached_entities: int


class _EntityCache:
    """A bounded LRU of per-resource Cedar entity handles."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, request: PolicyRequest) -> Any:
        key = (request.resource_type, request.resource_id, request.server)
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                return value
        value = _resource_entities(request)
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


class PolicyEngine:
    """Decides :class:`PolicyRequest` s against one loaded bundle (immutable once built)."""

    def __init__(
        self,
        bundle: LoadedBundle,
        *,
        indexed: bool = True,
        inline_budget: int = INLINE_BUDGET,
        entity_cache_size: int = ENTITY_CACHE_SIZE,
    ) -> None:
        self.bundle = bundle
        self._unscoped: list[str] = []
        self._buckets: dict[Key, list[str]] = {}
        for policy in bundle.policies:
            key = scope_key(dict(policy.resource_scope)) if indexed else None
            (self._buckets.setdefault(key, []) if key else self._unscoped).append(policy.id)
        self._inline = len(self._unscoped) * len(self._buckets) <= inline_budget
        self._sets: dict[Key, Any] = {}
        self._entities = _EntityCache(entity_cache_size)
        self._policy_set(_UNSCOPED)  # built at load: proves the bundle builds

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
        entities = self._entities.get(request)
        try:
            results = [
                cedarpy.is_authorized(cedar_request, policies, entities)
                for policies in self._parts(request)
            ]
        except Exception as exc:  # whatever Cedar could not evaluate is denied (fail closed)
            return self._fail([EvalError(None, f"Cedar rejected the request: {exc}")])
        return self._combine(results)

    def stats(self) -> EngineStats:
        return EngineStats(
            policies=len(self.bundle.policies),
            unscoped=len(self._unscoped),
            buckets=len(self._buckets),
            inline_unscoped=self._inline,
            policy_sets=len(self._sets),
            cached_entities=len(self._entities),
        )

    def _parts(self, request: PolicyRequest) -> list[Any]:
        """The policy sets that can match this request (see the module docs)."""
        candidates: tuple[Key, ...] = (
            ("uid", request.resource_type, request.resource_id),
            ("uid", SERVER_TYPE, request.server),
            ("is", request.resource_type),
        )
        keys = [k for k in candidates if k in self._buckets]
        separate_unscoped = bool(self._unscoped) and not self._inline
        if not keys or separate_unscoped:
            keys.insert(0, _UNSCOPED)
        return [self._policy_set(k) for k in keys]

    def _policy_set(self, key: Key) -> Any:
        policies = self._sets.get(key)
        if policies is None:  # two threads may both build it; either result is the same
            ids = list(self._unscoped) if key == _UNSCOPED or self._inline else []
            ids.extend(self._buckets.get(key, ()))
            policies = cedarpy.PolicySet.from_json_str(self.bundle.policy_set_json(ids))
            self._sets[key] = policies
        return policies

    def _combine(self, results: Iterable[Any]) -> Decision:
        """Cedar's rule over several partial results: forbid > permit > default deny."""
        forbids: set[str] = set()
        permits: set[str] = set()
        errors: dict[str, None] = {}
        for result in results:
            errors.update(dict.fromkeys(result.diagnostics.errors))
            satisfied = permits if result.decision == cedarpy.Decision.Allow else forbids
            satisfied.update(result.diagnostics.reasons)
        if errors:
            return self._fail(
                [EvalError.from_cedar(e) for e in errors], forbids=tuple(sorted(forbids))
            )
        bundle_hash = self.bundle.hash
        if forbids:
            return Decision("deny", "forbid", tuple(sorted(forbids)), bundle_hash=bundle_hash)
        if not permits:
            return Decision("deny", "no_permit", bundle_hash=bundle_hash)
        ids = tuple(sorted(permits))
        plan = union_all(self._policy(i).obligations for i in ids)
        return Decision("redact" if plan else "allow", "permit", ids, plan, bundle_hash=bundle_hash)

    def _fail(self, errors: list[EvalError], forbids: tuple[str, ...] = ()) -> Decision:
        failing = tuple(sorted({e.policy_id for e in errors if e.policy_id}))
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
