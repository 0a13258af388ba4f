"""Errors of the audit log: storage that cannot take entries, and chains that do not verify.

:class:`AuditUnavailable` carries a stable ``code`` per cause (``audit.disk_full``,
``audit.read_only``, ``audit.permission_denied``, ``audit.file_removed``, ``audit.io_error``,
``audit.storage_error``, ``audit.locked``, ``audit.closed``); the gateway fails closed on it and
shows ``code`` and ``message`` in ``/readyz``. :class:`AuditCorrupt` means the existing chain
does not verify: the gateway refuses to start.
"""

from __future__ import annotations

import errno

from cmcp_verifier.errors import CmcpError

_BY_ERRNO = {
    errno.ENOSPC: ("audit.disk_full", "the audit storage is full", "free space on the volume"),
    errno.EDQUOT: ("audit.disk_full", "the audit storage quota is exhausted", "raise the quota"),
    errno.EROFS: (
        "audit.read_only",
        "the audit storage is read-only",
        "mount the audit volume read-write",
    ),
    errno.EACCES: (
        "audit.permission_denied",
        "the gateway may not write the audit storage",
        "give the gateway's user write access to audit.path",
    ),
    errno.EPERM: (
        "audit.permission_denied",
        "the gateway may not write the audit storage",
        "check ownership, mode and immutable attributes of audit.path",
    ),
    errno.EIO: ("audit.io_error", "the audit storage reported an I/O error", "check the device"),
}


class AuditUnavailable(CmcpError):
    """The audit log cannot accept entries; every pending and later append gets this."""

    code = "audit.unavailable"

    def again(self) -> AuditUnavailable:
        """A fresh copy for another caller (one instance raised in many tasks tangles
        tracebacks)."""
        return AuditUnavailable(self.message, code=self.code, hint=self.hint)


class AuditCorrupt(CmcpError):
    """The existing chain does not verify; the log refuses to open (fail closed)."""

    code = "audit.corrupt"


def storage_error(exc: OSError, where: str) -> AuditUnavailable:
    """Map an ``OSError`` from audit storage to a typed error with a stable code."""
    code, what, hint = _BY_ERRNO.get(
        exc.errno or 0,
        ("audit.storage_error", "the audit storage failed", "check the audit volume"),
    )
    detail = exc.strerror or str(exc)
    return AuditUnavailable(f"{what}: {where}: {detail}", code=code, hint=hint)
