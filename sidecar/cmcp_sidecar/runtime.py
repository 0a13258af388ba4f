"""Assembling and running a gateway from a config: attestation first, fail closed.

Start-up order: the attestation provider is selected (``CMCP_DEV_MODE=1`` allows the software
one; without it and without hardware the gateway refuses to start), then the enforcement
implementation (policy bundle, catalog, audit log, attestor, claims) is built, then the
server starts. Nothing is served before every piece is in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from cmcp_verifier.errors import CmcpError

from .attest import select_provider
from .config import LoadedConfig
from .server.app import Server
from .stallwatch import StallWatch

log = logging.getLogger(__name__)


async def run(loaded: LoadedConfig) -> None:
    """Start the gateway and serve until SIGTERM/SIGINT (SIGHUP re-reads credentials)."""
    c = loaded.config.attestation
    provider = await select_provider(c.provider, loaded.dev_mode, options=loaded.provider_options())
    try:
        from . import enforce
    except ImportError:
        await provider.aclose()
        raise CmcpError(
            "this build has no enforcement implementation (policy engine, catalog guard); "
            "refusing to start",
            code="gateway.no_enforcement",
            hint="install a build that includes cmcp_sidecar.policy and cmcp_sidecar.enforce",
        ) from None
    async with enforce.Enforcement.open(loaded, provider) as enforcement:
        server = Server(
            enforcement.gateway(),
            loaded.config.listen_host,
            loaded.config.listen_port,
        )
        await serve_until_stopped(server)


async def serve_until_stopped(server: Server) -> None:
    """Run ``server`` until SIGTERM/SIGINT; SIGHUP re-reads upstream credentials. A watchdog
    thread names what holds the event loop should it stop turning (:mod:`.stallwatch`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.gateway.reload_credentials)
    await server.start()
    log.info(
        "gateway listening",
        extra={"url": server.url, "event_loop": type(loop).__module__.split(".")[0]},
    )
    watch = StallWatch(loop, on_stall=server.gateway.metrics.loop_stalls.inc)
    watch.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        watch.stop()
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
