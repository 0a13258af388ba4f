"""The typed input of a policy decision (Cedar contract ``cmcp-cedar/v1``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cmcp_verifier.cedar_contract import (
    ACTIONS,
    context_record,
    gateway_record,
    normalize_annotations,
    tool_record,
)

from .session_facts import SessionFacts


@dataclass(frozen=True, slots=True)
class ToolFacts:
    """Catalog facts about a tool: operator-assigned labels and its MCP annotations."""

    labels: frozenset[str] = frozenset()
    annotations: Mapping[str, bool | str] = field(default_factory=lambda: normalize_annotations({}))
    record: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", tool_record(self.labels, self.annotations))

    @classmethod
    def of(cls, labels: Iterable[str], annotations: Mapping[str, Any] | None) -> ToolFacts:
        """Facts from catalog labels and a live tool's ``annotations`` (MCP defaults applied)."""
        return cls(frozenset(labels), normalize_annotations(annotations))


@dataclass(frozen=True, slots=True)
class GatewayFacts:
    """What policies see as ``context.gateway``."""

    mode: str = "enforcing"
    platform: str = ""
    record: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", gateway_record(self.mode, self.platform))


NO_TOOL_FACTS = ToolFacts()
NO_SESSION_FACTS = SessionFacts()
DEFAULT_GATEWAY_FACTS = GatewayFacts()


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One MCP operation to decide.

    ``resource_id`` is the name as the agent sees it (tool or prompt name, resource URI);
    ``server`` the upstream it belongs to; ``arguments`` the request's own arguments
    (``tools/call`` and ``prompts/get`` arguments, ``{name, value}`` for ``completion``).
    """

    principal: str
    action: str
    resource_type: str
    resource_id: str
    server: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    tool: ToolFacts = NO_TOOL_FACTS
    session: SessionFacts = NO_SESSION_FACTS
    gateway: GatewayFacts = DEFAULT_GATEWAY_FACTS

    def __post_init__(self) -> None:
        allowed = ACTIONS.get(self.action)
        if allowed is None:
            raise ValueError(f"unknown action {self.action!r} (known: {', '.join(ACTIONS)})")
        if self.resource_type not in allowed:
            raise ValueError(f"action {self.action} applies to {'/'.join(allowed)}")

    @classmethod
    def call_tool(
        cls,
        principal: str,
        name: str,
        server: str,
        arguments: Mapping[str, Any],
        **facts: Any,
    ) -> PolicyRequest:
        """Shorthand for a ``tools/call`` of tool ``name`` (``facts``: tool, session, gateway)."""
        return cls(principal, "call_tool", "Tool", name, server, arguments, **facts)

    def context(self) -> dict[str, Any]:
        """The Cedar ``context`` record (raises ContextError for unrepresentable arguments)."""
        return context_record(
            self.arguments, self.tool.record, self.session.record, self.gateway.record
        )
