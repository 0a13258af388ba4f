"""The software provider: development mode only, never a hardware claim.

Evidence type ``software``, platform ``software-only``, no hardware members; the measurement
is the self-measurement of :mod:`.selfmeasure`. Claims resting on it say
``runtime.platform: software-only`` and ``appraisal.status: none``, and a verifier accepts
them only when told to (``cmcp-verify claim --allow-software``). Constructing it without
dev mode (``CMCP_DEV_MODE=1``) raises :class:`AttestationError`.
"""

from __future__ import annotations

import asyncio
import time

from .base import AttestationError, AttestationProvider, Evidence, Probe
from .registry import ProviderContext, register_builtin
from .selfmeasure import PACKAGES, self_measurement

DEV_MODE_HINT = "set CMCP_DEV_MODE=1 for development, or run on TEE hardware"


class SoftwareProvider(AttestationProvider):
    """Self-measured evidence without a hardware root of trust."""

    name = "software"
    evidence_type = "software"
    platform = "software-only"

    def __init__(self, *, dev_mode: bool) -> None:
        if not dev_mode:
            raise AttestationError(
                self.name,
                "software attestation is for development only: set CMCP_DEV_MODE=1",
                code="attestation.dev_mode_required",
                hint=DEV_MODE_HINT,
            )

    async def probe(self) -> Probe:
        return Probe(True, "development mode: self-measurement, no hardware root of trust")

    async def collect(self, report_data: bytes) -> Evidence:
        measured = await asyncio.to_thread(self_measurement)
        return Evidence(
            members={},
            measurement=measured.digest,
            report_data=report_data,
            collected_at=int(time.time()),
            facts={
                "hardware": False,
                "measured": {"packages": list(PACKAGES), "files": measured.files},
            },
        )


def _factory(context: ProviderContext) -> SoftwareProvider:
    return SoftwareProvider(dev_mode=context.dev_mode)


register_builtin(SoftwareProvider.name, _factory)
