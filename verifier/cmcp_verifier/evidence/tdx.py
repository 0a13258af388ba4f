"""Intel TDX quote verification (evidence type ``tdx``).

What is checked, in order (each a named check in the report; a claim's report prefixes them
with ``tdx.``):

- ``quote.format``: a v4 or v5 quote with a TD report body, ECDSA P-256 attestation
  key; zero padding after the signature data is ignored, other trailing bytes fail
  ``quote.trailing``.
- ``quote.signature``: the attestation key's ECDSA P-256 signature over header ‖ body.
- ``pck.chain``: the PCK certificate chain in the quote up to the pinned Intel SGX Root CA
  (``intel-sgx-root-ca.pem``), valid at the evaluation time (``--at``, default now).
- ``qe.signature``: the QE report signed by the PCK key; ``qe.binding``: the QE report
  data is SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.
- ``td.debug``: TDATTRIBUTES.DEBUG is off (or ``allow_debug``).
- with collateral: ``collateral.tcb_info`` / ``.qe_identity`` (ECDSA signature over the
  exact JSON bytes, issuer chain to the Intel root), ``.pck_crl`` / ``.root_crl`` (signatures,
  revocation of the PCK certificate and the intermediates), ``.validity`` (every item current at
  the evaluation time; expired items only warn with ``allow_expired_collateral``), then
  ``tcb``: Intel's TCB level evaluation (platform SVNs from the PCK certificate, TDX
  module from TEE_TCB_SVN and its identity, the QE from its identity). UpToDate passes;
  SWHardeningNeeded, ConfigurationNeeded and TDRelaunchAdvised warn (fail with
  ``strict_tcb``); OutOfDate, Revoked and "no matching level" fail. Without collateral the TCB
  status is unknown: ``tcb`` warns (fails with ``strict_tcb``).
- with a CCEL event log: ``ccel``: replaying its SHA-384 digests reproduces RTMR0-3.

Nothing is fetched from the network: Intel PCS fetching is not implemented; with
``allow_network`` and missing collateral a warning says so.

Embedded form (``gateway.attestation.evidence`` of a claim, every member base64url of the raw
file bytes): ``quote`` (required), ``tcb_info``, ``tcb_info_chain``, ``qe_identity``,
``qe_identity_chain``, ``pck_crl``, ``pck_crl_chain``, ``root_crl``, ``event_log`` (CCEL),
``acpi_table`` (CCEL ACPI table). Other members are rejected.

Library entry point (Azure CVM reuses it): :func:`verify_td_quote`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
from dataclasses import fields, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ..binding import report_data
from ..digests import b64url_decode
from ..errors import InputError
from ..report import bytes_mismatch
from ..roots import root_certificates
from . import EvidencePolicy, EvidenceReport, register
from ._common import (
    chain_problems,
    common_name,
    load_certificates,
    read_input,
    read_optional,
)
from .ccel import CC_TYPE_TDX, parse_ccel_table, replay_rtmrs
from .tcg_eventlog import parse_event_log
from .tdx_appraisal import (
    TdxCollateral,
    TdxOptions,
    check_collateral,
    ecdsa_p256_ok,
)
from .tdx_quote import BODY_TD15, INTEL_QE_VENDOR_ID, TdQuote, parse_quote

ROOT_FILE = "intel-sgx-root-ca.pem"
NAME = "tdx"
PLATFORM = "intel-tdx"


def _attestation_key(raw: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        return None


# --- the quote itself ---------------------------------------------------------------------


def _facts(q: TdQuote) -> dict[str, Any]:
    b = q.body
    facts: dict[str, Any] = {
        "tee": "TDX",
        "quote_version": q.header.version,
        "td_report": "TD1.5" if q.body_type == BODY_TD15 else "TD1.0",
        "qe_vendor_id": q.header.qe_vendor_id.hex(),
        "tee_tcb_svn": b.tee_tcb_svn.hex(),
        "mr_seam": b.mr_seam.hex(),
        "mr_signer_seam": b.mr_signer_seam.hex(),
        "seam_attributes": b.seam_attributes.hex(),
        "td_attributes": b.td_attributes.hex(),
        "xfam": b.xfam.hex(),
        "mr_td": b.mr_td.hex(),
        "mr_config_id": b.mr_config_id.hex(),
        "mr_owner": b.mr_owner.hex(),
        "mr_owner_config": b.mr_owner_config.hex(),
        **{f"rtmr{i}": r.hex() for i, r in enumerate(b.rtmrs)},
        "report_data": b.report_data.hex(),
        "debug": b.debug,
        "qe_isv_svn": q.qe_report.isv_svn,
    }
    if b.tee_tcb_svn2 is not None and b.mr_service_td is not None:
        facts.update(tee_tcb_svn2=b.tee_tcb_svn2.hex(), mr_service_td=b.mr_service_td.hex())
    return facts


def _check_format(q: TdQuote, report: EvidenceReport) -> None:
    vendor = "Intel QE" if q.header.qe_vendor_id == INTEL_QE_VENDOR_ID else "non-Intel QE vendor"
    padding = f", {q.padding} bytes of zero padding ignored" if q.padding else ""
    report.passed(
        "quote.format",
        f"quote v{q.header.version}, {report.facts['td_report']} report body, ECDSA P-256, "
        f"{vendor}{padding}",
    )
    if q.trailing:
        report.fail(
            "quote.trailing", f"{len(q.trailing)} unexpected bytes after the signature data"
        )


def _check_pck_chain(
    q: TdQuote, root: x509.Certificate, at: dt.datetime, report: EvidenceReport
) -> list[x509.Certificate] | None:
    try:
        chain = load_certificates(q.pck_chain_pem, what="PCK certificate chain")
    except InputError as exc:
        report.fail("pck.chain", exc.message)
        return None
    problems = chain_problems(chain, root, at=at)
    if len(chain) < 2:
        problems.append("the chain must hold the PCK certificate and its CA")
    canonical = b"".join(c.public_bytes(Encoding.PEM) for c in chain)
    if q.pck_chain_pem not in (canonical, canonical + b"\x00"):
        # The chain is not signed as text: only its canonical form leaves no byte unchecked.
        problems.append("the PEM chain is not in canonical form (64-column base64, LF)")
    report.add(
        "pck.chain",
        not problems,
        "; ".join(problems)
        or f"{common_name(chain[0])} ← {common_name(chain[1])} ← pinned {common_name(root)}",
    )
    return chain if not problems else None


def _check_qe(q: TdQuote, pck: x509.Certificate | None, report: EvidenceReport) -> None:
    if pck is None:
        report.fail("qe.signature", "not checked: no valid PCK certificate")
    else:
        report.add(
            "qe.signature",
            ecdsa_p256_ok(pck.public_key(), q.qe_report_signature, q.qe_report.raw),
            "QE report signed by the PCK key",
            failed="the QE report signature does not verify with the PCK certificate's key",
        )
    expected = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest() + bytes(32)
    report.add(
        "qe.binding",
        hmac.compare_digest(q.qe_report.report_data, expected),
        "QE report data = SHA-256(attestation key ‖ QE auth data)",
        failed="QE report data is not SHA-256(attestation key ‖ QE auth data) ‖ 0^32: "
        + bytes_mismatch(expected, q.qe_report.report_data),
    )


def _check_quote(q: TdQuote, policy: EvidencePolicy, report: EvidenceReport) -> None:
    key = _attestation_key(q.attestation_key)
    report.add(
        "quote.signature",
        key is not None and ecdsa_p256_ok(key, q.signature, q.signed_data),
        "attestation key signs header ‖ TD report body",
        failed="the ECDSA P-256 signature over header ‖ TD report body does not verify with "
        "the quote's attestation key"
        if key is not None
        else "attestation key is not a P-256 point",
    )
    if not q.body.debug:
        report.passed("td.debug", "TDATTRIBUTES.DEBUG = 0")
    elif policy.allow_debug:
        report.warn("td.debug", "debug TD accepted (allow debug)")
    else:
        report.fail("td.debug", "TD DEBUG=1: the host can read and alter the TD")
    if policy.nonce is not None:
        expected = report_data(policy.nonce[:64])
        report.add(
            "nonce",
            len(policy.nonce) <= 64 and hmac.compare_digest(q.body.report_data, expected),
            "REPORTDATA carries the nonce",
            failed="REPORTDATA is not the nonce zero padded to 64 bytes: "
            + bytes_mismatch(
                policy.nonce if len(policy.nonce) > 64 else expected, q.body.report_data
            ),
        )
    pin = policy.expected_measurement
    if pin is not None:
        same = pin == report.measurement
        report.add("measurement", same, f"MRTD {'matches' if same else 'differs from'} {pin}")


# --- event log ----------------------------------------------------------------------------


def _check_event_log(q: TdQuote, log: bytes, acpi: bytes | None, report: EvidenceReport) -> None:
    try:
        if acpi is not None:
            table = parse_ccel_table(acpi)
            if table.cc_type != CC_TYPE_TDX or len(log) > table.log_area_length:
                raise InputError(
                    f"CCEL table (type {table.cc_type}, log area {table.log_area_length} bytes) "
                    f"does not describe a {len(log)}-byte TDX log",
                    code="ccel.table",
                )
        parsed = parse_event_log(log, what="CCEL event log")
        rtmrs = replay_rtmrs(parsed)
    except InputError as exc:
        report.fail("ccel", exc.message)
        return
    wrong = [f"RTMR{i}" for i in range(4) if not hmac.compare_digest(rtmrs[i], q.body.rtmrs[i])]
    report.facts["ccel_events"] = len(parsed.events)
    report.add(
        "ccel",
        not wrong,
        f"replaying {len(parsed.events)} events reproduces RTMR0-3"
        if not wrong
        else f"replayed {', '.join(wrong)} differ from the quote",
    )


# --- entry points -------------------------------------------------------------------------


def verify_td_quote(
    quote: bytes | TdQuote,
    collateral: TdxCollateral | None,
    policy: EvidencePolicy,
    options: TdxOptions | None = None,
    *,
    event_log: bytes | None = None,
    acpi_table: bytes | None = None,
) -> EvidenceReport:
    """Verify a TDX quote (raw bytes or parsed) with optional collateral and CCEL event log.

    Raises :class:`InputError` (code ``tdx.quote.*``) when the quote cannot be parsed; every
    other problem is a failed check in the returned report. ``report_data`` is REPORTDATA
    (64 bytes), ``measurement`` is ``sha384:<MRTD hex>``; facts name every register and the
    TCB status.
    """
    q = quote if isinstance(quote, TdQuote) else parse_quote(quote)
    options = options or TdxOptions()
    report = EvidenceReport(
        subject="Intel TDX quote",
        report_data=q.body.report_data,
        measurement="sha384:" + q.body.mr_td.hex(),
        platform=PLATFORM,
        facts=_facts(q),
    )
    root = root_certificates(ROOT_FILE, policy.roots_dir)[0]
    _check_format(q, report)
    _check_quote(q, policy, report)
    pck_chain = _check_pck_chain(q, root, policy.now(), report)
    _check_qe(q, pck_chain[0] if pck_chain else None, report)
    check_collateral(q, pck_chain, collateral or TdxCollateral(), root, policy, options, report)
    if event_log is not None:
        _check_event_log(q, event_log, acpi_table, report)
    return report


# --- the evidence type (CLI and claims) ---------------------------------------------------

_FILE_OPTIONS = {  # TdxCollateral field -> command-line option
    "tcb_info": "--tcb-info",
    "tcb_info_chain": "--tcb-info-chain",
    "qe_identity": "--qe-identity",
    "qe_identity_chain": "--qe-identity-chain",
    "pck_crl": "--pck-crl",
    "pck_crl_chain": "--pck-crl-chain",
    "root_crl": "--root-crl",
}
_EMBEDDED = {"quote", "event_log", "acpi_table", *_FILE_OPTIONS}


class TdxEvidence:
    """Intel TDX quotes (DCAP v4/v5) with optional collateral and CCEL event log."""

    name = NAME

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tdx-quote", metavar="FILE", help="TDX quote (raw binary)")
        for attr, option in _FILE_OPTIONS.items():
            what = attr.replace("_", " ").replace("crl", "CRL").replace("qe", "QE")
            parser.add_argument(option, metavar="FILE", help=f"Intel collateral: {what}")
        parser.add_argument("--tdx-event-log", metavar="FILE", help="CCEL event log (TDX)")
        parser.add_argument("--tdx-acpi-table", metavar="FILE", help="CCEL ACPI table (TDX)")
        parser.add_argument(
            "--tdx-allow-expired-collateral",
            action="store_true",
            help="expired TDX collateral warns instead of failing",
        )
        parser.add_argument(
            "--tdx-strict-tcb",
            action="store_true",
            help="TDX: only TCB status UpToDate with complete collateral passes",
        )

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        if not args.tdx_quote:
            raise InputError("--type tdx needs --tdx-quote FILE", code="evidence.usage")
        quote = read_input(args.tdx_quote, what="TDX quote")
        collateral = TdxCollateral(
            **{
                attr: read_optional(getattr(args, attr), what=attr.replace("_", " "))
                for attr in _FILE_OPTIONS
            }
        )
        return verify_td_quote(
            quote,
            collateral,
            policy,
            TdxOptions(args.tdx_allow_expired_collateral, args.tdx_strict_tcb),
            event_log=read_optional(args.tdx_event_log, what="CCEL event log"),
            acpi_table=read_optional(args.tdx_acpi_table, what="CCEL ACPI table"),
        )

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        unknown = sorted(set(evidence) - _EMBEDDED)
        if unknown:
            raise InputError(
                f"unknown TDX evidence members: {', '.join(unknown)}", code="tdx.embedded"
            )
        if "quote" not in evidence:
            raise InputError("TDX evidence lacks 'quote'", code="tdx.embedded")
        raw = {k: b64url_decode(v, what=f"tdx evidence {k}") for k, v in evidence.items()}
        collateral = TdxCollateral(**{f.name: raw.get(f.name) for f in fields(TdxCollateral)})
        # In a claim REPORTDATA carries the binding digest (which commits to the nonce) and the
        # claim verifier compares runtime.measurement with the pin: no raw checks here.
        return verify_td_quote(
            raw["quote"],
            collateral,
            replace(policy, nonce=None, expected_measurement=None),
            event_log=raw.get("event_log"),
            acpi_table=raw.get("acpi_table"),
        )


register(TdxEvidence())

__all__ = [
    "TdQuote",
    "TdxCollateral",
    "TdxEvidence",
    "TdxOptions",
    "parse_quote",
    "verify_td_quote",
]
