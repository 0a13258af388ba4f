"""The ``sev-snp`` provider: AMD SEV-SNP attestation reports through configfs-tsm.

``inblob`` = binding ‖ 32 zero bytes becomes REPORT_DATA. Members (the verifier's embedded
form, :mod:`cmcp_verifier.evidence.sevsnp`): ``report`` — the 1184-byte ATTESTATION_REPORT
(``outblob``); ``certs`` — the certificate table (``auxblob``: VCEK/VLEK, ASK, ARK) when the
host supplies one (extended guest request); without it a verifier needs the VCEK from AMD's
KDS. Measurement: ``sha384:`` MEASUREMENT. Options (``attestation.sev-snp``): ``report_dir``,
``privlevel`` (the VMPL to request, 0-3; default: the kernel's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cmcp_verifier.evidence.sevsnp import PLATFORM, SnpReport

from . import configfs_tsm
from .base import AttestationError, Evidence
from .registry import ProviderContext, register_builtin
from .tsm_base import TsmProvider


class SevSnpProvider(TsmProvider):
    """AMD SEV-SNP guest: one report per collection."""

    name = "sev-snp"
    evidence_type = "sev-snp"
    platform = PLATFORM
    kernel_provider = "sev_guest"

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        level = options.get("privlevel")
        if level is not None and (isinstance(level, bool) or level not in range(4)):
            raise AttestationError(
                self.name, "attestation.sev-snp.privlevel must be 0-3", code="attestation.config"
            )
        self._privlevel: int | None = level

    def privlevel(self) -> int | None:
        return self._privlevel

    def evidence(self, report: configfs_tsm.TsmReport, *, collected_at: int) -> Evidence:
        snp = SnpReport.parse(report.outblob)
        members = {"report": report.outblob}
        if report.auxblob:
            members["certs"] = report.auxblob
        return Evidence(
            members=members,
            measurement="sha384:" + snp.measurement.hex(),
            report_data=snp.report_data,
            collected_at=collected_at,
            facts={
                "report_version": snp.version,
                "vmpl": snp.vmpl,
                "signing_key": snp.signing_key,
                "certificate_table": bool(report.auxblob),
                "interface": "configfs-tsm",
            },
        )


def _factory(context: ProviderContext) -> SevSnpProvider:
    return SevSnpProvider(context.options)


register_builtin(SevSnpProvider.name, _factory)
