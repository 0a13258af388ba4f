"""Applying a redaction plan to arguments (before forwarding) and results (before replying).

Inputs are never mutated: containers on the path to a redaction are copied, untouched
subtrees are shared with the input. A selected field becomes :data:`MARKER` whatever its
type; a regex match inside a string is replaced by :data:`MARKER`.

In results, redaction reaches ``structuredContent``, the ``text`` of text content blocks and
of embedded text resources (``resources/read`` contents and ``prompts/get`` messages alike);
field selectors also apply inside text that is a JSON object or array (servers mirror
``structuredContent`` there), which is then re-serialised. Images, audio, blobs, resource
links and ``_meta`` are left alone. Data nested deeper than :data:`MAX_DEPTH` below a
wildcard or pattern walk is replaced whole (fail closed rather than unbounded recursion).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cmcp_verifier.obligations import RedactionPlan, Selectors

MARKER = "[REDACTED]"
MAX_DEPTH = 128


class Redacted(NamedTuple):
    """A redacted copy and how many values or matches were replaced."""

    value: Any
    replaced: int


def redact_arguments(arguments: Mapping[str, Any], plan: RedactionPlan) -> Redacted:
    """``arguments`` with ``plan.arguments`` applied (the input is not changed)."""
    if not plan.arguments:
        return Redacted(arguments, 0)
    return Redacted(*_json_value(arguments, plan.arguments))


def redact_result(result: Mapping[str, Any], plan: RedactionPlan) -> Redacted:
    """An MCP result (tools/call, resources/read, prompts/get) with ``plan.result`` applied."""
    selectors = plan.result
    if not selectors:
        return Redacted(result, 0)
    out = dict(result)
    total = 0
    for key, walk in _RESULT_PARTS.items():
        if key in out:
            out[key], count = walk(out[key], selectors)
            total += count
    return Redacted(out, total)


def _json_value(value: Any, selectors: Selectors) -> tuple[Any, int]:
    total = 0
    for path in selectors.paths:
        value, count = _redact_path(value, path.segments, 0)
        total += count
    for pattern in selectors.patterns:
        value, count = _redact_strings(value, _compiled(pattern), 0)
        total += count
    return value, total


def _redact_path(value: Any, segments: tuple[str, ...], depth: int) -> tuple[Any, int]:
    if not segments:
        return MARKER, int(value != MARKER)  # "**" can reach a node twice: count it once
    if depth > MAX_DEPTH:
        return MARKER, 1
    head, rest = segments[0], segments[1:]
    if head == "**":
        value, here = _redact_path(value, rest, depth)
        value, below = _map_children(value, lambda c: _redact_path(c, segments, depth + 1))
        return value, here + below
    if head == "*":
        return _map_children(value, lambda c: _redact_path(c, rest, depth + 1))
    if isinstance(value, dict) and head in value:
        new, count = _redact_path(value[head], rest, depth + 1)
        return ({**value, head: new}, count) if count else (value, 0)
    if isinstance(value, list):
        if head.isdigit():
            index = int(head)
            if index >= len(value):
                return value, 0
            new, count = _redact_path(value[index], rest, depth + 1)
            return ([*value[:index], new, *value[index + 1 :]], count) if count else (value, 0)
        # A name applied to an array applies to each of its elements.
        return _map_children(value, lambda c: _redact_path(c, segments, depth + 1))
    return value, 0


def _map_children(value: Any, fn: Callable[[Any], tuple[Any, int]]) -> tuple[Any, int]:
    if isinstance(value, dict):
        results = {k: fn(v) for k, v in value.items()}
        total = sum(c for _, c in results.values())
        return ({k: v for k, (v, _) in results.items()}, total) if total else (value, 0)
    if isinstance(value, list):
        items = [fn(v) for v in value]
        total = sum(c for _, c in items)
        return ([v for v, _ in items], total) if total else (value, 0)
    return value, 0


def _redact_strings(value: Any, pattern: re.Pattern[str], depth: int) -> tuple[Any, int]:
    if isinstance(value, str):
        new, count = pattern.subn(MARKER, value)
        return (new, count) if count else (value, 0)
    if depth > MAX_DEPTH and isinstance(value, dict | list):
        return MARKER, 1
    return _map_children(value, lambda c: _redact_strings(c, pattern, depth + 1))


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _text(text: Any, selectors: Selectors) -> tuple[Any, int]:
    """A text payload: field selectors inside JSON text, then patterns."""
    if not isinstance(text, str):
        return text, 0
    total = 0
    if selectors.paths and text.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            new, total = _json_value(parsed, Selectors(paths=selectors.paths))
            if total:
                text = json.dumps(new, ensure_ascii=False)
    for pattern in selectors.patterns:
        text, count = _compiled(pattern).subn(MARKER, text)
        total += count
    return text, total


def _with_text(holder: Any, key: str, selectors: Selectors) -> tuple[Any, int]:
    if not isinstance(holder, dict) or key not in holder:
        return holder, 0
    new, count = _text(holder[key], selectors)
    return ({**holder, key: new}, count) if count else (holder, 0)


def _block(block: Any, selectors: Selectors) -> tuple[Any, int]:
    """One content block: text, and embedded resources' text; nothing else."""
    if not isinstance(block, dict):
        return block, 0
    if block.get("type") == "text":
        return _with_text(block, "text", selectors)
    if block.get("type") == "resource":
        resource, count = _with_text(block.get("resource"), "text", selectors)
        return ({**block, "resource": resource}, count) if count else (block, 0)
    return block, 0


def _blocks(blocks: Any, selectors: Selectors) -> tuple[Any, int]:
    if isinstance(blocks, dict):
        return _block(blocks, selectors)
    if not isinstance(blocks, list):
        return blocks, 0
    return _map_children(blocks, lambda b: _block(b, selectors))


def _messages(messages: Any, selectors: Selectors) -> tuple[Any, int]:
    if not isinstance(messages, list):
        return messages, 0
    return _map_children(messages, lambda m: _with_blocks(m, selectors))


def _with_blocks(message: Any, selectors: Selectors) -> tuple[Any, int]:
    if not isinstance(message, dict) or "content" not in message:
        return message, 0
    content, count = _blocks(message["content"], selectors)
    return ({**message, "content": content}, count) if count else (message, 0)


def _contents(contents: Any, selectors: Selectors) -> tuple[Any, int]:
    if not isinstance(contents, list):
        return contents, 0
    return _map_children(contents, lambda c: _with_text(c, "text", selectors))


_RESULT_PARTS: dict[str, Callable[[Any, Selectors], tuple[Any, int]]] = {
    "content": _blocks,
    "structuredContent": _json_value,
    "contents": _contents,
    "messages": _messages,
}
