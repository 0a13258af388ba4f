"""Which providers exist, and choosing one from ``attestation.provider``.

Adding a hardware provider: write ``attest/<name>.py`` with an
:class:`~cmcp_sidecar.attest.base.AttestationProvider` subclass and a factory, call
``register_builtin("<name>", factory)`` at the bottom of that module, and add the module to
``attest/_all.py``. A factory receives a :class:`ProviderContext` (dev mode and the
provider's own config section, e.g. ``attestation.tpm``) and may raise
:class:`AttestationError` when its configuration is unusable.

Selection (:func:`select_provider`): a named provider is used or the gateway does not start
— no fallback; ``auto`` probes SEV-SNP, then TDX, then TPM and takes the first available;
only in dev mode does ``auto`` settle for ``software`` when none is, and it says so in the
log. ``software`` itself requires dev mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import EVIDENCE_TYPES, AttestationError, AttestationProvider, Probe

AUTO_ORDER = ("sev-snp", "tdx", "tpm")
PROVIDER_CHOICES = ("auto", *EVIDENCE_TYPES)
log = logging.getLogger("cmcp.attest")


@dataclass(frozen=True)
class ProviderContext:
    """What a factory gets: dev mode, ``attestation.<provider>`` options, and every provider's
    options (``gpu-cc`` builds the CPU provider it accompanies) with the registry."""

    dev_mode: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    all_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    registry: ProviderRegistry | None = None


ProviderFactory = Callable[[ProviderContext], AttestationProvider]


class ProviderRegistry:
    """Provider names mapped to factories."""

    def __init__(self, factories: Mapping[str, ProviderFactory] | None = None) -> None:
        self._factories: dict[str, ProviderFactory] = dict(factories or {})

    def register(self, name: str, factory: ProviderFactory) -> None:
        """Add (or replace) the factory for ``name``."""
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, context: ProviderContext) -> AttestationProvider:
        """Construct provider ``name``; unknown or absent providers raise AttestationError."""
        factory = self._factories.get(name)
        if factory is None:
            if name in EVIDENCE_TYPES:
                raise AttestationError(
                    name,
                    "is not available in this build",
                    code="attestation.provider_missing",
                    hint=f"available providers: {', '.join(self.names()) or 'none'}",
                )
            raise AttestationError(
                name,
                "is not a known provider",
                code="attestation.provider_unknown",
                hint=f"attestation.provider must be one of {', '.join(PROVIDER_CHOICES)}",
            )
        return factory(context)


_BUILTIN = ProviderRegistry()


def register_builtin(name: str, factory: ProviderFactory) -> None:
    """Register a provider shipped with the gateway (called by the provider's module)."""
    _BUILTIN.register(name, factory)


def default_registry() -> ProviderRegistry:
    """A copy of the registry holding every built-in provider."""
    from . import _all  # noqa: F401  (import for side effect: registration)

    return ProviderRegistry(_BUILTIN._factories)


async def select_provider(
    config_provider: str,
    dev_mode: bool,
    registry: ProviderRegistry | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> AttestationProvider:
    """The provider ``attestation.provider`` asks for, or :class:`AttestationError`.

    ``options`` maps provider names to their config sections (``{"tpm": {"tcti": …}}``).
    """
    registry = registry or default_registry()
    options = options or {}

    def context(name: str) -> ProviderContext:
        return ProviderContext(
            dev_mode=dev_mode,
            options=options.get(name, {}),
            all_options=options,
            registry=registry,
        )

    if config_provider != "auto":
        provider = registry.create(config_provider, context(config_provider))
        probe = await _probe(provider)
        if not probe.available:
            await provider.aclose()
            fix = f"{probe.hint}; or" if probe.hint else "fix the cause above or"
            raise AttestationError(
                config_provider,
                f"is not usable here: {probe.reason}",
                code="attestation.unavailable",
                hint=f"{fix} choose another attestation.provider; "
                "the gateway never falls back to an unattested mode",
            )
        return provider
    return await _auto(registry, context, dev_mode)


async def _auto(
    registry: ProviderRegistry, context: Callable[[str], ProviderContext], dev_mode: bool
) -> AttestationProvider:
    tried: list[str] = []
    for name in AUTO_ORDER:
        if name not in registry.names():
            tried.append(f"{name}: not in this build")
            continue
        try:
            provider = registry.create(name, context(name))
        except AttestationError as exc:
            tried.append(f"{name}: {exc.detail}")
            continue
        probe = await _probe(provider)
        if probe.available:
            log.info("attestation provider auto-selected: %s (%s)", name, probe.reason)
            return provider
        await provider.aclose()
        tried.append(f"{name}: {probe.reason}")
    if dev_mode:
        log.warning(
            "no hardware attestation found (%s); development mode: using software attestation, "
            "claims will say software-only",
            "; ".join(tried),
        )
        return registry.create("software", context("software"))
    raise AttestationError(
        "auto",
        "found no TEE hardware: " + "; ".join(tried),
        code="attestation.no_provider",
        hint="run on SEV-SNP, TDX or TPM hardware, name a provider in attestation.provider, "
        "or set CMCP_DEV_MODE=1 for development (software attestation)",
    )


async def _probe(provider: AttestationProvider) -> Probe:
    try:
        return await provider.probe()
    except AttestationError as exc:
        return Probe(False, exc.detail, exc.hint)
    except Exception as exc:  # a probe must not crash selection; report why instead
        return Probe(False, f"probe failed: {type(exc).__name__}: {exc}")
