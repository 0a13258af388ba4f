"""Shadow evaluation: a candidate bundle decides every request too, and is never enforced.

The gateway decides with its active bundle as always; the candidate's decision for the same
:class:`PolicyRequest` is only compared with it. A ``tools/call`` first passes the
candidate's catalog guard — its own catalog when it carries one, else the active one or none
(``shadow_catalog_fallback``) — as it would once promoted: a tool that catalog does not
approve is refused (``deny:catalog``), otherwise Cedar decides with that catalog's facts
about the tool. Every item of a reviewed list page is compared the same way, by
:func:`visibility` (what the page would show when enforced) under each bundle, keyed
``<method>:<item>`` (e.g. ``tools/list:search``). Per claim session the tally counts the
decisions compared (requests and list items) and, per (tool or list item, active outcome,
candidate outcome), the disagreements with a sample of the audit entries (their hashes)
they concern — what a claim reports in ``gateway.shadow`` so that a promotion is decided on
evidence (docs/gitops.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from cmcp_verifier.cedar_bundle import LoadedBundle

from .catalog_guard import CatalogGuard
from .decision import Decision
from .engine import PolicyEngine
from .request import PolicyRequest

#: The reason of the gateway's own deny of a tool its catalog guard does not approve.
CATALOG_DENY = "catalog"
#: A list item's outcomes: shown, withheld by a ``list_*`` policy, withheld by the catalog.
VISIBLE = "visible"
HIDDEN = "hidden"
HIDDEN_CATALOG = f"{HIDDEN}:{CATALOG_DENY}"
#: Longest key of a list item's disagreement (the operator's status bound).
MAX_LIST_KEY = 256

#: Audit references kept per (tool, active, candidate) and session.
SAMPLE_REFS = 5
#: Distinct (tool, active, candidate) keys kept per session (the rest only counted), for
#: requests and for list items each, so that a large catalog's list rows never crowd out
#: the calls'.
MAX_KEYS = 64
_VISIBILITIES = frozenset({VISIBLE, HIDDEN, HIDDEN_CATALOG})
#: Sessions tallied at once; the least recently active are dropped first.
MAX_SESSIONS = 20_000


@dataclass
class _Session:
    evaluated: int = 0
    disagreeing: int = 0
    keys: dict[tuple[str, str, str], tuple[int, list[str]]] = field(default_factory=dict)
    list_keys: int = 0  # of which list items' (outcomes are visibilities)


@dataclass(frozen=True)
class ShadowTotals:
    evaluated: int
    disagreeing: int


def outcome_label(decision: Decision) -> str:
    """A decision's outcome as tallied: ``deny:catalog`` when a catalog guard refused the
    tool (not in that catalog, or changed since it was pinned), to tell it from a policy's
    ``deny``. Outcomes, not labels, decide whether two decisions disagree."""
    if decision.reason == CATALOG_DENY:
        return f"{decision.outcome}:{CATALOG_DENY}"
    return decision.outcome


def visibility(
    engine: PolicyEngine,
    guard: CatalogGuard,
    request: PolicyRequest,
    tool: tuple[str, str] | None = None,
) -> str:
    """How one list item would show once enforced: ``hidden:catalog`` when ``tool`` (its
    upstream and own name; tools only) is not approved by ``guard``, else ``hidden`` when
    the ``list_*`` decision denies it, else ``visible`` — as ``review_list`` filters."""
    if tool is not None:
        facts = guard.facts(*tool)
        if facts is None:
            return HIDDEN_CATALOG
        request = replace(request, tool=facts)
    return HIDDEN if engine.decide(request).outcome == "deny" else VISIBLE


def list_key(method: str, item: str) -> str:
    """A list item's disagreement key: ``<method>:<item>`` (never a tool name alone)."""
    return f"{method}:{item}"[:MAX_LIST_KEY]


class ShadowEvaluator:
    """Evaluates requests against a candidate bundle and tallies the disagreements.

    ``guard``: the candidate's catalog guard — a guard of its own catalog (reviewed against
    the same live tool lists as the active one), or the active guard itself when the
    candidate carries no catalog.
    """

    def __init__(self, bundle: LoadedBundle, guard: CatalogGuard) -> None:
        self.engine = PolicyEngine(bundle)
        self.guard = guard
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._evaluated = self._disagreeing = 0
        self._lock = threading.Lock()

    @property
    def bundle_hash(self) -> str:
        return self.engine.bundle_hash

    def decide(self, request: PolicyRequest, tool: tuple[str, str] | None = None) -> Decision:
        """The candidate's decision. For a ``tools/call`` (``tool``: the upstream and its own
        name of the tool) the candidate's catalog guard comes first, as for the active one."""
        if tool is not None:
            facts = self.guard.facts(*tool)
            if facts is None:  # not in the candidate's catalog, or changed since pinned
                return Decision.gateway_deny(CATALOG_DENY, self.bundle_hash)
            request = replace(request, tool=facts)
        return self.engine.decide(request)

    def compare(
        self,
        request: PolicyRequest,
        active: Decision,
        session: str,
        tool: tuple[str, str] | None = None,
    ) -> str | None:
        """The candidate's outcome label when its outcome differs from ``active``'s (else
        None); counted."""
        candidate = self.decide(request, tool)
        differs = candidate.outcome != active.outcome
        with self._lock:
            tally = self._tally(session)
            tally.evaluated += 1
            self._evaluated += 1
            if differs:
                tally.disagreeing += 1
                self._disagreeing += 1
        return outcome_label(candidate) if differs else None

    def compare_list(
        self, session: str, items: list[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """A list page's items as ``(key, active, candidate)`` visibilities; those that
        differ (``hidden`` and ``hidden:catalog`` agree), counted like requests."""
        differing = [i for i in items if (i[1] == VISIBLE) != (i[2] == VISIBLE)]
        with self._lock:
            tally = self._tally(session)
            tally.evaluated += len(items)
            tally.disagreeing += len(differing)
            self._evaluated += len(items)
            self._disagreeing += len(differing)
        return differing

    def record(self, session: str, tool: str, active: str, candidate: str, ref: str) -> None:
        """A disagreement's audit reference (the entry hash), once the entry is written."""
        with self._lock:
            tally = self._tally(session)
            key = (tool, active, candidate)
            if key not in tally.keys:
                listed = active in _VISIBILITIES
                kept = tally.list_keys if listed else len(tally.keys) - tally.list_keys
                if kept >= MAX_KEYS:
                    return
                tally.list_keys += listed
            count, refs = tally.keys.get(key, (0, []))
            if len(refs) < SAMPLE_REFS:
                refs.append(ref)
            tally.keys[key] = (count + 1, refs)

    def summary(self, session: str) -> dict[str, Any] | None:
        """``gateway.shadow`` of a claim of this session (None: nothing compared yet)."""
        with self._lock:
            tally = self._sessions.get(session)
            if tally is None:
                return None
            return {
                "bundle_hash": self.bundle_hash,
                "evaluated": tally.evaluated,
                "disagreeing": tally.disagreeing,
                "disagreements": [
                    {
                        "tool": tool,
                        "active": active,
                        "candidate": candidate,
                        "count": count,
                        "audit_refs": list(refs),
                    }
                    for (tool, active, candidate), (count, refs) in sorted(tally.keys.items())
                ],
            }

    def _tally(self, session: str) -> _Session:
        tally = self._sessions.get(session)
        if tally is None:
            tally = self._sessions[session] = _Session()
            if len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        return tally

    def totals(self) -> ShadowTotals:
        with self._lock:
            return ShadowTotals(self._evaluated, self._disagreeing)
