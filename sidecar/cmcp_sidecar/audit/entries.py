"""Typed audit entries: the proxy fills a dataclass, the log adds the chain fields.

Usage::

    entry = CallEntry(session=sid, principal="demo/agent", tool="salesforce.query",
                      upstream="salesforce", decision="allow", mode="enforcing",
                      forwarded=True, bundle=bundle_hash, policies=("policy0",),
                      arguments=json_digest(params["arguments"]), labels=("internal",))
    appended = await log.append(entry)           # durable when this returns

Every builder has ``fields()``: the entry members without the chain fields (``v``, ``seq``,
``prev``, ``ts_ms``, ``instance``), which :class:`~cmcp_sidecar.audit.AuditLog` adds. Payloads
never enter the log: arguments and results are recorded as :func:`json_digest` values
(SHA-256 of their RFC 8785 form). Member names and meanings: docs/formats.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from cmcp_verifier.digests import sha256_digest

from ..canonical import canonical_bytes

Decision = Literal["allow", "deny", "redact", "error"]
Mode = Literal["enforcing", "advisory", "silent"]
OperationKind = Literal["list", "resource", "prompt", "operation"]
CHAIN_FIELDS = frozenset({"v", "seq", "prev", "ts_ms", "instance"})


class AuditFields(Protocol):
    """Anything :meth:`AuditLog.append` accepts besides a plain mapping."""

    def fields(self) -> dict[str, Any]:
        """The entry members, without the chain fields."""


def json_digest(value: Any) -> str:
    """``sha256:<hex>`` of the RFC 8785 form of a JSON value (floats allowed).

    Raises :class:`cmcp_verifier.errors.InputError` for values without a canonical form
    (non-finite numbers, lone surrogates, integers beyond 2^53).
    """
    return sha256_digest(canonical_bytes(value, allow_floats=True))


class _Fields:
    """``fields()`` from the dataclass fields: tuples become lists, absent optional members
    (``None``) are left out so entries stay small; ``session`` always appears."""

    __slots__ = ()
    _names: ClassVar[dict[type, tuple[str, ...]]] = {}  # member names per class, found once

    def fields(self) -> dict[str, Any]:
        names = _Fields._names.get(type(self))
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
            _Fields._names[type(self)] = names
        members: dict[str, Any] = {"session": None}
        for name in names:
            value = getattr(self, name)
            if value is not None:
                members[name] = list(value) if isinstance(value, tuple) else value
        return members


@dataclass(frozen=True, slots=True)
class CallEntry(_Fields):
    """A ``tools/call``: the decision, whether it went upstream, and digests of the payloads."""

    kind: Literal["call"] = field(default="call", init=False)
    session: str | None
    principal: str
    tool: str  # as the agent sees it (with the upstream's prefix, if any)
    upstream: str
    decision: Decision
    mode: Mode
    forwarded: bool
    bundle: str  # bundle hash in force
    policies: tuple[str, ...] = ()  # determining policy ids
    arguments: str | None = None  # json_digest of the arguments as received
    result: str | None = None  # json_digest of the result as returned to the agent
    error: str | None = None  # stable error code when the call failed
    labels: tuple[str, ...] = ()  # catalog labels of the tool (data classes among them)
    method: str = "tools/call"


@dataclass(frozen=True, slots=True)
class OperationEntry(_Fields):
    """Any other audited MCP request: ``tools/list`` (``list``), ``resources/read``
    (``resource``), ``prompts/get`` (``prompt``) or another method (``operation``)."""

    kind: OperationKind
    session: str | None
    principal: str
    method: str
    decision: Decision
    mode: Mode
    forwarded: bool
    bundle: str
    target: str | None = None  # tool/prompt name or resource URI as the agent sees it
    upstream: str | None = None
    policies: tuple[str, ...] = ()
    params: str | None = None  # json_digest of the request params
    result: str | None = None
    error: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultEntry(_Fields):
    """A request that failed before or outside a policy decision (bad input, upstream fault,
    missing token). ``error`` is the stable error code the agent received."""

    kind: Literal["fault"] = field(default="fault", init=False)
    session: str | None
    error: str
    forwarded: bool
    principal: str | None = None
    method: str | None = None
    tool: str | None = None
    upstream: str | None = None
    bundle: str | None = None
    params: str | None = None  # json_digest of the request body, when it parsed


@dataclass(frozen=True, slots=True)
class LifecycleEntry(_Fields):
    """A gateway event: ``start``, ``stop``, ``bundle_loaded``, ``bundle_rejected``,
    ``attested``, ``attestation_stale`` … ``details`` holds small non-secret facts
    (hashes, counts, codes), never payloads or credentials."""

    kind: Literal["lifecycle"] = field(default="lifecycle", init=False)
    event: str
    details: dict[str, Any] | None = None
    session: str | None = None
