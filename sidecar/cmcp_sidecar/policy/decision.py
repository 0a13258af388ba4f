"""The outcome of a policy decision and its audit form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from cmcp_verifier.obligations import EMPTY_PLAN, RedactionPlan

Outcome = Literal["allow", "deny", "redact"]
_POLICY_ERROR_RE = re.compile(r"^error while evaluating policy `([^`]+)`: (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class EvalError:
    """A Cedar evaluation error: the policy it happened in (None: the request) and why."""

    policy_id: str | None
    message: str

    @classmethod
    def from_cedar(cls, text: str) -> EvalError:
        match = _POLICY_ERROR_RE.match(text)
        return cls(match.group(1), match.group(2)) if match else cls(None, text)

    def __str__(self) -> str:
        return f"{self.policy_id}: {self.message}" if self.policy_id else self.message


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow, deny or redact, with the policies that determined it.

    ``reason`` says why: ``permit`` (a permit matched, no forbid did), ``forbid`` (a forbid
    matched), ``no_permit`` (nothing matched: Cedar's default deny), ``error`` (evaluation
    failed: denied, fail closed), or a gateway reason such as ``catalog_drift`` for decisions
    made before Cedar (:meth:`gateway_deny`). ``obligations`` is the redaction plan of the
    determining permits (non-empty exactly when the outcome is ``redact``).
    """

    outcome: Outcome
    reason: str
    policy_ids: tuple[str, ...] = ()
    obligations: RedactionPlan = EMPTY_PLAN
    errors: tuple[EvalError, ...] = ()
    bundle_hash: str = ""

    @property
    def denied(self) -> bool:
        return self.outcome == "deny"

    @classmethod
    def gateway_deny(cls, reason: str, bundle_hash: str = "") -> Decision:
        """A deny the gateway decides itself (unknown tool, catalog drift, bad request)."""
        return cls("deny", reason, bundle_hash=bundle_hash)

    def to_audit(self) -> dict[str, Any]:
        """The decision for an audit entry: ids and selectors only, never argument values.

        Cedar's error messages can quote argument values, so only the ids of the policies
        that failed are recorded (``"request"`` when the request itself could not be built).
        """
        out: dict[str, Any] = {
            "decision": self.outcome,
            "reason": self.reason,
            "policy_ids": list(self.policy_ids),
            "bundle_hash": self.bundle_hash,
        }
        if self.errors:
            out["errors"] = sorted({e.policy_id or "request" for e in self.errors})
        if self.obligations:
            out["redact"] = self.obligations.to_json()
        return out
