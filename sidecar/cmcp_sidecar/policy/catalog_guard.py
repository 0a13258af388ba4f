"""The tool catalog guard: only approved, unchanged tools are listed and callable.

The catalog (``cmcp_verifier.catalog``) pins every approved tool by the hash of its
definition. :meth:`CatalogGuard.review` compares an upstream's live ``tools/list`` against it:
tools whose definition hash matches are approved; a tool that is not in the catalog, or whose
definition changed since it was pinned (a "rug pull": new description, schema or
annotations), is hidden and its calls are denied until the catalog is re-pinned; catalog
tools the upstream no longer offers are reported too. The proxy reviews on start and again
whenever the upstream sends ``notifications/tools/list_changed``; until an upstream has been
reviewed, none of its tools is callable (fail closed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.catalog import (
    Catalog,
    CatalogEntry,
    catalog_document,
    parse_catalog,
    tool_definition_hash,
)
from cmcp_verifier.errors import InputError

from .request import ToolFacts

DriftReason = Literal["not_in_catalog", "definition_changed", "missing_upstream_tool"]


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference between the catalog and what an upstream offers."""

    upstream: str
    name: str
    reason: DriftReason
    expected_hash: str | None  # the pinned hash (None: not in the catalog)
    live_hash: str | None  # the live definition's hash (None: the upstream lacks the tool)

    def to_json(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "name": self.name,
            "reason": self.reason,
            "expected_hash": self.expected_hash,
            "live_hash": self.live_hash,
        }


@dataclass(frozen=True, slots=True)
class Review:
    """The approved tool objects (as the upstream listed them) and the drift found."""

    approved: list[dict[str, Any]]
    drift: list[Drift]


@dataclass(frozen=True, slots=True)
class _Approved:
    tool: Mapping[str, Any]
    facts: ToolFacts


class CatalogGuard:
    """Reviews live tool lists against a catalog and answers ``is_callable`` from the last one."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._approved: dict[str, dict[str, _Approved]] = {}
        self._drift: dict[str, tuple[Drift, ...]] = {}
        self._lock = threading.Lock()

    def review(
        self, upstream: str, tools: Iterable[Mapping[str, Any]], *, complete: bool = True
    ) -> Review:
        """Review an upstream's live tools (its whole ``tools/list``, all pages).

        With ``complete=False`` (one page of a paginated list) the listed tools are reviewed
        and merged into the upstream's state, and missing catalog tools are not reported.
        """
        by_name: dict[str, list[Mapping[str, Any]]] = {}
        for tool in tools:
            name = tool.get("name") if isinstance(tool, Mapping) else None
            if isinstance(name, str):  # a malformed or nameless entry is never approved
                by_name.setdefault(name, []).append(tool)
        approved: dict[str, _Approved] = {}
        drift: list[Drift] = []
        for name, definitions in by_name.items():
            found = self._check(upstream, name, definitions)
            if isinstance(found, Drift):
                drift.append(found)
            else:
                approved[name] = found
        if complete:
            drift.extend(
                Drift(upstream, name, "missing_upstream_tool", entry.definition_hash, None)
                for (up, name), entry in sorted(self.catalog.entries.items())
                if up == upstream and name not in by_name
            )
        self._store(upstream, approved, set(by_name), drift, complete)
        return Review(approved=[dict(a.tool) for a in approved.values()], drift=drift)

    def _check(
        self, upstream: str, name: str, definitions: list[Mapping[str, Any]]
    ) -> _Approved | Drift:
        """Approve one listed tool, or say how it drifted from its pin."""
        entry = self.catalog.lookup(upstream, name)
        hashes = [_definition_hash(t) for t in definitions]
        if entry is None:
            return Drift(upstream, name, "not_in_catalog", None, hashes[0])
        pinned = entry.definition_hash
        live = next((h for h in hashes if h != pinned), pinned)
        if live != pinned:  # changed, or listed twice with different definitions
            return Drift(upstream, name, "definition_changed", pinned, live)
        tool = definitions[0]
        return _Approved(tool, ToolFacts.of(entry.labels, tool.get("annotations")))

    def _store(
        self,
        upstream: str,
        approved: dict[str, _Approved],
        seen: set[str],
        drift: list[Drift],
        complete: bool,
    ) -> None:
        with self._lock:
            if complete:
                self._approved[upstream] = approved
                self._drift[upstream] = tuple(drift)
                return
            merged = {n: a for n, a in self._approved.get(upstream, {}).items() if n not in seen}
            merged.update(approved)
            self._approved[upstream] = merged
            kept = tuple(d for d in self._drift.get(upstream, ()) if d.name not in seen)
            self._drift[upstream] = kept + tuple(drift)

    def is_callable(self, upstream: str, name: str) -> bool:
        """True when the last review approved this tool (its upstream's own name)."""
        return name in self._approved.get(upstream, {})

    def facts(self, upstream: str, name: str) -> ToolFacts | None:
        """Labels and annotations of an approved tool for the Cedar context (None: not callable)."""
        approved = self._approved.get(upstream, {}).get(name)
        return None if approved is None else approved.facts

    def approved_tool(self, upstream: str, name: str) -> Mapping[str, Any] | None:
        """The approved live definition of a tool, as the upstream listed it."""
        approved = self._approved.get(upstream, {}).get(name)
        return None if approved is None else approved.tool

    def drift(self) -> list[Drift]:
        """Current drift over all reviewed upstreams (for claims and status)."""
        return [d for up in sorted(self._drift) for d in self._drift[up]]


def _definition_hash(tool: Mapping[str, Any]) -> str | None:
    """The tool's definition hash; None when it has no canonical form (never approved)."""
    try:
        return tool_definition_hash(tool)
    except InputError:
        return None


def pin_catalog(
    upstream_tools: Mapping[str, Iterable[Mapping[str, Any]]],
    labels: Mapping[tuple[str, str], Iterable[str]] | None = None,
    *,
    previous: Catalog | None = None,
) -> dict[str, Any]:
    """A catalog document approving every listed tool with its current definition hash.

    ``upstream_tools`` maps an upstream name to its complete live tool list. ``labels``
    assigns data classes by (upstream, tool); tools without an entry keep the labels they had
    in ``previous`` (a re-pin does not lose the review). Raise :class:`InputError` for
    unnamed or repeated tools and invalid labels.
    """
    labels = labels or {}
    entries: list[CatalogEntry] = []
    for upstream, tools in sorted(upstream_tools.items()):
        names: set[str] = set()
        for tool in tools:
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise InputError(f"upstream {upstream!r} lists a tool without a name")
            if name in names:
                raise InputError(f"upstream {upstream!r} lists tool {name!r} twice")
            names.add(name)
            old = previous.lookup(upstream, name) if previous else None
            chosen = labels.get((upstream, name), old.labels if old else ())
            entries.append(
                CatalogEntry(upstream, name, tool_definition_hash(tool), tuple(sorted(set(chosen))))
            )
    document = catalog_document(entries)
    parse_catalog(canonical_bytes(document), source="pinned catalog")  # checks labels, names
    return document
