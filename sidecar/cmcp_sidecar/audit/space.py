"""Disk space held in reserve ahead of the audit log, so a full disk is seen before it bites.

The writer keeps ``reserve`` bytes allocated past the end of the log with
``fallocate(FALLOC_FL_KEEP_SIZE)`` (the file's size does not change; appends land in blocks
that already belong to it, so they cannot fail with ENOSPC). When the reserve cannot be
renewed, the volume is full: the gateway stops admitting new calls (fail closed) while the
calls already forwarded still have room for their entries. Once space is freed, the next
renewal succeeds and the gateway admits again. File systems without ``fallocate`` simply
get no reserve (a full disk is then found by the failing write, as before).
"""

from __future__ import annotations

import ctypes
import errno
import os

FALLOC_FL_KEEP_SIZE = 0x01
DEFAULT_RESERVE_BYTES = 1 << 20
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    _fallocate.restype = ctypes.c_int


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate ``[offset, offset + length)`` of ``fd`` without changing its size.

    Raises ``OSError`` (ENOSPC when the volume is full, EOPNOTSUPP when unsupported).
    """
    if _fallocate is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    if _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
