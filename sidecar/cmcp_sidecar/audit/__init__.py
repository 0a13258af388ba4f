"""The durable, hash-chained audit log of the gateway.

Public API: :class:`AuditLog` (open/append/export/close; see :mod:`.log`), :class:`Appended`,
the typed entry builders of :mod:`.entries` (:class:`CallEntry`, :class:`OperationEntry`,
:class:`FaultEntry`, :class:`LifecycleEntry`, :func:`json_digest`), and the errors
:class:`AuditUnavailable` (storage cannot take entries; stable ``code``) and
:class:`AuditCorrupt` (the existing chain does not verify). The line format is
:mod:`cmcp_verifier.audit`; field meanings are in docs/formats.md.
"""

from .entries import CallEntry, FaultEntry, LifecycleEntry, OperationEntry, json_digest
from .errors import AuditCorrupt, AuditUnavailable
from .log import LOG_FILE, Appended, AuditLog, FsyncMode

__all__ = [
    "LOG_FILE",
    "Appended",
    "AuditCorrupt",
    "AuditLog",
    "AuditUnavailable",
    "CallEntry",
    "FaultEntry",
    "FsyncMode",
    "LifecycleEntry",
    "OperationEntry",
    "json_digest",
]
