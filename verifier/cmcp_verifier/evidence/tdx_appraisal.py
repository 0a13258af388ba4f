"""Appraising a TDX quote with Intel's collateral: signatures and issuer chains of the TCB
info and QE identity, CRLs, validity at the evaluation time, and the TCB status as checks.

:func:`check_collateral` adds ``collateral.*`` and ``tcb`` checks to a report; the
TCB algorithm itself is :mod:`.tdx_tcb`.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import InputError
from . import EvidencePolicy, EvidenceReport
from ._common import chain_problems, common_name, issued_by, load_certificates, short_reason
from .sgx_pck import PckTcb, parse_pck_extensions
from .tdx_collateral import (
    QeIdentity,
    TcbInfo,
    parse_qe_identity,
    parse_signed_json,
    parse_tcb_info,
)
from .tdx_quote import TdQuote
from .tdx_tcb import (
    ACCEPTABLE,
    ACCEPTABLE_WITH_WARNING,
    QeResult,
    TcbResult,
    evaluate_qe,
    evaluate_tcb,
)

_Doc = TypeVar("_Doc", TcbInfo, QeIdentity)
REQUIRED_OPTIONS = {
    "tcb_info": "--tcb-info",
    "qe_identity": "--qe-identity",
    "pck_crl": "--pck-crl",
    "root_crl": "--root-crl",
}


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
                what = f"certificate {common_name(cert)}"
                self.add(what, cert.not_valid_before_utc, cert.not_valid_after_utc)

    def report(self, report: EvidenceReport, options: TdxOptions) -> None:
        when = f"at {self.at.isoformat()}"
        if self.early or (self.expired and not options.allow_expired_collateral):
            report.fail("collateral.validity", f"{when}: " + "; ".join(self.early + self.expired))
        elif self.expired:
            report.warn(
                "collateral.validity",
                f"{when}: " + "; ".join(self.expired) + " (accepted: allow expired collateral)",
            )
        else:
            report.passed("collateral.validity", f"all collateral current {when}")


def ecdsa_p256_ok(key: Any, signature: bytes, data: bytes) -> bool:
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
        problems.append(f"{common_name(chain[0])} is not issued by the root itself")
    if not problems and not ecdsa_p256_ok(
        chain[0].public_key(), signed.signature, signed.signed_bytes
    ):
        problems.append(f"signature does not verify with {common_name(chain[0])}")
    if problems:
        report.fail(name, f"{what}: " + "; ".join(problems))
        return None
    windows.add_certs(chain)
    issue, nxt = parsed.issue_date, parsed.next_update
    windows.add(what, issue, nxt)
    report.passed(
        name, f"signed by {common_name(chain[0])}; issued {issue.date()}, next update {nxt.date()}"
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
    # cryptography raises TypeError for a name attribute of the wrong ASN.1 type (fuzz finding)
    except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise InputError(
            f"{what} is not an X.509 CRL: {short_reason(exc)}", code="tdx.collateral.crl"
        ) from None


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
        report.fail(name, f"{what} is not issued and signed by {common_name(signer)}")
        return
    revoked = [common_name(c) for c in covered if c.serial_number in serials]
    windows.add(what, crl.last_update_utc, crl.next_update_utc)
    checked = ", ".join(common_name(c) for c in covered)
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
        report.fail("collateral.pck_crl", exc.message)
        return None
    problems = chain_problems(chain, root, at=None)
    if problems:
        report.fail("collateral.pck_crl", "PCK CRL issuer chain: " + "; ".join(problems))
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
            name="collateral.pck_crl",
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
            name="collateral.root_crl",
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
        report.passed("tcb", detail)
    elif result.status in ACCEPTABLE_WITH_WARNING and not options.strict_tcb:
        report.warn("tcb", detail)
    else:
        report.fail("tcb", detail)


def check_collateral(
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
            name="collateral.tcb_info",
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
            name="collateral.qe_identity",
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
    missing = [option for attr, option in REQUIRED_OPTIONS.items() if getattr(col, attr) is None]
    if missing and not col.empty:
        (report.fail if options.strict_tcb else report.warn)(
            "collateral", f"not supplied: {', '.join(missing)}" + _no_fetch(policy)
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
            report.fail("pck.extensions", exc.message)
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
        report.fail("tcb", text)
    else:
        report.warn("tcb", text)
