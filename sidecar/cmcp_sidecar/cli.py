"""``cmcp``: start the gateway, validate its config and bundles, pin an upstream's catalog.

Exit status: 0 success, 1 failure (invalid config or bundle, hash mismatch, refused start,
unreachable upstream), 2 usage error. Errors are one line ``error[code]: message`` plus a
hint; ``-o json`` prints structured output where there is any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from cmcp_verifier.bundle import read_bundle_dir
from cmcp_verifier.catalog import load_catalog
from cmcp_verifier.cedar_bundle import load_bundle
from cmcp_verifier.errors import CmcpError, ConfigError, InputError

from . import __version__
from .config import LoadedConfig, UpstreamConfig, load_config, parse_header_lines
from .policy.catalog_guard import pin_catalog

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error[usage]: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cmcp", description="Confidential MCP gateway (sidecar)")
    parser.add_argument("--version", action="version", version=f"cmcp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    start = sub.add_parser("start", help="run the gateway")
    start.add_argument("--config", required=True, metavar="PATH")

    check = sub.add_parser("validate-config", help="validate a config file without starting")
    check.add_argument("--config", required=True, metavar="PATH")
    _output(check)

    bundle = sub.add_parser("validate-bundle", help="validate a policy bundle and check its hash")
    bundle.add_argument("--bundle-path", required=True, metavar="PATH")
    bundle.add_argument("--expected-hash", required=True, metavar="sha256:HEX")
    _output(bundle)

    catalog = sub.add_parser("catalog", help="tool catalog commands")
    csub = catalog.add_subparsers(dest="catalog_command", required=True, parser_class=_Parser)
    pin = csub.add_parser("pin", help="print a catalog approving an upstream's current tools")
    pin.add_argument("--upstream", required=True, metavar="URL")
    pin.add_argument("--name", metavar="NAME", help="the upstream's name in the gateway config")
    creds = pin.add_mutually_exclusive_group()
    creds.add_argument("--header", action="append", default=[], metavar="'K: V'")
    creds.add_argument("--headers-from-file", metavar="FILE")
    pin.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "start":
            return cmd_start(args)
        if args.command == "validate-config":
            return cmd_validate_config(args)
        if args.command == "validate-bundle":
            return cmd_validate_bundle(args)
        return cmd_catalog_pin(args)
    except CmcpError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL


# -- validate-config -----------------------------------------------------------------------


def config_summary(loaded: LoadedConfig) -> dict[str, Any]:
    """What validate-config reports (and checks: secret files, catalog, bundle files)."""
    c = loaded.config
    upstreams = []
    for i, up in enumerate(c.upstreams):
        headers = loaded.upstream_headers(i)  # reads (and checks) the credentials file
        upstreams.append(
            {
                "name": up.name,
                "url": up.url,
                "prefix": up.prefix,
                "credential_headers": sorted(headers),
            }
        )
    tokens = loaded.bearer_tokens()
    catalog = None
    if c.catalog_path is not None:
        cat = load_catalog(loaded.path(c.catalog_path))
        catalog = {
            "path": str(loaded.path(c.catalog_path)),
            "hash": cat.hash,
            "tools": len(cat.entries),
        }
    bundle = read_bundle_dir(loaded.path(c.policy_bundle_path))
    return {
        "listen_addr": c.listen_addr,
        "enforcement_mode": c.attestation.enforcement_mode,
        "attestation_provider": "software (CMCP_DEV_MODE=1)"
        if loaded.dev_mode
        else c.attestation.provider,
        "policy_bundle": {"path": str(loaded.path(c.policy_bundle_path)), "hash": bundle.hash},
        "catalog": catalog,
        "upstreams": upstreams,
        "bearer_tokens": len(tokens),
        "audit": {"path": str(loaded.path(c.audit.path)), "fsync": c.audit.fsync},
        "claims": {"mode": c.claims.mode, "dir": str(loaded.path(c.claims.dir))},
    }


def cmd_validate_config(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    summary = config_summary(loaded)
    if args.output == "json":
        print(json.dumps({"valid": True, **summary}, indent=2))
        return EXIT_OK
    print(f"OK: {args.config}")
    print(f"  listen            {summary['listen_addr']}")
    print(f"  enforcement mode  {summary['enforcement_mode']}")
    print(f"  attestation       {summary['attestation_provider']}")
    bundle = summary["policy_bundle"]
    print(f"  policy bundle     {bundle['path']} ({bundle['hash']})")
    if summary["catalog"]:
        cat = summary["catalog"]
        print(f"  catalog           {cat['path']} ({cat['tools']} tools, {cat['hash']})")
    else:
        print("  catalog           none (no tool is approved)")
    for up in summary["upstreams"]:
        naming = f"tools as {up['prefix']}.<tool>" if up["prefix"] else "tools as-is"
        creds = (
            f", credentials: {', '.join(up['credential_headers'])}"
            if up["credential_headers"]
            else ""
        )
        print(f"  upstream          {up['name']} {up['url']} ({naming}{creds})")
    print(f"  bearer tokens     {summary['bearer_tokens'] or 'none (no token required)'}")
    print(f"  audit             {summary['audit']['path']} (fsync: {summary['audit']['fsync']})")
    print(f"  claims            {summary['claims']['mode']} → {summary['claims']['dir']}")
    return EXIT_OK


# -- validate-bundle -------------------------------------------------------------------------


def cmd_validate_bundle(args: argparse.Namespace) -> int:
    bundle = load_bundle(Path(args.bundle_path))
    mismatch: CmcpError | None = None
    try:
        bundle.check_hash(args.expected_hash)
    except CmcpError as exc:
        mismatch = exc
    summary = {"valid": True, "hash_matches": mismatch is None, **bundle.summary()}
    if args.output == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(f"bundle hash: {bundle.hash}")
        files = len(bundle.files.policy_names)
        print(f"  {len(bundle.policies)} policies in {files} files, validated against the schema")
    if mismatch is not None:
        print(mismatch.render(), file=sys.stderr)
        return EXIT_FAIL
    if args.output != "json":
        print("OK: the bundle is valid and matches the expected hash")
    return EXIT_OK


# -- catalog pin -------------------------------------------------------------------------------


def _default_name(url: str) -> str:
    host = (urlsplit(url).hostname or "upstream").split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]", "-", host).strip("-_") or "upstream"
    return name[:63]


def _pin_headers(args: argparse.Namespace) -> dict[str, str]:
    if args.headers_from_file:
        try:
            text = Path(args.headers_from_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot read {args.headers_from_file}: {exc.strerror}", code="input.unreadable"
            ) from None
        return parse_header_lines(text, "--headers-from-file")
    return parse_header_lines("\n".join(args.header), "--header")


def cmd_catalog_pin(args: argparse.Namespace) -> int:
    name = args.name or _default_name(args.upstream)
    try:
        config = UpstreamConfig(name=name, url=args.upstream)
    except ValueError as exc:
        raise ConfigError(f"--upstream/--name: {exc}", code="usage.upstream") from None
    document = asyncio.run(asyncio.wait_for(_pin(config, _pin_headers(args)), args.timeout))
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return EXIT_OK


async def _pin(config: UpstreamConfig, headers: dict[str, str]) -> dict[str, Any]:
    from .mcp.client import ControlClient
    from .mcp.upstream import Upstream, UpstreamFault

    upstream = Upstream(0, config, headers, max_response_bytes=64 * 1024 * 1024)
    await upstream.start()
    try:
        async with ControlClient(upstream) as client:
            tools = await client.list_all("tools/list", "tools")
    except UpstreamFault as exc:
        raise CmcpError(
            exc.message, code=exc.code, hint="check --upstream and its credentials"
        ) from None
    finally:
        await upstream.close()
    return pin_catalog({config.name: tools})


# -- start -------------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    """Run the gateway; a refused start is the one-line error plus a structured log line
    (``event: start_refused``, ``reason: <code>``) for log pipelines."""
    from . import eventloop
    from .logs import setup_logging
    from .runtime import run

    loaded = load_config(args.config)
    setup_logging(loaded.log_format, loaded.log_level)
    try:
        eventloop.run(run(loaded))
    except CmcpError as exc:
        print(exc.render(), file=sys.stderr, flush=True)
        logging.getLogger("cmcp.start").error(
            "refusing to start: %s",
            exc.message,
            extra={"event": "start_refused", "reason": exc.code, "hint": exc.hint or ""},
        )
        return EXIT_FAIL
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
