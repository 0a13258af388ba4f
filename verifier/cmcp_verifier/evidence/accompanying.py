"""Evidence that accompanies a claim's CPU evidence: an NVIDIA GPU in confidential-computing
mode (``gateway.attestation.evidence.gpu``).

The ``gpu`` member is an object in the embedded form of evidence type ``gpu-cc`` (``report``,
``certs``, optional RIMs). The GPU cannot carry the binding in report data of its own; the
gateway asks for its SPDM measurements with the 32-byte binding digest as the request nonce,
so the check is: the ``gpu-cc`` verification passes and its nonce equals the binding digest
the CPU evidence carries (``nonce``).
"""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import InputError
from . import EvidencePolicy, EvidenceReport, evidence_types

GPU_TYPE = "gpu-cc"


def verify_accompanying_gpu(
    gpu: dict[str, Any], binding: bytes, policy: EvidencePolicy
) -> EvidenceReport:
    """Verify accompanying GPU evidence and that its SPDM nonce is ``binding``."""
    kind = evidence_types().get(GPU_TYPE)
    if kind is None:
        raise InputError(
            "this verifier cannot check NVIDIA GPU evidence (type gpu-cc missing)",
            code="gpu.unsupported",
        )
    sub = kind.verify_embedded(gpu, policy)
    nonce = sub.report_data
    sub.add(
        "nonce",
        nonce is not None and hmac.compare_digest(nonce, binding),
        "the GPU's SPDM request nonce is the claim's binding digest"
        if nonce is not None and hmac.compare_digest(nonce, binding)
        else "the GPU evidence is not bound to this claim (SPDM nonce ≠ binding digest)",
    )
    return sub
