"""Redaction obligations: the annotation language on Cedar ``permit`` policies.

A permit policy may carry up to two obligation annotations::

    @redact_arguments("ssn, card.number, regex:\\\\b\\\\d{16}\\\\b")
    @redact_result("patient.*.ssn, regex:\\\\b\\\\d{3}-\\\\d{2}-\\\\d{4}\\\\b")

The value is a comma-separated list of selectors:

* a **field path**: dot-separated segments, each a name (``[A-Za-z0-9_$@:/-]+``; a
  numeric name also selects that index of an array), ``*`` (any one key or index) or ``**``
  (any depth, including none). A name applied to an array applies to each element, so
  ``contacts.ssn`` reaches every contact's ``ssn``. The selected value, whatever its type,
  is replaced by the marker.
* at most one **pattern**, written last: ``regex:<Python re pattern>`` (everything after
  ``regex:`` to the end of the value, commas included; combine patterns with ``|``). Every
  match inside every string value is replaced by the marker.

``@redact_arguments`` applies to the request's arguments before they are forwarded;
``@redact_result`` to what comes back (tool results: text blocks, embedded text resources
and ``structuredContent``; images, audio, blobs and links are left alone). The names
``redact*`` are reserved: any other annotation starting with ``redact`` is an error, so a
typo never silently disables a redaction. See docs/policy.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

REDACT_ARGUMENTS = "redact_arguments"
REDACT_RESULT = "redact_result"
KNOWN = (REDACT_ARGUMENTS, REDACT_RESULT)
RESERVED_PREFIX = "redact"
REGEX_PREFIX = "regex:"
MAX_PATTERN_LENGTH = 1024
MAX_SELECTORS = 64
_SEGMENT_RE = re.compile(r"^(\*\*|\*|[A-Za-z0-9_$@:/\-]+)$")
_T = TypeVar("_T")


class ObligationError(ValueError):
    """An ill-formed obligation annotation (the bundle loader adds file and line)."""

    def __init__(self, message: str, annotation: str = "") -> None:
        super().__init__(message)
        self.annotation = annotation


@dataclass(frozen=True)
class FieldPath:
    """A parsed field selector; ``segments`` are names, ``*`` or ``**``."""

    segments: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.segments)


@dataclass(frozen=True)
class Selectors:
    """What one annotation (or the union of several) selects."""

    paths: tuple[FieldPath, ...] = ()
    patterns: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.paths or self.patterns)

    def union(self, other: Selectors) -> Selectors:
        return Selectors(
            paths=_unique(self.paths + other.paths),
            patterns=_unique(self.patterns + other.patterns),
        )

    def describe(self) -> list[str]:
        """The selectors in annotation syntax (stable order), e.g. for audit records."""
        return [str(p) for p in self.paths] + [REGEX_PREFIX + p for p in self.patterns]


@dataclass(frozen=True)
class RedactionPlan:
    """The obligations of a decision: what to redact in arguments and in the result."""

    arguments: Selectors = Selectors()
    result: Selectors = Selectors()

    def __bool__(self) -> bool:
        return bool(self.arguments or self.result)

    def union(self, other: RedactionPlan) -> RedactionPlan:
        return RedactionPlan(self.arguments.union(other.arguments), self.result.union(other.result))

    def to_json(self) -> dict[str, list[str]]:
        """``{"arguments": [...], "result": [...]}`` with the non-empty parts only."""
        out: dict[str, list[str]] = {}
        if self.arguments:
            out["arguments"] = self.arguments.describe()
        if self.result:
            out["result"] = self.result.describe()
        return out


EMPTY_PLAN = RedactionPlan()


def _unique(items: tuple[_T, ...]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def parse_selectors(value: str) -> Selectors:
    """Parse one annotation value; raise :class:`ObligationError` saying what is wrong."""
    head, sep, pattern = value.partition(REGEX_PREFIX)
    if sep and head and not head.rstrip().endswith(","):
        raise ObligationError(f"{REGEX_PREFIX!r} must start a selector (after a comma)")
    items = [item.strip() for item in head.split(",")]
    if sep:
        items = items[:-1]  # the empty item before "regex:"
    if any(not item for item in items) or (not items and not sep):
        raise ObligationError("empty selector (selectors are separated by single commas)")
    if len(items) > MAX_SELECTORS:
        raise ObligationError(f"more than {MAX_SELECTORS} selectors")
    paths = tuple(_parse_path(item) for item in items)
    patterns = (_check_pattern(pattern),) if sep else ()
    return Selectors(paths=_unique(paths), patterns=patterns)


def _parse_path(text: str) -> FieldPath:
    segments = tuple(text.split("."))
    for segment in segments:
        if not _SEGMENT_RE.match(segment):
            raise ObligationError(
                f"bad field selector {text!r}: segments are names ([A-Za-z0-9_$@:/-]), * or **"
            )
    if segments[-1] == "**":
        raise ObligationError(f"bad field selector {text!r}: it cannot end with **")
    return FieldPath(segments)


def _check_pattern(pattern: str) -> str:
    if not pattern:
        raise ObligationError(f"{REGEX_PREFIX} needs a pattern")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ObligationError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ObligationError(f"invalid regular expression {pattern!r}: {exc}") from None
    if compiled.match(""):
        raise ObligationError(f"pattern {pattern!r} matches the empty string")
    return pattern


def obligations_of(effect: str, annotations: Mapping[str, str | None]) -> RedactionPlan:
    """The redaction plan a policy's annotations carry (empty when there are none).

    Raise :class:`ObligationError` for an unknown ``redact*`` annotation, an ill-formed
    value, or an obligation on a ``forbid`` policy (which never determines a permit).
    """
    plan = EMPTY_PLAN
    for key, value in annotations.items():
        if not key.startswith(RESERVED_PREFIX):
            continue
        if key not in KNOWN:
            raise ObligationError(
                f"unknown obligation annotation @{key} (known: @{REDACT_ARGUMENTS}, "
                f"@{REDACT_RESULT})",
                key,
            )
        if effect != "permit":
            raise ObligationError(f"@{key} belongs on a permit policy, not on {effect}", key)
        try:
            selectors = parse_selectors(value or "")
        except ObligationError as exc:
            raise ObligationError(f"@{key}: {exc}", key) from None
        part = (
            RedactionPlan(arguments=selectors)
            if key == REDACT_ARGUMENTS
            else RedactionPlan(result=selectors)
        )
        plan = plan.union(part)
    return plan


def union_all(plans: Iterable[RedactionPlan]) -> RedactionPlan:
    """The union of several plans (a decision determined by several permits)."""
    out = EMPTY_PLAN
    for plan in plans:
        out = out.union(plan)
    return out
