"""The attestation provider interface: what every evidence source implements.

A provider turns a 32-byte binding digest (:func:`cmcp_verifier.binding.binding_digest`,
passed as ``report_data``) into :class:`Evidence` that a verifier can tie to hardware::

    class SnpProvider(AttestationProvider):
        name = "sev-snp"              # the attestation.provider config value
        evidence_type = "sev-snp"     # gateway.attestation.type in claims
        platform = "amd-sev-snp"      # TRACE runtime.platform (PLATFORM_BY_EVIDENCE)

        async def probe(self) -> Probe: ...        # cheap: is the device/interface there?
        async def collect(self, report_data: bytes) -> Evidence: ...

Rules for implementers:

* Never block the event loop: device I/O and file reads go through ``asyncio.to_thread``,
  tools through ``asyncio.create_subprocess_exec``. Collections are serialised by the
  :class:`~cmcp_sidecar.attest.attestor.Attestor`, which also applies a timeout.
* ``report_data`` is the binding digest. SEV-SNP and TDX put
  :func:`cmcp_verifier.binding.report_data` (binding ‖ 32 zero bytes) in the report; TPM
  quotes use the binding as qualifying data. :attr:`Evidence.report_data` returns what the
  evidence actually carries, so the attestor can check it before anything is signed.
* ``members`` are the raw evidence parts named as the verifier's evidence type expects in
  ``verify_embedded`` (claims carry them base64url in ``gateway.attestation.evidence``). A
  member may itself be a mapping of raw parts: accompanying evidence such as ``gpu`` (an
  object of base64url members in the claim).
* Providers that can record the policy bundle in the TEE's own measurements (the TPM's NV
  extend index) implement :meth:`AttestationProvider.measure_bundle`; the attestor calls it
  before every collection, under the same lock.
* Failures raise :class:`AttestationError` naming the provider, what went wrong and the fix;
  never return made-up evidence.

Providers are registered in :mod:`cmcp_sidecar.attest.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cmcp_verifier.errors import CmcpError

EVIDENCE_TYPES = ("software", "sev-snp", "tdx", "tpm", "azure-cvm", "coco", "gpu-cc")


class AttestationError(CmcpError):
    """A provider or the attestor failed; the message starts with the provider's name."""

    code = "attestation.failed"

    def __init__(
        self, provider: str, message: str, *, hint: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(f"attestation provider {provider!r}: {message}", hint=hint, code=code)
        self.provider = provider
        self.detail = message  # without the provider prefix


@dataclass(frozen=True)
class Probe:
    """Whether a provider can work here, and why (shown when ``auto`` finds nothing)."""

    available: bool
    reason: str
    hint: str | None = None  # the fix, when the probe knows one


Members = Mapping[str, bytes | Mapping[str, bytes]]


@dataclass(frozen=True)
class Evidence:
    """One collection: raw parts, the launch measurement, and what it carries as report data."""

    members: Members
    measurement: str  # sha256:<hex> or sha384:<hex>, as TRACE runtime.measurement
    report_data: bytes  # the report/qualifying data inside the evidence (carries the binding)
    collected_at: int  # Unix seconds
    facts: Mapping[str, Any] = field(default_factory=dict)  # JSON values, no floats


class AttestationProvider(ABC):
    """Base class of evidence sources; see the module docs for the rules."""

    name: ClassVar[str]
    # Both may be set per instance: coco reports the underlying TEE's platform, gpu-cc the
    # evidence type and platform of the CPU evidence it accompanies.
    evidence_type: str
    platform: str

    @abstractmethod
    async def probe(self) -> Probe:
        """Cheaply check whether this provider can collect evidence here."""

    async def available(self) -> bool:
        """``probe().available``; used by ``attestation.provider: auto``."""
        return (await self.probe()).available

    @abstractmethod
    async def collect(self, report_data: bytes) -> Evidence:
        """Collect evidence carrying the 32-byte binding digest ``report_data``."""

    async def measure_bundle(self, bundle_hash: str) -> None:  # noqa: B027  (optional hook)
        """Record ``bundle_hash`` in the TEE's measurements before evidence for it is collected.

        Called by the attestor before every collection (cheap when unchanged); the default
        records nothing."""

    async def aclose(self) -> None:  # noqa: B027  (optional hook, empty by default)
        """Release devices or connections; called once at shutdown."""
