"""Attestation: the signing identity, evidence providers, and fresh bound evidence.

Startup, in the gateway::

    identity = SigningIdentity.generate()                       # in memory only
    provider = await select_provider(cfg.provider, dev_mode, options=cfg.provider_options)
    attestor = Attestor(provider, identity, bundle_hash=…, catalog_hash=…,
                        validity_seconds=cfg.validity_seconds,
                        staleness_policy=cfg.staleness_policy,
                        expected_measurement=cfg.expected_measurement)
    await attestor.start()       # AttestationError → refuse to start

Modules: :mod:`.base` (provider interface, :class:`Evidence`, :class:`AttestationError`),
:mod:`.registry` (registration and ``auto`` selection), :mod:`.identity`, :mod:`.attestor`,
:mod:`.software` (dev mode only), :mod:`.selfmeasure`; hardware providers: :mod:`.tpm` (with
:mod:`.tpm_device`), :mod:`.sevsnp` and :mod:`.tdx` (configfs-tsm: :mod:`.configfs_tsm`,
:mod:`.tsm_base`), :mod:`.azure`, :mod:`.coco`, :mod:`.gpu`. See docs/attestation.md.
"""

from .attestor import AttestationBusy, AttestationStatus, Attestor, BoundEvidence, StalenessPolicy
from .base import EVIDENCE_TYPES, AttestationError, AttestationProvider, Evidence, Probe
from .identity import SigningIdentity
from .registry import (
    AUTO_ORDER,
    PROVIDER_CHOICES,
    ProviderContext,
    ProviderRegistry,
    default_registry,
    register_builtin,
    select_provider,
)

__all__ = [
    "AUTO_ORDER",
    "EVIDENCE_TYPES",
    "PROVIDER_CHOICES",
    "AttestationBusy",
    "AttestationError",
    "AttestationProvider",
    "AttestationStatus",
    "Attestor",
    "BoundEvidence",
    "Evidence",
    "Probe",
    "ProviderContext",
    "ProviderRegistry",
    "SigningIdentity",
    "StalenessPolicy",
    "default_registry",
    "register_builtin",
    "select_provider",
]
