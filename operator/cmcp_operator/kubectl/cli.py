"""``kubectl-cmcp``: ``kubectl cmcp verify|status|bundle`` (see docs/kubectl-plugin.md).

Exit status: 0 success (every claim verified; the bundle is valid), 1 a verdict against
(a claim rejected, no claim found, an invalid bundle), 2 usage or cluster errors.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cmcp_verifier.cedar_bundle import BundleValidationError
from cmcp_verifier.errors import CmcpError

from . import bundle, output, status
from .verify import Target, verify

if TYPE_CHECKING:
    from .cluster import Cluster

EXIT_OK, EXIT_VERDICT, EXIT_USAGE = 0, 1, 2
GATEWAY_COLUMNS = [
    *("name", "mode", "bundle", "candidate", "pods", "attested", "verified", "calls", "deny"),
    *("ready", "reason"),
]
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _common(p: argparse.ArgumentParser, *, cluster_flags: bool) -> None:
    """kubectl's own flags; SUPPRESS so a subcommand does not reset what the parent parsed."""
    s = argparse.SUPPRESS
    if cluster_flags:
        p.add_argument("--kubeconfig", default=s, help="kubeconfig file (default: $KUBECONFIG)")
        p.add_argument("--context", default=s, help="kubeconfig context")
        p.add_argument("-n", "--namespace", default=s, help="namespace (default: the context's)")
        p.add_argument(
            "-A", "--all-namespaces", action="store_true", default=s, help="every namespace"
        )
    p.add_argument("-o", "--output", choices=output.FORMATS, default=s, help="default: table")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl cmcp", description=__doc__.split("\n\n")[0])
    _common(p, cluster_flags=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("verify", help="verify the claims of gateways or pods, offline")
    v.add_argument("target", nargs="?", help="GATEWAY, mcpgw/GATEWAY or pod/NAME")
    _common(v, cluster_flags=True)
    s = sub.add_parser("status", help="gateways, pods, attestation, decisions, shadow results")
    _common(s, cluster_flags=True)
    b = sub.add_parser("bundle", help="policy bundles: hash, validate, render")
    bsub = b.add_subparsers(dest="bundle_command", required=True, metavar="COMMAND")
    for name, text in (
        ("hash", "print the bundle hash of DIR"),
        ("validate", "validate DIR as the sidecar and the operator do"),
        ("render", "print an McpPolicyBundle of DIR pinned to its hash"),
    ):
        bp = bsub.add_parser(name, help=text)
        bp.add_argument("directory", metavar="DIR")
        _common(bp, cluster_flags=False)
        if name == "render":
            bp.add_argument("--name", help="metadata.name (default: the manifest's name)")
            bp.add_argument("-n", "--namespace", default=None, help="metadata.namespace")
    return p


def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def _connect(args: argparse.Namespace) -> tuple[Cluster, str | None]:
    from .cluster import connect  # the kubernetes client takes a second to import

    c = connect(_opt(args, "kubeconfig"), _opt(args, "context"), _opt(args, "namespace"))
    return c, None if _opt(args, "all_namespaces", False) else c.namespace


def cmd_verify(args: argparse.Namespace, fmt: str) -> int:
    try:
        target = Target.parse(args.target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    c, namespace = _connect(args)
    rows = verify(c, namespace, target)
    ok = bool(rows) and all(r["verdict"] == "verified" for r in rows)
    if fmt != "table":
        output.emit({"verified": ok, "claims": rows}, fmt)
    elif not rows:
        where = f"namespace {namespace}" if namespace else "any namespace"
        print(f"No claims found in {where}" + (f" for {args.target}" if args.target else ""))
    else:
        cols = ["gateway", "pod", "verdict", "attested", "platform", "issuedAt", "reason"]
        output.table(rows, (["namespace"] if namespace is None else []) + cols, sys.stdout)
        for r in rows:
            if r["message"]:
                print(f"{r['pod']}: {r['message']}")
    return EXIT_OK if ok else EXIT_VERDICT


def cmd_status(args: argparse.Namespace, fmt: str) -> int:
    c, namespace = _connect(args)
    summaries = status.status(c, namespace)
    if fmt != "table":
        output.emit({"gateways": summaries}, fmt)
        return EXIT_OK
    if not summaries:
        print(f"No McpGateways found in {f'namespace {namespace}' if namespace else 'the cluster'}")
        return EXIT_OK
    ns_col = ["namespace"] if namespace is None else []
    output.table(status.gateway_rows(summaries), ns_col + GATEWAY_COLUMNS, sys.stdout)
    claims = status.claim_rows(summaries)
    if claims:
        print()
        cols = ["gateway", "pod", "verdict", "attested", "platform", "issued", "reason"]
        output.table(claims, ns_col + cols, sys.stdout)
    shadow = status.shadow_rows(summaries)
    if shadow:
        print("\nShadow evaluation (candidate bundle would decide differently):")
        cols = ["gateway", "tool", "active", "candidate", "count", "examples"]
        output.table(shadow, ns_col + cols, sys.stdout)
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace, fmt: str) -> int:
    directory = args.directory
    if args.bundle_command == "hash":
        digest = bundle.hash_of(directory)
        if fmt == "table":
            print(digest)
        else:
            output.emit({"hash": digest}, fmt)
        return EXIT_OK
    if args.bundle_command == "validate":
        try:
            loaded = bundle.validate(directory)
        except BundleValidationError as exc:
            if fmt == "table":
                for problem in exc.problems:
                    print(problem, file=sys.stderr)
                print(f"{directory}: invalid ({len(exc.problems)} problems)", file=sys.stderr)
            else:
                output.emit({"valid": False, "problems": [str(p) for p in exc.problems]}, fmt)
            return EXIT_VERDICT
        if fmt == "table":
            m = loaded.manifest
            print(f"{directory}: valid, {len(loaded.policies)} policies, {m.name} {m.version}")
            print(loaded.hash)
        else:
            output.emit({"valid": True, **loaded.summary()}, fmt)
        return EXIT_OK
    return _render(args, fmt)


def _render(args: argparse.Namespace, fmt: str) -> int:
    name = args.name
    if name is None:
        name = bundle.validate(args.directory).manifest.name
    if not _DNS_NAME.match(name):
        print(f"error: {name!r} is not a valid object name; pass --name", file=sys.stderr)
        return EXIT_USAGE
    doc = bundle.render(args.directory, name, args.namespace)
    output.emit(doc, "json" if fmt == "json" else "yaml")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fmt = _opt(args, "output", "table")
    handler = {"verify": cmd_verify, "status": cmd_status, "bundle": cmd_bundle}[args.command]
    try:
        return handler(args, fmt)
    except BundleValidationError as exc:
        print(exc.render(), file=sys.stderr)
        for problem in exc.problems[1:]:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_VERDICT
    except CmcpError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
