"""``cmcp-verify``: a thin command-line shell over the verifier library.

Exit status: 0 verified, 1 rejected, 2 usage error (bad options, unreadable files), printed as
one line ``cmcp-verify: error[<code>]: <message> (hint: <what to do>)`` on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn

from . import __version__, audit
from .bundle import read_bundle_dir
from .digests import b64url_decode, is_digest
from .errors import CmcpError, InputError
from .evidence import EvidencePolicy, evidence_types
from .report import Report
from .verify_claim import DEFAULT_MAX_AGE, ClaimPolicy, verify_claim

EXIT_VERIFIED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
# Evidence-module errors that are the caller's mistake (missing option, unreadable file).
EVIDENCE_USAGE_CODES = frozenset({"evidence.usage", "evidence.unreadable"})


class UsageError(Exception):
    """Bad options or unreadable input: exit status 2 (not a :class:`CmcpError`, so that no
    ``except CmcpError`` turns it into a rejection)."""

    def __init__(
        self, message: str, *, code: str = "usage.option", hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.hint = message, code, hint


def _unreadable(message: str) -> UsageError:
    return UsageError(message, code="usage.unreadable")


class _Parser(argparse.ArgumentParser):
    """Option errors in the same one-line form as every other usage error."""

    def error(self, message: str) -> NoReturn:
        _usage_exit(UsageError(message, hint=f"see {self.prog} --help"))


def parse_nonce(text: str) -> bytes:
    """A nonce given as hex, or as base64url with a ``b64:`` prefix."""
    try:
        if text.startswith("b64:"):
            return b64url_decode(text[4:], what="nonce")
        return bytes.fromhex(text)
    except (ValueError, InputError) as exc:
        raise UsageError(f"--nonce must be hex or b64:<base64url>: {exc}") from None


def parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at must be an ISO 8601 time, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def read_file(path: str, *, limit: int = 64 * 1024 * 1024) -> bytes:
    try:
        p = Path(path)
        if p.stat().st_size > limit:
            raise UsageError(f"{path}: larger than {limit} bytes", code="usage.unreadable")
        return p.read_bytes()
    except OSError as exc:
        raise _unreadable(f"cannot read {path}: {exc.strerror}") from None


def open_log(path: str) -> BinaryIO:
    """An audit log opened for streaming ('-' for stdin); exit 2 when it cannot be opened."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _unreadable(f"cannot read {path}: {exc.strerror}") from None


def _readable(path: str) -> Path:
    """``--audit``'s file, checked to open now (exit 2 if not); streamed by the verifier."""
    if path == "-":
        raise UsageError("--audit needs a file (the claim may come from stdin, the log cannot)")
    open_log(path).close()
    return Path(path)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="output format (default: text)",
    )


def _add_evidence_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--roots", metavar="DIR", help="directory of vendor roots replacing the bundled ones"
    )
    p.add_argument("--allow-debug", action="store_true", help="accept debug-enabled TEEs")
    p.add_argument("--at", metavar="TIME", help="evaluate validity at this ISO 8601 time")
    p.add_argument(
        "--allow-network",
        action="store_true",
        help="allow fetching missing collateral from vendor services",
    )


def _evidence_policy(args: argparse.Namespace, nonce: bytes | None) -> EvidencePolicy:
    if args.roots and not Path(args.roots).is_dir():
        raise UsageError(
            f"--roots {args.roots}: not a directory",
            code="usage.unreadable",
            hint="give a directory of vendor root certificates; see docs/verifier.md, Pinned roots",
        )
    return EvidencePolicy(
        roots_dir=Path(args.roots) if args.roots else None,
        allow_debug=args.allow_debug,
        nonce=nonce,
        expected_measurement=getattr(args, "expected_measurement", None),
        evaluation_time=parse_time(args.at) if args.at else None,
        allow_network=args.allow_network,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cmcp-verify", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cmcp-verify {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    claim = sub.add_parser("claim", help="verify a claim (signatures, binding, evidence, audit)")
    claim.add_argument("file", help="claim JSON file ('-' for stdin)")
    claim.add_argument(
        "--bundle-hash",
        action="append",
        default=[],
        metavar="sha256:HEX",
        help="approved bundle hash (repeatable)",
    )
    claim.add_argument("--nonce", help="nonce the claim must be bound to (hex or b64:…)")
    claim.add_argument("--audit", metavar="LOG", help="exported audit log to check against")
    claim.add_argument(
        "--max-age",
        type=int,
        default=DEFAULT_MAX_AGE,
        metavar="SECONDS",
        help=f"reject claims older than this (default {DEFAULT_MAX_AGE}; 0 = no limit)",
    )
    claim.add_argument("--expected-measurement", metavar="DIGEST", help="pinned launch measurement")
    claim.add_argument(
        "--allow-software",
        action="store_true",
        help="accept software-only (dev mode) claims, with a warning",
    )
    _add_evidence_policy(claim)
    _add_common(claim)

    log = sub.add_parser("audit", help="verify an audit log's hash chain")
    log.add_argument("file")
    _add_common(log)

    bundle = sub.add_parser("bundle", help="compute (and check) a policy bundle's hash")
    bundle.add_argument("dir")
    bundle.add_argument("--expected-hash", metavar="sha256:HEX")
    _add_common(bundle)

    ev = sub.add_parser("evidence", help="verify hardware evidence on its own")
    ev.add_argument("--type", required=True, choices=sorted(evidence_types()), dest="type")
    ev.add_argument("--nonce", help="nonce the evidence must carry (hex or b64:…)")
    _add_evidence_policy(ev)
    _add_common(ev)
    for kind in evidence_types().values():
        group = ev.add_argument_group(f"--type {kind.name}")
        kind.add_arguments(group)  # type: ignore[arg-type]
    return parser


def cmd_claim(args: argparse.Namespace) -> Report:
    data = sys.stdin.buffer.read() if args.file == "-" else read_file(args.file)
    for h in args.bundle_hash:
        if not is_digest(h):
            raise UsageError(f"--bundle-hash {h!r} is not sha256:<hex>")
    if args.max_age < 0:
        raise UsageError("--max-age must be >= 0")
    nonce = parse_nonce(args.nonce) if args.nonce else None
    policy = ClaimPolicy(
        approved_bundle_hashes=tuple(args.bundle_hash),
        nonce=nonce,
        max_age_seconds=args.max_age,
        allow_software=args.allow_software,
        evidence=_evidence_policy(args, nonce),
        audit_log=_readable(args.audit) if args.audit else None,
    )
    return verify_claim(data, policy)


def cmd_audit(args: argparse.Namespace) -> Report:
    report = Report(subject=f"audit log {args.file}")
    try:
        with open_log(args.file) as stream:
            summary = audit.verify_log_file(stream)
    except CmcpError as exc:
        report.fail_error(exc)
        return report
    report.passed("audit.chain", f"{summary.length} entries, links and hashes intact")
    report.facts.update(
        root=summary.root, tip=summary.tip, length=summary.length, sessions=len(summary.session_ids)
    )
    return report


def cmd_bundle(args: argparse.Namespace) -> Report:
    report = Report(subject=f"bundle {args.dir}")
    if args.expected_hash is not None and not is_digest(args.expected_hash):
        raise UsageError(f"--expected-hash {args.expected_hash!r} is not sha256:<hex>")
    try:
        files = read_bundle_dir(args.dir)
    except CmcpError as exc:
        if exc.code == "bundle.not_found":
            raise UsageError(exc.message, code=exc.code, hint=exc.hint) from None
        report.fail_error(exc)
        return report
    digest = files.hash
    report.facts.update(hash=digest, files=sorted(files.files), ignored=list(files.ignored))
    if args.expected_hash:
        report.add(
            "bundle.hash",
            digest == args.expected_hash,
            digest,
            failed=f"expected {args.expected_hash}, found {digest}",
        )
    else:
        report.passed("bundle.hash", digest)
    return report


def cmd_evidence(args: argparse.Namespace) -> Report:
    nonce = parse_nonce(args.nonce) if args.nonce else None
    kind = evidence_types()[args.type]
    try:
        return kind.verify_files(args, _evidence_policy(args, nonce))
    except CmcpError as exc:
        if exc.code in EVIDENCE_USAGE_CODES:
            raise UsageError(exc.message, code=exc.code, hint=exc.hint) from None
        report = Report(subject=f"{args.type} evidence")
        report.fail_error(exc)
        return report


COMMANDS = {"claim": cmd_claim, "audit": cmd_audit, "bundle": cmd_bundle, "evidence": cmd_evidence}


USAGE_HINTS = {
    "usage.unreadable": "check the path and permissions",
    "evidence.unreadable": "check the path and permissions",
    "bundle.not_found": "give the bundle directory: *.cedar, schema.cedarschema, manifest.json",
}


def _usage_exit(exc: UsageError, command: str | None = None) -> NoReturn:
    default = USAGE_HINTS.get(exc.code, f"see cmcp-verify {command or ''} --help")
    hint = exc.hint or default.replace("  ", " ")
    line = f"cmcp-verify: error[{exc.code}]: {exc.message} (hint: {hint})"
    print(" ".join(line.split()), file=sys.stderr)  # one line, whatever the message holds
    raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = COMMANDS[args.command](args)
    except UsageError as exc:
        _usage_exit(exc, args.command)
    except Exception as exc:  # fail closed, in one line, never a traceback
        report = Report(subject=f"cmcp-verify {args.command}")
        report.fail(
            "verifier.internal_error",
            f"{type(exc).__name__}: {str(exc)[:200]} (a verifier bug: please report it)",
        )
    try:
        if args.output == "json":
            print(json.dumps(report.to_json(), indent=2, sort_keys=True), flush=True)
        else:
            print(report.render(), flush=True)
    except BrokenPipeError:  # the reader left (| head): no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_VERIFIED if report.verified else EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
