"""Verification reports: named checks with a status, and a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import CmcpError

# For a failure named by an error code whose exception carries no hint of its own.
ERROR_HINT = "docs/errors.md explains this code and what to do"


class Status(StrEnum):
    """Outcome of one check. Only ``FAIL`` makes a report rejected."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)  # nosec B105
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


def bytes_mismatch(expected: bytes, found: bytes, *, limit: int = 64) -> str:
    """``expected <hex>, found <hex>`` and where they first differ (for failure details)."""

    def show(b: bytes) -> str:
        return b[:limit].hex() + ("…" if len(b) > limit else "") if b else "(empty)"

    text = f"expected {show(expected)}, found {show(found)}"
    first = next((i for i, (x, y) in enumerate(zip(expected, found, strict=False)) if x != y), None)
    if first is not None:
        return f"{text}; first difference at byte {first}"
    if len(expected) != len(found):
        return f"{text}; {len(found)} bytes where {len(expected)} are expected"
    return text


@dataclass(frozen=True)
class Check:
    """One named check (e.g. ``sev-snp.signature``) and what it found."""

    name: str
    status: Status
    detail: str = ""
    hint: str = ""  # what to do, for failures named by an error code

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name, "status": self.status.value, "detail": self.detail}
        return {**out, "hint": self.hint} if self.hint else out


@dataclass
class Report:
    """The checks run on one subject and the facts learned on the way."""

    subject: str
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """True when at least one check ran and none failed."""
        return bool(self.checks) and all(c.status is not Status.FAIL for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.FAIL]

    def add(self, name: str, ok: bool, detail: str = "", *, failed: str | None = None) -> bool:
        """Record a pass/fail check; returns ``ok`` so callers can chain on it.

        ``failed`` (when given) is the detail used instead of ``detail`` if the check fails:
        it should say what was expected and what was found.
        """
        shown = detail if ok or failed is None else failed
        self.checks.append(Check(name, Status.PASS if ok else Status.FAIL, shown))
        return ok

    def passed(self, name: str, detail: str = "") -> None:
        self.checks.append(Check(name, Status.PASS, detail))

    def fail(self, name: str, detail: str, *, hint: str = "") -> None:
        self.checks.append(Check(name, Status.FAIL, detail, hint))

    def fail_error(self, exc: CmcpError) -> None:
        """A failure named by the error's code, with its message and a hint."""
        self.fail(exc.code, exc.message, hint=exc.hint or ERROR_HINT)

    def warn(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, Status.WARN, detail))

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, Status.SKIP, detail))

    def extend(self, other: Report, prefix: str = "") -> None:
        """Append another report's checks (optionally renamed) and facts."""
        for c in other.checks:
            self.checks.append(Check(prefix + c.name, c.status, c.detail, c.hint))
        self.facts.update(other.facts)

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "verdict": "verified" if self.verified else "rejected",
            "checks": [c.to_json() for c in self.checks],
            "facts": self.facts,
        }

    def render(self) -> str:
        """Human summary: one line per check, then the verdict."""
        marks = {Status.PASS: "ok  ", Status.FAIL: "FAIL", Status.WARN: "warn", Status.SKIP: "skip"}
        lines = [f"{self.subject}"]
        for c in self.checks:
            lines.append(f"  [{marks[c.status]}] {c.name}" + (f": {c.detail}" if c.detail else ""))
        if self.verified:
            lines.append("verified")
        else:
            reasons = "; ".join(f"{c.name}: {c.detail}" for c in self.failures) or "no checks ran"
            hint = next((c.hint for c in self.failures if c.hint), "")
            lines.append(f"rejected: {reasons}" + (f" (hint: {hint})" if hint else ""))
        return "\n".join(lines)
