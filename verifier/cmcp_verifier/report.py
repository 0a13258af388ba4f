"""Verification reports: named checks with a status, and a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Outcome of one check. Only ``FAIL`` makes a report rejected."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)  # nosec B105
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One named check (e.g. ``sev-snp.signature``) and what it found."""

    name: str
    status: Status
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail}


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

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a pass/fail check; returns ``ok`` so callers can chain on it."""
        self.checks.append(Check(name, Status.PASS if ok else Status.FAIL, detail))
        return ok

    def passed(self, name: str, detail: str = "") -> None:
        self.checks.append(Check(name, Status.PASS, detail))

    def fail(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, Status.FAIL, detail))

    def warn(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, Status.WARN, detail))

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, Status.SKIP, detail))

    def extend(self, other: Report, prefix: str = "") -> None:
        """Append another report's checks (optionally renamed) and facts."""
        for c in other.checks:
            self.checks.append(Check(prefix + c.name, c.status, c.detail))
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
            lines.append(f"rejected: {reasons}")
        return "\n".join(lines)
