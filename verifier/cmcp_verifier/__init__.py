"""cmcp_verifier: offline verification of Confidential MCP claims, audit logs and evidence.

The claim format, canonical JSON, bundle hashing and audit-chain format live here once; the
sidecar and the operator import them. This package depends only on cryptography, rfc8785 and
PyYAML.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from .errors import BundleError, CmcpError, ConfigError, InputError, VerificationError
from .report import Check, Report, Status

__all__ = [
    "BundleError",
    "Check",
    "CmcpError",
    "ConfigError",
    "InputError",
    "Report",
    "Status",
    "VerificationError",
    "__version__",
]
