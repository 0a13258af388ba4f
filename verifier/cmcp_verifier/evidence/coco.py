"""Evidence from a Confidential Containers pod VM's attestation agent (evidence type ``coco``).

Inside a CoCo pod the gateway asks the guest's attestation agent (guest-components
``api-server-rest``: ``GET /aa/evidence?runtime_data=<text>``) for evidence. The agent hands
the UTF-8 bytes of the ``runtime_data`` text, zero padded to 64, to the TEE as report data
(it neither hashes nor decodes them). The gateway sends the 64 hex digits of its binding
digest, so REPORT_DATA is the ASCII hex of the binding
(:func:`cmcp_verifier.binding.hex_report_data`; the claim verifier compares that form for this
type).

The evidence is the underlying TEE's; the embedded form is that TEE's, recognised by its
required member: ``report`` → ``sev-snp`` (:mod:`.sevsnp`), ``quote`` → ``tdx`` (:mod:`.tdx`).
The report's platform (``amd-sev-snp`` / ``intel-tdx``) is the claim's ``runtime.platform``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError
from . import EvidencePolicy, EvidenceReport, evidence_types, register

NAME = "coco"
UNDERLYING = {"report": "sev-snp", "quote": "tdx"}


def underlying_type(evidence: dict[str, Any]) -> str:
    """``sev-snp`` or ``tdx``, from the members of CoCo evidence."""
    kinds = {UNDERLYING[m] for m in UNDERLYING if m in evidence}
    if len(kinds) != 1:
        raise InputError(
            "coco evidence must hold either a SEV-SNP 'report' or a TDX 'quote'",
            code="coco.embedded",
        )
    return kinds.pop()


class Coco:
    """``coco``: claims only (the CLI verifies the underlying evidence with its own type)."""

    name = NAME

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """No files of its own: use ``--type sev-snp`` or ``--type tdx``."""

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        raise InputError(
            "coco evidence is SEV-SNP or TDX evidence: verify it with --type sev-snp or --type tdx",
            code="evidence.usage",
        )

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        kind = underlying_type(evidence)
        report = evidence_types()[kind].verify_embedded(evidence, policy)
        report.facts["coco"] = {"underlying": kind, "report_data": "hex of the binding digest"}
        return report


register(Coco())
