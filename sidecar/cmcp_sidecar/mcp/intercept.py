"""The enforcement seam: what the proxy asks before anything crosses it.

The proxy knows MCP; the interceptor knows policy, the catalog, the audit chain and claims.
For every operation the proxy calls the interceptor, in this order:

1. :meth:`Interceptor.admit` before forwarding a message that could invoke a tool, read data
   or carry data to a peer (every client→server request, every client response to a
   server→client request, every server→client request). It returns an :class:`Admission`:
   forward ``params`` (possibly rewritten, e.g. redacted arguments) or answer ``error``.
2. :meth:`Interceptor.complete` with the final reply before it is written to the agent (or,
   for server→client requests, before the client's answer goes to the upstream). It may
   rewrite the reply (redaction) and must have finished everything that has to be durable
   (the audit entry) when it returns. It is not shielded: cancelled while it waits (the agent
   went away), it must still make durable what it began. Notifications streamed before the
   reply pass through.
3. :meth:`Interceptor.fault` when the upstream fails (unreachable, invalid, reset, too
   large, or the agent went away first) instead of replying; no reply reaches the agent
   after a fault except the gateway's own error.

Plus :meth:`review_list` for every page of a list (catalog filtering, per-item policy),
:meth:`rejected` for requests refused before any decision (malformed, smuggling, unauthorised:
audited too), and notifications of upstream list changes and session ends.
:class:`PassThrough` admits everything unchanged; it is the seam's test double and what
``cmcp_sidecar.enforce`` replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .jsonrpc import RequestId


class Era(StrEnum):
    """Which Streamable HTTP shape a message arrived in."""

    SESSION = "session"  # 2025-03-26 … 2025-11-25: initialize, Mcp-Session-Id
    STATELESS = "stateless"  # 2026-07-28: per-request _meta envelope


class OpKind(StrEnum):
    """What an operation does; maps onto Cedar actions in the enforcement implementation."""

    INITIALIZE = "initialize"
    DISCOVER = "discover"
    CALL_TOOL = "call_tool"
    LIST_TOOLS = "list_tools"
    READ_RESOURCE = "read_resource"
    LIST_RESOURCES = "list_resources"
    LIST_RESOURCE_TEMPLATES = "list_resource_templates"
    SUBSCRIBE_RESOURCE = "subscribe_resource"
    UNSUBSCRIBE_RESOURCE = "unsubscribe_resource"
    LISTEN = "listen"
    GET_PROMPT = "get_prompt"
    LIST_PROMPTS = "list_prompts"
    COMPLETE = "complete"
    SET_LOG_LEVEL = "set_log_level"
    PING = "ping"
    SERVER_REQUEST = "server_request"  # upstream → agent: sampling, elicitation, roots
    OTHER = "other"  # a method the gateway does not know (extensions); forwarded only if admitted


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is asking, in which session and protocol."""

    principal: str
    claim_session: str
    era: Era
    protocol_version: str
    mcp_session: str | None = None


@dataclass(slots=True)
class Operation:
    """One message about to cross the gateway towards ``upstream``.

    ``name`` is the target as the agent sees it (tool or prompt name, resource URI) and
    ``upstream_name`` as the upstream knows it; ``params`` are the params as they would be
    forwarded to the upstream (already renamed). For ``SERVER_REQUEST`` the direction is
    reversed: ``params`` go to the agent and the agent's answer completes the operation.
    """

    kind: OpKind
    method: str
    ctx: CallContext
    upstream: str
    params: dict[str, Any]
    request_id: RequestId | None = None
    name: str | None = None
    upstream_name: str | None = None


@dataclass(slots=True)
class Admission:
    """The interceptor's answer to :meth:`Interceptor.admit`.

    Exactly one of ``params`` (forward these) and ``error`` (answer this JSON-RPC error object
    instead, ``{"code": …, "message": …, "data"?: …}``) is set. ``decision`` labels metrics
    and logs (allow, deny, redact, …); ``state`` is private to the interceptor.
    """

    op: Operation
    params: dict[str, Any] | None
    error: dict[str, Any] | None = None
    decision: str = "allow"
    state: Any = None


@dataclass(slots=True)
class Reply:
    """A final reply: exactly one of ``result`` and ``error`` (JSON-RPC objects)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @classmethod
    def of(cls, message: dict[str, Any]) -> Reply:
        if "error" in message:
            return cls(error=message["error"])
        return cls(result=message.get("result"))

    def message(self, request_id: RequestId | None) -> dict[str, Any]:
        if self.error is not None:
            return {"jsonrpc": "2.0", "id": request_id, "error": self.error}
        return {"jsonrpc": "2.0", "id": request_id, "result": self.result}


@dataclass(frozen=True, slots=True)
class Fault:
    """Why no upstream reply came: a stable ``code`` (upstream.unreachable, …) and detail."""

    code: str
    message: str
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the gateway refused before any policy decision, and why.

    ``code`` is a stable code (``jsonrpc.batch``, ``http.unauthorized``, ``header.mismatch``,
    ``route.unknown_tool`` …); ``principal`` is None when the caller did not authenticate,
    ``method``/``name`` None when the body did not parse that far.
    """

    code: str
    status: int
    principal: str | None = None
    claim_session: str | None = None
    method: str | None = None
    name: str | None = None
    upstream: str | None = None


@dataclass(slots=True)
class SessionEnd:
    """A claim session ended: DELETE, idle timeout, explicit close, window end or shutdown."""

    ctx: CallContext
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)


class Interceptor(Protocol):
    """What the proxy calls; see the module docstring for the order and guarantees."""

    async def admit(self, op: Operation) -> Admission:
        """Decide whether ``op`` may be forwarded and with which params."""
        ...

    async def complete(self, admission: Admission, reply: Reply) -> Reply:
        """Record (durably) and possibly rewrite the final reply; return what to deliver."""
        ...

    async def fault(self, admission: Admission, fault: Fault) -> None:
        """Record that ``admission``'s operation ended without an upstream reply."""
        ...

    async def review_list(
        self,
        ctx: CallContext,
        upstream: str,
        kind: OpKind,
        items: list[dict[str, Any]],
        admission: Admission,
    ) -> list[dict[str, Any]]:
        """The items of one list page (upstream names) the agent may see.

        ``kind`` is LIST_TOOLS, LIST_PROMPTS, LIST_RESOURCES or LIST_RESOURCE_TEMPLATES;
        return ``items`` itself when nothing is withheld (the page then passes unchanged).
        ``admission`` is the list operation's own: :meth:`complete` follows with it once
        the page is shaped.
        """
        ...

    async def rejected(self, rejection: Rejection) -> None:
        """Record a request refused before any decision (durably, before the refusal)."""
        ...

    async def upstream_changed(self, upstream: str, method: str) -> None:
        """The upstream announced a list change (tools, prompts, resources)."""
        ...

    async def session_ended(self, end: SessionEnd) -> None:
        """A claim session ended."""
        ...


class PassThrough:
    """Admits everything unchanged and records nothing: the seam's test double."""

    async def admit(self, op: Operation) -> Admission:
        return Admission(op=op, params=op.params, decision="allow")

    async def complete(self, admission: Admission, reply: Reply) -> Reply:
        return reply

    async def fault(self, admission: Admission, fault: Fault) -> None:
        return None

    async def review_list(
        self,
        ctx: CallContext,
        upstream: str,
        kind: OpKind,
        items: list[dict[str, Any]],
        admission: Admission,
    ) -> list[dict[str, Any]]:
        return items

    async def rejected(self, rejection: Rejection) -> None:
        return None

    async def upstream_changed(self, upstream: str, method: str) -> None:
        return None

    async def session_ended(self, end: SessionEnd) -> None:
        return None
