"""Why the gateway is refusing to forward: conditions, refusals, and one log line per change.

A *condition* holds gateway-wide until it clears (``attestation.stale``,
``attestation.binding_mismatch``, ``audit.disk_full``, ``audit.io_error`` …): every call is
refused while it does. A *refusal* is one request answered with an error instead of being
forwarded because of a condition or of a per-call failure (``policy.error``,
``arguments.uncanonical``). Both are keyed by the stable error code; ``/readyz`` shows them
(``reasons``, ``refused``), ``/metrics`` exports them (``cmcp_ready``,
``cmcp_not_ready_reason{reason}``, ``cmcp_fail_closed_total{reason}``), and every condition
that starts or clears is logged once as a structured line (``event: fail_closed`` /
``event: recovered``, ``reason``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

log = logging.getLogger("cmcp.fail_closed")


class FailClosed:
    """Current conditions and refusal counts of one gateway."""

    def __init__(self) -> None:
        self.conditions: dict[str, str] = {}  # reason → detail
        self.refused: Counter[str] = Counter()

    def observe(self, conditions: Mapping[str, str]) -> None:
        """The conditions holding now (reason → detail); logs those that started or cleared."""
        for reason, detail in conditions.items():
            if reason not in self.conditions:
                log.error(
                    "fail closed: %s: %s",
                    reason,
                    detail,
                    extra={"event": "fail_closed", "reason": reason, "detail": detail},
                )
        for reason in set(self.conditions) - set(conditions):
            log.info("recovered: %s", reason, extra={"event": "recovered", "reason": reason})
        self.conditions = dict(conditions)

    def refuse(self, reason: str) -> None:
        """Count one request refused for ``reason``."""
        self.refused[reason] += 1
