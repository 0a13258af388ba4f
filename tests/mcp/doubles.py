"""A recording interceptor: the seam's test double for proxy tests.

It records every call the proxy makes through the seam and can deny tools or rewrite
arguments, so tests can show *what the proxy asks* and that it obeys the answer. The real
policy/audit/claims implementation is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cmcp_sidecar.mcp.intercept import (
    Admission,
    CallContext,
    Fault,
    Operation,
    OpKind,
    PassThrough,
    Rejection,
    Reply,
)

POLICY_DENIED = -32010


class Recorder(PassThrough):
    def __init__(
        self,
        *,
        deny_tools: tuple[str, ...] = (),
        rewrite_arguments: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        rewrite_result: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        hide_tools: tuple[str, ...] = (),
    ) -> None:
        self.deny_tools = deny_tools
        self.rewrite_arguments = rewrite_arguments
        self.rewrite_result = rewrite_result
        self.hide_tools = hide_tools
        self.admitted: list[Operation] = []
        self.completed: list[tuple[Operation, Reply]] = []
        self.faults: list[tuple[Operation, Fault]] = []
        self.ended: list[Any] = []
        self.rejections: list[Rejection] = []

    def calls(self) -> list[Operation]:
        return [op for op in self.admitted if op.kind is OpKind.CALL_TOOL]

    async def admit(self, op: Operation) -> Admission:
        self.admitted.append(op)
        if op.kind is OpKind.CALL_TOOL and op.name in self.deny_tools:
            error = {"code": POLICY_DENIED, "message": f"denied by policy: {op.name}"}
            return Admission(op=op, params=None, error=error, decision="deny")
        if op.kind is OpKind.CALL_TOOL and self.rewrite_arguments is not None:
            params = {
                **op.params,
                "arguments": self.rewrite_arguments(dict(op.params.get("arguments") or {})),
            }
            return Admission(op=op, params=params, decision="redact")
        return Admission(op=op, params=op.params)

    async def complete(self, admission: Admission, reply: Reply) -> Reply:
        self.completed.append((admission.op, reply))
        if (
            admission.op.kind is OpKind.CALL_TOOL
            and self.rewrite_result
            and reply.result is not None
        ):
            return Reply(result=self.rewrite_result(reply.result))
        return reply

    async def fault(self, admission: Admission, fault: Fault) -> None:
        self.faults.append((admission.op, fault))

    async def review_list(
        self,
        ctx: CallContext,
        upstream: str,
        kind: OpKind,
        items: list[dict[str, Any]],
        admission: Admission,
    ) -> list[dict[str, Any]]:
        if kind is OpKind.LIST_TOOLS and self.hide_tools:
            return [t for t in items if t.get("name") not in self.hide_tools]
        return items

    async def rejected(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)

    async def session_ended(self, end: Any) -> None:
        self.ended.append(end)
