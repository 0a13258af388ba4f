"""Session facts for flow rules: which data classes a session has already received.

The proxy owns session state; this is the pure logic. After a result reaches the agent, the
labels of the tool that produced it join ``data_classes_seen``, so a policy can forbid, say,
a ``communication`` tool once anything labelled ``mnpi`` was read in the same session::

    forbid(principal, action == Action::"call_tool", resource)
    when { context.tool.labels.contains("communication") &&
           context.session.data_classes_seen.contains("mnpi") };
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cmcp_verifier.cedar_contract import session_record


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What policies see as ``context.session``."""

    data_classes_seen: frozenset[str] = frozenset()
    record: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", session_record(self.data_classes_seen))

    def after_result(self, labels: Iterable[str]) -> SessionFacts:
        """The facts after a result from a tool with these labels reached the agent.

        Call it for every result the agent received — error results and redacted results
        included (either may still carry data) — and not for calls that were not forwarded.
        """
        added = frozenset(labels) - self.data_classes_seen
        return self if not added else SessionFacts(self.data_classes_seen | added)
