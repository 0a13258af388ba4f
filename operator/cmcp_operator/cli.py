"""``cmcp-operator``: run the operator (kopf, programmatically) with its settings.

Scope: ``--all-namespaces`` (default) or ``--namespace NS`` (repeatable). With
``--leader-election`` (the default in a pod) only the holder of a Lease acts; a replica that
loses the Lease exits with status 3 so it restarts as a follower. Metrics on
``--metrics-port`` (Prometheus), ``/healthz`` and ``/readyz`` on ``--health-port``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import kopf
from prometheus_client import start_http_server

from cmcp_verifier.errors import CmcpError

from .health import Health
from .kube import Credentials, Kube, load_credentials
from .leader import LeaseElector
from .placement import DEFAULT_TEE_LABELS, load_tee_labels
from .runtime import registry
from .state import Settings

EXIT_LOST_LEASE = 3
log = logging.getLogger("cmcp.operator")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmcp-operator", description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", help="watch only this namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all (default)")
    p.add_argument(
        "--sidecar-image",
        default=os.environ.get("CMCP_SIDECAR_IMAGE", Settings.sidecar_image),
        help="sidecar image when an McpGateway names none (env CMCP_SIDECAR_IMAGE)",
    )
    p.add_argument(
        "--default-enforcement-mode",
        choices=["enforcing", "advisory", "silent"],
        default=os.environ.get("CMCP_DEFAULT_ENFORCEMENT_MODE", Settings.default_enforcement_mode),
        help="enforcement mode of McpGateways that name none (env CMCP_DEFAULT_ENFORCEMENT_MODE)",
    )
    p.add_argument("--placement-labels", type=Path, help="YAML: TEE type → node label sets")
    p.add_argument("--workers", type=int, default=Settings.workers)
    p.add_argument("--resync-seconds", type=float, default=Settings.resync_seconds)
    p.add_argument("--metrics-port", type=int, default=9090, help="0 disables")
    p.add_argument("--health-port", type=int, default=8081, help="0 disables")
    p.add_argument("--bind", default="0.0.0.0", help="address of the metrics/health servers")  # noqa: S104  # nosec B104
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold a Lease before acting (default: on in a pod, off elsewhere)",
    )
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "cmcp-system"))
    p.add_argument("--lease-name", default="cmcp-operator")
    p.add_argument("--lease-seconds", type=int, default=15, help="lease duration")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname())
    p.add_argument("--log-format", choices=["auto", "json", "text"], default="auto")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    return p


def _configure_logging(fmt: str, level: str) -> None:
    json_logs = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    kopf.configure(
        verbose=level == "debug",
        quiet=level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if level != "debug":  # one line per handled watch event otherwise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


async def _run(args: argparse.Namespace) -> int:
    creds = load_credentials(args.kubeconfig, args.context)
    tee = load_tee_labels(args.placement_labels) if args.placement_labels else DEFAULT_TEE_LABELS
    settings = Settings(
        sidecar_image=args.sidecar_image,
        default_enforcement_mode=args.default_enforcement_mode,
        tee_labels=tee,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = Health()
    if args.health_port:
        await health.start(args.bind, args.health_port)
    try:
        return await _lead(args, settings, creds, stop, health)
    finally:
        health.role = "stopping"
        await health.stop()


async def _lead(
    args: argparse.Namespace,
    settings: Settings,
    creds: Credentials,
    stop: asyncio.Event,
    health: Health,
) -> int:
    """Wait for the Lease (when electing), run kopf while it is held."""
    elect = args.leader_election
    if elect is None:
        elect = "KUBERNETES_SERVICE_HOST" in os.environ and args.kubeconfig is None
    elector = None
    lost = asyncio.Event()
    hold = None
    if elect:
        health.role = "follower"
        elector = LeaseElector(
            Kube(creds, attempts=2, timeout=5),
            args.lease_namespace,
            args.lease_name,
            args.identity,
            lease_seconds=args.lease_seconds,
            renew_seconds=max(1.0, args.lease_seconds / 3),
        )
        acquired = asyncio.create_task(elector.acquire())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({acquired, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquired.done():
            acquired.cancel()
            await elector.client.close()
            return 0

        async def keep() -> None:
            await elector.hold()
            lost.set()
            stop.set()

        hold = asyncio.create_task(keep())
    health.role = "leader"
    try:
        await kopf.operator(
            registry=registry(settings, creds, stop),
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            stop_flag=stop,
            ready_flag=health.kopf_ready,
            standalone=True,
        )
    finally:
        if hold is not None:
            hold.cancel()
        if elector is not None:
            if not lost.is_set():
                await elector.release()
            await elector.client.close()
    if lost.is_set():
        log.error("leadership lost; exiting so this replica restarts as a follower")
        return EXIT_LOST_LEASE
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.log_format, args.log_level)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind)
    try:
        return asyncio.run(_run(args))
    except CmcpError as exc:
        print(exc.render(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
