"""The ``tdx`` provider: Intel TDX quotes through configfs-tsm.

``inblob`` = binding ‖ 32 zero bytes becomes the TD report's REPORTDATA; the kernel has the
quoting enclave turn the TD report into a quote (``outblob``). Members (the verifier's embedded
form, :mod:`cmcp_verifier.evidence.tdx`): ``quote``; ``event_log`` and ``acpi_table`` — the
CCEL event log and its ACPI table when readable (``/sys/firmware/acpi/tables/data/CCEL`` and
``/sys/firmware/acpi/tables/CCEL``), so a verifier can replay RTMR0-3. Measurement:
``sha384:`` MRTD. Options (``attestation.tdx``): ``report_dir``, ``acpi_dir`` (default
``/sys/firmware/acpi/tables``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcp_verifier.evidence.tdx import PLATFORM
from cmcp_verifier.evidence.tdx_quote import parse_quote

from . import configfs_tsm
from .base import Evidence
from .registry import ProviderContext, register_builtin
from .tsm_base import TsmProvider, option_str

ACPI_DIR = "/sys/firmware/acpi/tables"
MAX_EVENT_LOG = 16 << 20


class TdxProvider(TsmProvider):
    """Intel TDX guest: one quote per collection, plus the CCEL event log."""

    name = "tdx"
    evidence_type = "tdx"
    platform = PLATFORM
    kernel_provider = "tdx_guest"

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.acpi_dir = Path(option_str(self.name, options, "acpi_dir") or ACPI_DIR)

    def evidence(self, report: configfs_tsm.TsmReport, *, collected_at: int) -> Evidence:
        quote = parse_quote(report.outblob)
        members = {"quote": report.outblob}
        event_log = _read_optional(self.acpi_dir / "data" / "CCEL")
        table = _read_optional(self.acpi_dir / "CCEL")
        if event_log is not None:
            members["event_log"] = event_log
            if table is not None:
                members["acpi_table"] = table
        return Evidence(
            members=members,
            measurement="sha384:" + quote.body.mr_td.hex(),
            report_data=quote.body.report_data,
            collected_at=collected_at,
            facts={
                "quote_version": quote.header.version,
                "event_log": event_log is not None,
                "interface": "configfs-tsm",
            },
        )


def _read_optional(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_EVENT_LOG + 1)
    except OSError:
        return None  # not exposed (older kernel, no permission): the quote stands alone
    return data if 0 < len(data) <= MAX_EVENT_LOG else None


def _factory(context: ProviderContext) -> TdxProvider:
    return TdxProvider(context.options)


register_builtin(TdxProvider.name, _factory)
