"""What the SEV-SNP and TDX providers share: a configfs-tsm report with the binding inside.

Both put :func:`cmcp_verifier.binding.report_data` (binding ‖ 32 zero bytes) into ``inblob``
and differ only in the kernel provider they expect, the members they return and how they read
the report. Options (``attestation.sev-snp`` / ``attestation.tdx``): ``report_dir`` — the
configfs-tsm report directory (default ``/sys/kernel/config/tsm/report``; the environment
variable ``CMCP_TSM_REPORT_DIR`` overrides the default, so tests can point it at a stand-in).
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcp_verifier.binding import report_data
from cmcp_verifier.errors import CmcpError

from . import configfs_tsm
from .base import AttestationError, AttestationProvider, Evidence, Probe


def option_str(name: str, options: Mapping[str, Any], key: str) -> str | None:
    """A string option, or AttestationError naming the key."""
    value = options.get(key)
    if value is None or isinstance(value, str):
        return value
    raise AttestationError(
        name, f"attestation.{name}.{key} must be a string", code="attestation.config"
    )


class TsmProvider(AttestationProvider):
    """Evidence from one configfs-tsm report; subclasses say which TEE and what it returned."""

    kernel_provider: str  # configfs-tsm "provider": sev_guest | tdx_guest

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.root: Path = configfs_tsm.report_dir(option_str(self.name, options, "report_dir"))

    async def probe(self) -> Probe:
        reason = await asyncio.to_thread(configfs_tsm.probe, self.root, self.kernel_provider)
        if reason is not None:
            return Probe(False, reason)
        return Probe(True, f"configfs-tsm at {self.root}, provider {self.kernel_provider}")

    async def collect(self, report_data_: bytes) -> Evidence:
        return await asyncio.to_thread(self._collect, report_data_)

    def _collect(self, binding: bytes) -> Evidence:
        try:
            report = configfs_tsm.get_report(
                self.root,
                report_data(binding),
                expected_provider=self.kernel_provider,
                privlevel=self.privlevel(),
            )
        except configfs_tsm.TsmError as exc:
            raise AttestationError(
                self.name, str(exc), hint=exc.hint, code="attestation.device"
            ) from None
        try:
            return self.evidence(report, collected_at=int(time.time()))
        except CmcpError as exc:  # the verifier's parser refused the kernel's report
            raise AttestationError(
                self.name,
                f"the kernel returned a malformed report: {exc.message}",
                hint="check the TEE guest driver and firmware",
                code="attestation.malformed",
            ) from None

    def privlevel(self) -> int | None:
        """The ``privlevel`` to write (SEV-SNP VMPL), or None."""
        return None

    @abstractmethod
    def evidence(self, report: configfs_tsm.TsmReport, *, collected_at: int) -> Evidence:
        """Evidence from the kernel's report (raise CmcpError when it is malformed)."""
