"""The Cedar contract (``cmcp-cedar/v1``): what a policy can rely on in every request.

Users write policies against this, so it is public and stable (docs/policy.md; the schema is
``policies/schema.cedarschema``). The gateway evaluates each MCP operation as

* principal ``Agent::"<workload identity>"`` (no attributes, no parents);
* action ``Action::"<name>"`` from :data:`ACTIONS`;
* resource ``Tool``/``Resource``/``Prompt::"<name as the agent sees it>"`` whose only
  parent is ``Server::"<upstream name>"``;
* context :func:`context_record`: ``arguments`` (the request's own arguments, made
  Cedar-safe by :func:`cedar_value`), ``tool`` (catalog labels and MCP tool annotations with
  the MCP defaults filled in), ``session`` (``data_classes_seen``) and ``gateway`` (``mode``,
  ``platform``).

Both the bundle loader (to check a bundle's schema accepts these requests) and the sidecar's
policy engine (to build them) use this module, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CONTRACT = "cmcp-cedar/v1"
PRINCIPAL_TYPE = "Agent"
SERVER_TYPE = "Server"
ACTION_TYPE = "Action"

#: action name → the resource types it applies to. ``list_*`` actions are evaluated once per
#: listed item (a deny hides the item); ``complete`` names the prompt or resource template
#: whose argument is being completed.
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "call_tool": ("Tool",),
    "list_tools": ("Tool",),
    "read_resource": ("Resource",),
    "subscribe_resource": ("Resource",),
    "list_resources": ("Resource",),
    "get_prompt": ("Prompt",),
    "list_prompts": ("Prompt",),
    "complete": ("Prompt", "Resource"),
}

#: MCP ``ToolAnnotations`` defaults (MCP specification): a tool that says nothing is assumed
#: to write, to be destructive, not idempotent, and to reach the open world.
ANNOTATION_DEFAULTS: Mapping[str, bool] = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": False,
    "openWorldHint": True,
}

#: Cedar's JSON value escapes; an object carrying one of these keys would be read as an
#: entity reference or extension value instead of a record, so arguments may not use them.
CEDAR_ESCAPES = frozenset({"__entity", "__extn", "__expr"})
MAX_DEPTH = 32
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class ContextError(ValueError):
    """A value cannot be given to Cedar faithfully (the policy engine fails closed)."""


def normalize_annotations(raw: Mapping[str, Any] | None) -> dict[str, bool | str]:
    """MCP tool annotations as policies see them: every hint a bool, plus ``title``.

    A missing or non-boolean hint takes the MCP default, except that ``destructiveHint``
    defaults to false for a tool that declares ``readOnlyHint: true`` (the MCP
    specification defines it only for tools that are not read-only).
    """
    raw = raw if isinstance(raw, Mapping) else {}
    out: dict[str, bool | str] = {}
    for key, default in ANNOTATION_DEFAULTS.items():
        value = raw.get(key)
        out[key] = value if isinstance(value, bool) else default
    if not isinstance(raw.get("destructiveHint"), bool) and out["readOnlyHint"] is True:
        out["destructiveHint"] = False
    title = raw.get("title")
    out["title"] = title if isinstance(title, str) else ""
    return out


def tool_record(labels: Iterable[str], annotations: Mapping[str, Any] | None) -> dict[str, Any]:
    """``context.tool``: catalog labels (a set) and normalized MCP annotations."""
    return {"labels": sorted(set(labels)), "annotations": normalize_annotations(annotations)}


def session_record(data_classes_seen: Iterable[str]) -> dict[str, Any]:
    """``context.session``: the data classes this session has already received."""
    return {"data_classes_seen": sorted(set(data_classes_seen))}


def gateway_record(mode: str, platform: str) -> dict[str, Any]:
    """``context.gateway``: the enforcement mode and the TEE platform."""
    return {"mode": mode, "platform": platform}


def context_record(
    arguments: Mapping[str, Any],
    tool: Mapping[str, Any],
    session: Mapping[str, Any],
    gateway: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``context`` record of a request from its parts (built by the functions above).

    Raise :class:`ContextError` when ``arguments`` cannot be represented (see
    :func:`cedar_value`).
    """
    return {
        "arguments": cedar_value(arguments),
        "tool": tool,
        "session": session,
        "gateway": gateway,
    }


def cedar_value(value: Any, depth: int = 0) -> Any:
    """A JSON value as Cedar's JSON context format reads it, without changing its meaning.

    Cedar has no null and no floating point: ``null`` members and array items are dropped,
    non-integer numbers and integers outside 64 bits become their decimal string. Objects
    using Cedar's escape keys (``__entity``, ``__extn``, ``__expr``) and nesting deeper than
    :data:`MAX_DEPTH` raise :class:`ContextError`, as does anything that is not JSON.
    """
    if depth > MAX_DEPTH:
        raise ContextError(f"arguments nest deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _LONG_MIN <= value <= _LONG_MAX else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        escapes = CEDAR_ESCAPES.intersection(value)
        if escapes:
            raise ContextError(f"arguments use Cedar's reserved key {sorted(escapes)[0]!r}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ContextError("arguments have a non-string key")
            if item is not None:
                out[key] = cedar_value(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [cedar_value(item, depth + 1) for item in value if item is not None]
    raise ContextError(f"arguments contain a {type(value).__name__}, which is not JSON")
