"""Assembling a runnable gateway from a config: attestation, enforcement, server (fail closed)."""

from __future__ import annotations

from cmcp_verifier.errors import CmcpError

from .config import LoadedConfig
from .server.app import Server


def build_gateway(loaded: LoadedConfig) -> Server:
    """A gateway ready to start, or :class:`CmcpError` when it must not start.

    Without ``CMCP_DEV_MODE=1`` a hardware attestation provider is required; with it the
    software provider is used. Either way the enforcement implementation (policy engine,
    catalog guard, audit log, claims) must be present: the gateway never runs unenforced.
    """
    if not loaded.dev_mode:
        raise CmcpError(
            "no hardware attestation provider is available; refusing to start",
            code="attestation.unavailable",
            hint="run inside a TEE, or set CMCP_DEV_MODE=1 for software attestation (development)",
        )
    raise CmcpError(
        "this build has no enforcement implementation (policy engine, audit log, claims); "
        "refusing to start",
        code="gateway.no_enforcement",
        hint="install a build that includes cmcp_sidecar.enforce",
    )
