"""Enforcement modes: what the gateway does with a decision.

=============  ==============================  =========================  =========  ===
mode           deny                            redact                     log        audit
=============  ==============================  =========================  =========  ===
enforcing      not forwarded (JSON-RPC error)  redaction applied          non-allow  all
advisory       forwarded, flagged would_block  not applied, would_redact  non-allow  all
silent         forwarded, flagged would_block  not applied, would_redact  never      all
=============  ==============================  =========================  =========  ===

Advisory and silent modes exist to try a bundle on live traffic without changing it, so they
change nothing the agent or the upstream sees — redaction included; the audit entry records
what enforcing would have done.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cmcp_verifier.errors import ConfigError

from .decision import Decision


class Mode(StrEnum):
    ENFORCING = "enforcing"
    ADVISORY = "advisory"
    SILENT = "silent"

    @property
    def trace_name(self) -> str:
        """The TRACE claim's ``policy.enforcement_mode`` (enforce | advisory | silent)."""
        return "enforce" if self is Mode.ENFORCING else self.value


def parse_mode(value: str) -> Mode:
    """The mode named in configuration; :class:`ConfigError` for anything else."""
    try:
        return Mode(value)
    except ValueError:
        raise ConfigError(
            f"unknown enforcement mode {value!r}",
            code="config.enforcement_mode",
            hint="use enforcing, advisory or silent",
        ) from None


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What to do with one decision under one mode."""

    forward: bool  # send the request upstream
    redact: bool  # apply decision.obligations to arguments and result
    log: bool  # write a decision log line
    audit: bool  # write an audit entry (always: every evaluated request is audited)
    would_block: bool  # a deny that this mode let through
    would_redact: bool  # obligations that this mode did not apply


def apply_mode(decision: Decision, mode: Mode) -> Enforcement:
    """Pure: how ``mode`` enforces ``decision`` (see the module table)."""
    deny = decision.outcome == "deny"
    redact = decision.outcome == "redact"
    if mode is Mode.ENFORCING:
        return Enforcement(not deny, redact, deny or redact, True, False, False)
    return Enforcement(True, False, mode is Mode.ADVISORY and (deny or redact), True, deny, redact)
