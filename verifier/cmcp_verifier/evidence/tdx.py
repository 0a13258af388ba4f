"""Intel TDX quote verification (evidence type ``tdx``).

What is checked, in order (each a named check in the report):

- ``tdx.quote.format``: a v4 or v5 quote with a TD report body, ECDSA P-256 attestation
  key; zero padding after the signature data is ignored, other trailing bytes fail
  ``tdx.quote.trailing``.
- ``tdx.quote.signature``: the attestation key's ECDSA P-256 signature over header ‖ body.
- ``tdx.pck.chain``: the PCK certificate chain in the quote up to the pinned Intel SGX Root CA
  (``intel-sgx-root-ca.pem``), valid at the evaluation time (``--at``, default now).
- ``tdx.qe.signature``: the QE report signed by the PCK key; ``tdx.qe.binding``: the QE report
  data is SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.
- ``tdx.td.debug``: TDATTRIBUTES.DEBUG is off (or ``allow_debug``).
- with collateral: ``tdx.collateral.tcb_info`` / ``.qe_identity`` (ECDSA signature over the
  exact JSON bytes, issuer chain to the Intel root), ``.pck_crl`` / ``.root_crl`` (signatures,
  revocation of the PCK certificate and the intermediates), ``.validity`` (every item current at
  the evaluation time; expired items only warn with ``allow_expired_collateral``), then
  ``tdx.tcb``: Intel's TCB level evaluation (platform SVNs from the PCK certificate, TDX
  module from TEE_TCB_SVN and its identity, the QE from its identity). UpToDate passes;
  SWHardeningNeeded, ConfigurationNeeded and TDRelaunchAdvised warn (fail with
  ``strict_tcb``); OutOfDate, Revoked and "no matching level" fail. Without collateral the TCB
  status is unknown: ``tdx.tcb`` warns (fails with ``strict_tcb``).
- with a CCEL event log: ``tdx.ccel``: replaying its SHA-384 digests reproduces RTMR0-3.

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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from ..binding import report_data_matches
from ..digests import b64url_decode
from ..errors import InputError
from ..roots import root_certificates
from . import EvidencePolicy, EvidenceReport, register
from ._common import chain_problems, issued_by, load_certificates, read_input
from .ccel import CC_TYPE_TDX, parse_ccel_table, replay_rtmrs
from .tcg_eventlog import parse_event_log
from .tdx_collateral import (
    ACCEPTABLE,
    ACCEPTABLE_WITH_WARNING,
    PckTcb,
    QeIdentity,
    QeResult,
    TcbInfo,
    TcbResult,
    evaluate_qe,
    evaluate_tcb,
    parse_pck_extensions,
    parse_qe_identity,
    parse_signed_json,
    parse_tcb_info,
)
from .tdx_quote import BODY_TD15, INTEL_QE_VENDOR_ID, TdQuote, parse_quote

ROOT_FILE = "intel-sgx-root-ca.pem"
NAME = "tdx"
PLATFORM = "intel-tdx"
_Doc = TypeVar("_Doc", TcbInfo, QeIdentity)


@dataclass(frozen=True)
class TdxCollateral:
    """DCAP collateral as Intel PCS serves it, each member the raw file bytes (or None).

    ``tcb_info`` / ``qe_identity``: the JSON documents; ``*_chain``: PEM issuer chains (Intel
    signs TCB info and QE identity with the same TCB Signing key, so either chain serves
    both); ``pck_crl`` / ``root_crl``: DER or PEM CRLs (the PCK CRL's issuer defaults to the
    CA in the quote's own PCK chain).
    """

    tcb_info: bytes | None = None
    tcb_info_chain: bytes | None = None
    qe_identity: bytes | None = None
    qe_identity_chain: bytes | None = None
    pck_crl: bytes | None = None
    pck_crl_chain: bytes | None = None
    root_crl: bytes | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass(frozen=True)
class TdxOptions:
    """TDX-specific strictness beyond :class:`EvidencePolicy`."""

    allow_expired_collateral: bool = False  # expired collateral warns instead of failing
    strict_tcb: bool = False  # only UpToDate with complete collateral passes


@dataclass
class _Windows:
    """Validity periods of collateral items, judged together at one time."""

    at: dt.datetime
    expired: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)
    certs: list[x509.Certificate] = field(default_factory=list)

    def add(self, what: str, start: dt.datetime, end: dt.datetime | None) -> None:
        if self.at < start:
            self.early.append(f"{what} not valid before {start.isoformat()}")
        elif end is not None and self.at > end:
            self.expired.append(f"{what} expired {end.isoformat()}")

    def add_certs(self, certs: list[x509.Certificate]) -> None:
        for cert in certs:
            if cert not in self.certs:
                self.certs.append(cert)
                what = f"certificate {_cn(cert)}"
                self.add(what, cert.not_valid_before_utc, cert.not_valid_after_utc)

    def report(self, report: EvidenceReport, options: TdxOptions) -> None:
        when = f"at {self.at.isoformat()}"
        if self.early or (self.expired and not options.allow_expired_collateral):
            report.fail(
                "tdx.collateral.validity", f"{when}: " + "; ".join(self.early + self.expired)
            )
        elif self.expired:
            report.warn(
                "tdx.collateral.validity",
                f"{when}: " + "; ".join(self.expired) + " (accepted: allow expired collateral)",
            )
        else:
            report.passed("tdx.collateral.validity", f"all collateral current {when}")


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _ecdsa_p256_ok(key: Any, signature: bytes, data: bytes) -> bool:
    """ECDSA P-256/SHA-256 with a raw r‖s signature."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if len(signature) != 64 or not r or not s:
        return False
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


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
        "tdx.quote.format",
        f"quote v{q.header.version}, {report.facts['td_report']} report body, ECDSA P-256, "
        f"{vendor}{padding}",
    )
    if q.trailing:
        report.fail(
            "tdx.quote.trailing", f"{len(q.trailing)} unexpected bytes after the signature data"
        )


def _check_pck_chain(
    q: TdQuote, root: x509.Certificate, at: dt.datetime, report: EvidenceReport
) -> list[x509.Certificate] | None:
    try:
        chain = load_certificates(q.pck_chain_pem, what="PCK certificate chain")
    except InputError as exc:
        report.fail("tdx.pck.chain", exc.message)
        return None
    problems = chain_problems(chain, root, at=at)
    if len(chain) < 2:
        problems.append("the chain must hold the PCK certificate and its CA")
    canonical = b"".join(c.public_bytes(Encoding.PEM) for c in chain)
    if q.pck_chain_pem not in (canonical, canonical + b"\x00"):
        # The chain is not signed as text: only its canonical form leaves no byte unchecked.
        problems.append("the PEM chain is not in canonical form (64-column base64, LF)")
    report.add(
        "tdx.pck.chain",
        not problems,
        "; ".join(problems) or f"{_cn(chain[0])} ← {_cn(chain[1])} ← pinned {_cn(root)}",
    )
    return chain if not problems else None


def _check_qe(q: TdQuote, pck: x509.Certificate | None, report: EvidenceReport) -> None:
    if pck is None:
        report.fail("tdx.qe.signature", "not checked: no valid PCK certificate")
    else:
        report.add(
            "tdx.qe.signature",
            _ecdsa_p256_ok(pck.public_key(), q.qe_report_signature, q.qe_report.raw),
            "QE report signed by the PCK key",
        )
    expected = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest() + bytes(32)
    report.add(
        "tdx.qe.binding",
        hmac.compare_digest(q.qe_report.report_data, expected),
        "QE report data = SHA-256(attestation key ‖ QE auth data)",
    )


def _check_quote(q: TdQuote, policy: EvidencePolicy, report: EvidenceReport) -> None:
    key = _attestation_key(q.attestation_key)
    report.add(
        "tdx.quote.signature",
        key is not None and _ecdsa_p256_ok(key, q.signature, q.signed_data),
        "attestation key signs header ‖ TD report body"
        if key is not None
        else "attestation key is not a P-256 point",
    )
    if not q.body.debug:
        report.passed("tdx.td.debug", "TDATTRIBUTES.DEBUG = 0")
    elif policy.allow_debug:
        report.warn("tdx.td.debug", "debug TD accepted (allow debug)")
    else:
        report.fail("tdx.td.debug", "TD DEBUG=1: the host can read and alter the TD")
    if policy.nonce is not None:
        report.add(
            "tdx.nonce",
            len(policy.nonce) <= 64 and report_data_matches(q.body.report_data, policy.nonce),
            "REPORTDATA carries the nonce",
        )
    pin = policy.expected_measurement
    if pin is not None:
        same = pin == report.measurement
        report.add("tdx.measurement", same, f"MRTD {'matches' if same else 'differs from'} {pin}")


# --- collateral ---------------------------------------------------------------------------


def _signed_collateral(
    data: bytes,
    chain_pem: bytes | None,
    *,
    member: str,
    name: str,
    what: str,
    option: str,
    parse: Callable[[dict[str, Any]], _Doc],
    root: x509.Certificate,
    windows: _Windows,
    report: EvidenceReport,
) -> tuple[_Doc, list[x509.Certificate]] | None:
    """Parse one signed JSON document and verify its signature and issuer chain."""
    try:
        signed = parse_signed_json(data, member, what=what)
        parsed = parse(signed.body)
        if chain_pem is None:
            raise InputError(f"{what} signature not checked: no issuer chain ({option})")
        chain = load_certificates(chain_pem, what=f"{what} issuer chain")
    except InputError as exc:
        report.fail(name, exc.message)
        return None
    problems = chain_problems(chain, root, at=None)
    if not problems and not issued_by(chain[0], root):
        problems.append(f"{_cn(chain[0])} is not issued by the root itself")
    if not problems and not _ecdsa_p256_ok(
        chain[0].public_key(), signed.signature, signed.signed_bytes
    ):
        problems.append(f"signature does not verify with {_cn(chain[0])}")
    if problems:
        report.fail(name, f"{what}: " + "; ".join(problems))
        return None
    windows.add_certs(chain)
    issue, nxt = parsed.issue_date, parsed.next_update
    windows.add(what, issue, nxt)
    report.passed(
        name, f"signed by {_cn(chain[0])}; issued {issue.date()}, next update {nxt.date()}"
    )
    return parsed, chain


def _load_crl(data: bytes, what: str) -> tuple[x509.CertificateRevocationList, set[int]]:
    """A CRL and its revoked serial numbers, every lazily parsed field decoded now."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if b"-----BEGIN" in data:
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
            _ = crl.issuer.rfc4514_string(), crl.last_update_utc, crl.next_update_utc
            return crl, {entry.serial_number for entry in crl}
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise InputError(f"{what} is not an X.509 CRL: {exc}", code="tdx.collateral.crl") from None


def _crl_signed_by(crl: x509.CertificateRevocationList, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd attribute lengths in names
            same_name = crl.issuer == signer.subject
        return (
            same_name and isinstance(key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(key)
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _check_crl(
    data: bytes,
    signer: x509.Certificate,
    covered: list[x509.Certificate],
    *,
    name: str,
    what: str,
    windows: _Windows,
    report: EvidenceReport,
) -> None:
    """A CRL issued and signed by ``signer`` that revokes none of ``covered``."""
    try:
        crl, serials = _load_crl(data, what)
    except InputError as exc:
        report.fail(name, exc.message)
        return
    if not _crl_signed_by(crl, signer):
        report.fail(name, f"{what} is not issued and signed by {_cn(signer)}")
        return
    revoked = [_cn(c) for c in covered if c.serial_number in serials]
    windows.add(what, crl.last_update_utc, crl.next_update_utc)
    checked = ", ".join(_cn(c) for c in covered)
    report.add(
        name,
        not revoked,
        f"revoked: {', '.join(revoked)}"
        if revoked
        else f"{checked} not revoked ({what} of {crl.last_update_utc.date()})",
    )


def _pck_crl_signer(
    col: TdxCollateral,
    pck_chain: list[x509.Certificate],
    root: x509.Certificate,
    windows: _Windows,
    report: EvidenceReport,
) -> x509.Certificate | None:
    """The PCK CRL's issuer: the CA of the quote's chain, or of a separately given chain."""
    if col.pck_crl_chain is None:
        return pck_chain[1]
    try:
        chain = load_certificates(col.pck_crl_chain, what="PCK CRL issuer chain")
    except InputError as exc:
        report.fail("tdx.collateral.pck_crl", exc.message)
        return None
    problems = chain_problems(chain, root, at=None)
    if problems:
        report.fail("tdx.collateral.pck_crl", "PCK CRL issuer chain: " + "; ".join(problems))
        return None
    windows.add_certs(chain)
    return chain[0]


def _check_revocation(
    col: TdxCollateral,
    pck_chain: list[x509.Certificate],
    signing_certs: list[x509.Certificate],
    root: x509.Certificate,
    windows: _Windows,
    report: EvidenceReport,
) -> None:
    """The PCK certificate against the PCK CRL, the intermediates against the root CRL."""
    signer = _pck_crl_signer(col, pck_chain, root, windows, report)
    if col.pck_crl is not None and signer is not None:
        _check_crl(
            col.pck_crl,
            signer,
            [pck_chain[0]],
            name="tdx.collateral.pck_crl",
            what="PCK CRL",
            windows=windows,
            report=report,
        )
    if col.root_crl is not None:
        intermediates = [c for c in [*pck_chain[1:], *signing_certs] if c != root]
        _check_crl(
            col.root_crl,
            root,
            list(dict.fromkeys(intermediates)),
            name="tdx.collateral.root_crl",
            what="root CA CRL",
            windows=windows,
            report=report,
        )


def _judge_tcb(result: TcbResult, options: TdxOptions, report: EvidenceReport) -> None:
    report.facts.update(
        tcb_status=result.status,
        platform_tcb_status=result.platform_status,
        tdx_module=result.module_id,
        tdx_module_tcb_status=result.module_status,
        qe_tcb_status=result.qe.status if result.qe else None,
        advisory_ids=list(result.advisory_ids),
    )
    detail = f"{result.status}: {result.detail}"
    if result.advisory_ids:
        detail += f" (advisories {', '.join(result.advisory_ids)})"
    if result.status in ACCEPTABLE:
        report.passed("tdx.tcb", detail)
    elif result.status in ACCEPTABLE_WITH_WARNING and not options.strict_tcb:
        report.warn("tdx.tcb", detail)
    else:
        report.fail("tdx.tcb", detail)


def _check_collateral(
    q: TdQuote,
    pck_chain: list[x509.Certificate] | None,
    col: TdxCollateral,
    root: x509.Certificate,
    policy: EvidencePolicy,
    options: TdxOptions,
    report: EvidenceReport,
) -> None:
    windows = _Windows(policy.now())
    signing: list[x509.Certificate] = []
    info: TcbInfo | None = None
    identity: QeIdentity | None = None
    if col.tcb_info is not None:
        got_info = _signed_collateral(
            col.tcb_info,
            col.tcb_info_chain or col.qe_identity_chain,
            member="tcbInfo",
            name="tdx.collateral.tcb_info",
            what="TCB info",
            option="--tcb-info-chain",
            parse=parse_tcb_info,
            root=root,
            windows=windows,
            report=report,
        )
        if got_info:
            info, certs = got_info
            signing += certs
            report.facts["tcb_evaluation_data_number"] = info.evaluation_number
    if col.qe_identity is not None:
        got_identity = _signed_collateral(
            col.qe_identity,
            col.qe_identity_chain or col.tcb_info_chain,
            member="enclaveIdentity",
            name="tdx.collateral.qe_identity",
            what="QE identity",
            option="--qe-identity-chain",
            parse=parse_qe_identity,
            root=root,
            windows=windows,
            report=report,
        )
        if got_identity:
            identity, certs = got_identity
            signing += certs
    if pck_chain is not None:
        _check_revocation(col, pck_chain, signing, root, windows, report)
    if not col.empty:
        windows.report(report, options)
    missing = [option for attr, option in _REQUIRED.items() if getattr(col, attr) is None]
    if missing and not col.empty:
        (report.fail if options.strict_tcb else report.warn)(
            "tdx.collateral", f"not supplied: {', '.join(missing)}" + _no_fetch(policy)
        )
    unknown = "no collateral supplied" if col.empty else "no verified TCB info"
    _evaluate(q, pck_chain, info, identity, options, report, unknown + _no_fetch(policy))


def _no_fetch(policy: EvidencePolicy) -> str:
    if not policy.allow_network:
        return ""
    return " (fetching collateral from Intel PCS is not implemented: supply the files)"


def _evaluate(
    q: TdQuote,
    pck_chain: list[x509.Certificate] | None,
    info: TcbInfo | None,
    identity: QeIdentity | None,
    options: TdxOptions,
    report: EvidenceReport,
    unknown: str,
) -> None:
    qe: QeResult | None = evaluate_qe(identity, q.qe_report) if identity else None
    pck: PckTcb | None = None
    if pck_chain is not None:
        try:
            pck = parse_pck_extensions(pck_chain[0])
        except InputError as exc:
            report.fail("tdx.pck.extensions", exc.message)
        else:
            report.facts.update(
                fmspc=pck.fmspc.hex(), pce_svn=pck.pce_svn, cpu_svn=pck.cpu_svn.hex()
            )
    if info is not None and pck is not None:
        _judge_tcb(evaluate_tcb(info, pck, q, qe), options, report)
        return
    report.facts.update(tcb_status="unknown", qe_tcb_status=qe.status if qe else None)
    qe_text = f"; QE {qe.status}: {qe.detail}" if qe else ""
    text = f"TCB status unknown: {unknown}{qe_text}"
    if options.strict_tcb or (qe is not None and qe.status not in ACCEPTABLE):
        report.fail("tdx.tcb", text)
    else:
        report.warn("tdx.tcb", text)


# --- event log ----------------------------------------------------------------------------


def _check_event_log(q: TdQuote, log: bytes, acpi: bytes | None, report: EvidenceReport) -> None:
    try:
        if acpi is not None:
            table = parse_ccel_table(acpi)
            if table.cc_type != CC_TYPE_TDX or len(log) > table.log_area_length:
                raise InputError(
                    f"CCEL table (type {table.cc_type}, log area {table.log_area_length} bytes) "
                    f"does not describe a {len(log)}-byte TDX log"
                )
        parsed = parse_event_log(log, what="CCEL event log")
        rtmrs = replay_rtmrs(parsed)
    except InputError as exc:
        report.fail("tdx.ccel", exc.message)
        return
    wrong = [f"RTMR{i}" for i in range(4) if not hmac.compare_digest(rtmrs[i], q.body.rtmrs[i])]
    report.facts["ccel_events"] = len(parsed.events)
    report.add(
        "tdx.ccel",
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
    _check_collateral(q, pck_chain, collateral or TdxCollateral(), root, policy, options, report)
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
_REQUIRED = {
    "tcb_info": "--tcb-info",
    "qe_identity": "--qe-identity",
    "pck_crl": "--pck-crl",
    "root_crl": "--root-crl",
}
_EMBEDDED = {"quote", "event_log", "acpi_table", *_FILE_OPTIONS}


def _usage(message: str) -> Exception:
    from ..cli import UsageError  # the CLI owns exit status 2; imported late (cli imports us)

    return UsageError(message)


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return read_input(path, what=what)
    except InputError as exc:
        if exc.code == "evidence.unreadable":
            raise _usage(exc.message) from None
        raise


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
            raise _usage("--type tdx needs --tdx-quote FILE")
        quote = _read(args.tdx_quote, "TDX quote")
        assert quote is not None
        collateral = TdxCollateral(
            **{attr: _read(getattr(args, attr), attr.replace("_", " ")) for attr in _FILE_OPTIONS}
        )
        return verify_td_quote(
            quote,
            collateral,
            policy,
            TdxOptions(args.tdx_allow_expired_collateral, args.tdx_strict_tcb),
            event_log=_read(args.tdx_event_log, "CCEL event log"),
            acpi_table=_read(args.tdx_acpi_table, "CCEL ACPI table"),
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
