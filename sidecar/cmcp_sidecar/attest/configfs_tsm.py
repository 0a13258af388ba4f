"""Reports from the Linux configfs-tsm interface (``/sys/kernel/config/tsm/report``).

One report, as the kernel's ABI (Documentation/ABI/testing/configfs-tsm) defines it::

    mkdir report/<entry>             the kernel creates the entry's attribute files
    read  <entry>/provider           "sev_guest" (AMD SEV-SNP) or "tdx_guest" (Intel TDX)
    write <entry>/privlevel          optional (SEV-SNP VMPL)
    write <entry>/inblob             64 bytes of report data
    read  <entry>/generation         writes so far: detects another writer to this entry
    read  <entry>/outblob            the report (SNP) or quote (TDX), generated now
    read  <entry>/auxblob            SEV-SNP: the certificate table the host supplies (optional)
    read  <entry>/generation         unchanged, or the report belongs to someone else's inblob
    rmdir report/<entry>

Every function here blocks: callers run them in a thread. The legacy ``/dev/sev-guest`` and
``/dev/tdx_guest`` ioctls are not used; a kernel without configfs-tsm (Linux < 6.7, or
``CONFIG_TSM_REPORTS`` off) gets a clear refusal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPORT_DIR = "/sys/kernel/config/tsm/report"
ENV_ROOT = "CMCP_TSM_REPORT_DIR"
INBLOB_SIZE = 64
MAX_BLOB = 1 << 20
ATTRIBUTE_WAIT_SECONDS = 2.0


class TsmError(Exception):
    """A configfs-tsm step failed; ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class TsmReport:
    """What one report entry returned."""

    provider: str
    outblob: bytes
    auxblob: bytes
    generation: int


def report_dir(configured: str | None) -> Path:
    """The report directory: config, else ``$CMCP_TSM_REPORT_DIR``, else the kernel's."""
    return Path(configured or os.environ.get(ENV_ROOT) or REPORT_DIR)


def probe(root: Path, expected_provider: str) -> str | None:
    """None when ``root`` is usable for ``expected_provider``, else the reason it is not.

    A kernel names its provider only inside a report entry, so the probe creates one and
    removes it again (nothing is generated)."""
    if not root.is_dir():
        return f"{root} does not exist (kernel without configfs-tsm, or configfs not mounted)"
    try:
        with _entry(root) as entry:
            provider = _read_text(entry / "provider")
    except TsmError as exc:
        return str(exc)
    if provider != expected_provider:
        return f"configfs-tsm provider is {provider!r}, not {expected_provider!r}"
    return None


def get_report(
    root: Path, inblob: bytes, *, expected_provider: str, privlevel: int | None = None
) -> TsmReport:
    """Generate one report for ``inblob`` (exactly 64 bytes); raises :class:`TsmError`."""
    if len(inblob) != INBLOB_SIZE:
        raise ValueError("inblob must be 64 bytes")
    with _entry(root) as entry:
        provider = _read_text(entry / "provider")
        if provider != expected_provider:
            raise TsmError(
                f"configfs-tsm provider is {provider!r}, not {expected_provider!r}",
                "this is not the TEE the configured attestation provider expects",
            )
        if privlevel is not None:
            _write(entry / "privlevel", str(privlevel).encode())
        _write(entry / "inblob", inblob)
        before = _read_int(entry / "generation")
        outblob = _read(entry / "outblob")
        auxblob = _read_optional(entry / "auxblob")
        after = _read_int(entry / "generation")
    if after != before:
        raise TsmError(
            f"report entry was written by someone else (generation {before} → {after})",
            "another process is using this gateway's configfs-tsm entry; retry",
        )
    if not outblob:
        raise TsmError("the kernel returned an empty report", "check the kernel log (dmesg)")
    return TsmReport(provider, outblob, auxblob, after)


@contextlib.contextmanager
def _entry(root: Path) -> Iterator[Path]:
    entry = root / f"cmcp-{os.getpid()}-{secrets.token_hex(6)}"
    try:
        os.mkdir(entry)
    except OSError as exc:
        raise _os_error(exc, f"cannot create a report entry in {root}") from None
    try:
        _wait_for_attributes(entry)
        yield entry
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(entry)


def _wait_for_attributes(entry: Path) -> None:
    # The kernel creates the attribute files together with the directory; waiting (briefly)
    # for them costs nothing there and keeps user-space stand-ins of the interface honest.
    deadline = time.monotonic() + ATTRIBUTE_WAIT_SECONDS
    while not (entry / "outblob").exists():
        if time.monotonic() > deadline:
            raise TsmError(
                f"{entry} has no outblob attribute: not a configfs-tsm report entry",
                f"check that {entry.parent} is /sys/kernel/config/tsm/report",
            )
        time.sleep(0.002)


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BLOB + 1)
    except OSError as exc:
        raise _os_error(exc, f"cannot read {path.name}") from None
    if len(data) > MAX_BLOB:
        raise TsmError(f"{path.name} is larger than {MAX_BLOB} bytes", "check the TEE driver")
    return data


def _read_optional(path: Path) -> bytes:
    try:
        return _read(path)
    except TsmError:
        if not path.exists():
            return b""
        raise


def _read_text(path: Path) -> str:
    return _read(path).decode("ascii", "replace").strip()


def _read_int(path: Path) -> int:
    text = _read_text(path)
    try:
        return int(text)
    except ValueError:
        raise TsmError(f"{path.name} is not a number: {text!r}", "check the TEE driver") from None


def _write(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise _os_error(exc, f"cannot write {path.name}") from None


def _os_error(exc: OSError, what: str) -> TsmError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = "run the gateway as root or grant it write access to the configfs-tsm report dir"
    elif exc.errno == errno.ENOENT:
        hint = (
            "the kernel lacks configfs-tsm (Linux ≥ 6.7 with CONFIG_TSM_REPORTS) "
            "or the TEE guest driver"
        )
    elif exc.errno == errno.ENXIO:
        hint = "no TEE guest driver is bound (load sev-guest or tdx-guest)"
    elif exc.errno == errno.EBUSY:
        hint = "the TEE is busy; retry"
    else:
        hint = "check the TEE guest driver and the kernel log (dmesg)"
    return TsmError(f"{what}: {reason}", hint)
