"""Policy decisions for the gateway: Cedar engine, redaction, modes, catalog guard.

The proxy's request path calls, per MCP operation:

1. :meth:`CatalogGuard.is_callable` / :meth:`CatalogGuard.facts` (rug-pull defence, tool facts);
2. :meth:`PolicyEngine.decide` with a :class:`PolicyRequest` → :class:`Decision`;
3. :func:`apply_mode` → :class:`Enforcement` (forward? redact? log?);
4. :func:`redact_arguments` before forwarding, :func:`redact_result` before replying;
5. :meth:`SessionFacts.after_result` once a result reached the agent.

Everything here is synchronous CPU work without I/O. See docs/policy.md.
"""

from .catalog_guard import CatalogGuard, Drift, Review, pin_catalog
from .decision import Decision, EvalError
from .engine import PolicyEngine
from .modes import Enforcement, Mode, apply_mode, parse_mode
from .redact import MARKER, redact_arguments, redact_result
from .request import GatewayFacts, PolicyRequest, ToolFacts
from .session_facts import SessionFacts

__all__ = [
    "MARKER",
    "CatalogGuard",
    "Decision",
    "Drift",
    "Enforcement",
    "EvalError",
    "GatewayFacts",
    "Mode",
    "PolicyEngine",
    "PolicyRequest",
    "Review",
    "SessionFacts",
    "ToolFacts",
    "apply_mode",
    "parse_mode",
    "pin_catalog",
    "redact_arguments",
    "redact_result",
]
