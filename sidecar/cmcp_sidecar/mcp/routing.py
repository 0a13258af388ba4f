"""Names across upstreams: how the agent sees a tool, prompt or resource, and where it lives.

A single upstream's names are shown as they are; an upstream with ``prefix: crm`` shows
``crm.<name>``. Several upstreams without prefixes share one namespace, so the router keeps a
directory of what each one offers (filled from the listings that pass through the gateway and
from the gateway's own listing at start) and refuses a name two of them claim.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .headers import param_tokens
from .upstream import Upstream


class Kind(StrEnum):
    TOOL = "tool"
    PROMPT = "prompt"


class RouteError(Exception):
    """A name the gateway cannot route: unknown, or claimed by several upstreams."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.ambiguous = ambiguous
        self.reason = "route.ambiguous" if ambiguous else "route.unknown"


@dataclass
class _Offer:
    names: dict[Kind, set[str]] = field(default_factory=lambda: {k: set() for k in Kind})
    input_schemas: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, dict[tuple[str, ...], str]] = field(default_factory=dict)
    listed_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    resources: set[str] = field(default_factory=set)
    templates: list[re.Pattern[str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    name: str  # as the upstream knows it


class Router:
    """Maps agent-visible names to (upstream, upstream name) and back."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self.upstreams = list(upstreams)
        self.by_name = {u.name: u for u in upstreams}
        self._offers = {u.name: _Offer() for u in upstreams}

    @property
    def single(self) -> Upstream | None:
        return self.upstreams[0] if len(self.upstreams) == 1 else None

    def visible(self, upstream: Upstream, name: str) -> str:
        """The name the agent sees for ``upstream``'s ``name``."""
        return f"{upstream.prefix}.{name}" if upstream.prefix else name

    def learn(
        self, upstream: Upstream, kind: Kind, names: Iterable[str], *, complete: bool
    ) -> None:
        """Record names an upstream offers (``complete``: this is its whole list)."""
        offer = self._offers[upstream.name].names[kind]
        if complete:
            offer.clear()
        offer.update(names)

    def learn_tools(
        self, upstream: Upstream, tools: Iterable[dict[str, Any]], *, complete: bool
    ) -> None:
        """Record an upstream's live tools (names and input schemas)."""
        offer = self._offers[upstream.name]
        if complete:
            offer.input_schemas.clear()
            offer.listed_at = time.monotonic()
        offer.tokens.clear()
        names = []
        for tool in tools:
            name = tool.get("name")
            if isinstance(name, str):
                names.append(name)
                offer.input_schemas[name] = tool.get("inputSchema")
        self.learn(upstream, Kind.TOOL, names, complete=complete)

    def param_tokens(self, upstream: Upstream, name: str) -> dict[tuple[str, ...], str] | None:
        """``x-mcp-header`` tokens of a listed tool (cached); None for a tool not listed."""
        offer = self._offers[upstream.name]
        tokens = offer.tokens.get(name)
        if tokens is None:
            if name not in offer.input_schemas:
                return None
            tokens = offer.tokens[name] = param_tokens(offer.input_schemas[name]) or {}
        return tokens

    def listing_age(self, upstream: Upstream) -> float:
        return time.monotonic() - self._offers[upstream.name].listed_at

    def listing_started(self, upstream: Upstream) -> None:
        self._offers[upstream.name].listed_at = time.monotonic()

    def listing_lock(self, upstream: Upstream) -> asyncio.Lock:
        return self._offers[upstream.name].lock

    def changed(self, upstream: Upstream) -> None:
        """The upstream announced a tool list change: the next unknown name re-lists."""
        self._offers[upstream.name].listed_at = float("-inf")

    def learn_resources(
        self, upstream: Upstream, uris: Iterable[str], templates: Iterable[str]
    ) -> None:
        offer = self._offers[upstream.name]
        offer.resources.update(uris)
        for template in templates:
            pattern = template_pattern(template)
            if pattern.pattern not in {p.pattern for p in offer.templates}:
                offer.templates.append(pattern)

    def collisions(self, kind: Kind) -> dict[str, list[str]]:
        """Visible names claimed by more than one upstream → the upstreams claiming them."""
        owners: dict[str, list[str]] = {}
        for up in self.upstreams:
            for name in self._offers[up.name].names[kind]:
                owners.setdefault(self.visible(up, name), []).append(up.name)
        return {name: ups for name, ups in owners.items() if len(ups) > 1}

    def is_ambiguous(self, upstream: Upstream, kind: Kind, name: str) -> bool:
        """True when ``name`` of ``upstream`` collides with another upstream's name."""
        if len(self.upstreams) == 1:
            return False
        visible = self.visible(upstream, name)
        return any(
            other is not upstream and self._claims(other, kind, visible) for other in self.upstreams
        )

    def _claims(self, up: Upstream, kind: Kind, visible: str) -> bool:
        names = self._offers[up.name].names[kind]
        if up.prefix:
            head, dot, rest = visible.partition(".")
            return bool(dot) and head == up.prefix and rest in names
        return visible in names

    def resolve(self, kind: Kind, visible: str) -> Target:
        """Where a tool or prompt name the agent used lives."""
        candidates: list[Target] = []
        for up in self.upstreams:
            if up.prefix:
                head, dot, rest = visible.partition(".")
                if dot and head == up.prefix and rest:
                    candidates.append(Target(up, rest))
            elif len(self.upstreams) == 1 or visible in self._offers[up.name].names[kind]:
                candidates.append(Target(up, visible))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            owners = ", ".join(t.upstream.name for t in candidates)
            raise RouteError(
                f"{kind} {visible!r} is offered by several upstreams ({owners})", ambiguous=True
            )
        raise RouteError(f"unknown {kind} {visible!r}")

    def resolve_uri(self, uri: str) -> Upstream:
        """Which upstream serves resource ``uri``."""
        if len(self.upstreams) == 1:
            return self.upstreams[0]
        exact = [u for u in self.upstreams if uri in self._offers[u.name].resources]
        if not exact:
            exact = [
                u
                for u in self.upstreams
                if any(p.fullmatch(uri) for p in self._offers[u.name].templates)
            ]
        if len(exact) == 1:
            return exact[0]
        if exact:
            raise RouteError(f"resource {uri!r} is offered by several upstreams", ambiguous=True)
        raise RouteError(f"unknown resource {uri!r}")


_EXPR = re.compile(r"\{([+#./;?&]?)([^}]*)\}")


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template can expand to (generously)."""
    out, pos = [], 0
    for m in _EXPR.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        op = m.group(1)
        out.append(".*" if op in ("+", "#") else "[^/]*" if op == "" else ".*")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))
