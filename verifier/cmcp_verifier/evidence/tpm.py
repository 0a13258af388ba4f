"""The ``tpm`` evidence type: TPM 2.0 quotes on the command line and in claims.

The verification itself is :mod:`.tpm_quote` (re-exported here: :func:`verify_quote`,
:func:`verify_quotes`, :class:`Quote`); the building blocks are :mod:`.tpm_structures`,
:mod:`.tpm_keys`, :mod:`.tpm_pcrs`, :mod:`.tcg_log`, :mod:`.tpm_chain` and :mod:`.tpm_gotpm`.

Embedded form (``gateway.attestation.evidence`` of a claim whose type is ``tpm``), every member
a base64url string; :func:`embed_evidence` writes it, unknown members are rejected:

=========== ==================================================================================
quote       TPMS_ATTEST of TPM2_Quote (required)
signature   TPMT_SIGNATURE (required)
ak_public   TPM2B_PUBLIC or TPMT_PUBLIC of the AK (or DER SubjectPublicKeyInfo)
ak_cert     DER X.509 AK certificate; required: without it the claim's AK is not anchored
ak_chain    intermediate certificates, concatenated DER or a PEM bundle (optional)
pcrs        UTF-8 JSON ``{"sha256": {"0": "<hex>", …}}`` with the quoted PCR values (optional)
event_log   TCG crypto-agile event log (optional; checked against ``pcrs``)
bundle_nv_* the policy bundle's NV extend index: ``bundle_nv_public``, ``bundle_nv_attest``,
            ``bundle_nv_signature`` (optional, all three; see :mod:`.tpm_nv`)
=========== ==================================================================================

extraData must carry the claim's binding digest, which the claim verifier compares (and with it
the verifier's nonce), so :func:`verify_embedded_quote` does not compare extraData with
``policy.nonce``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ..canonical import canonical_bytes, parse_json
from ..digests import b64url_decode, b64url_encode
from ..errors import InputError
from . import EvidencePolicy, EvidenceReport, register
from ._common import hex_or_raw, load_certificate, read_input
from .tpm_chain import certificate_list
from .tpm_gotpm import parse_gotpm_attestation
from .tpm_keys import ak_from_certificate, load_ak_public
from .tpm_nv import MEMBERS as NV_MEMBERS
from .tpm_nv import check_bundle_nv
from .tpm_pcrs import pcrs_from_json, pcrs_to_json
from .tpm_quote import Quote, verify_quote, verify_quotes
from .tpm_structures import HASH_BY_NAME

__all__ = [
    "Quote",
    "TpmEvidence",
    "embed_evidence",
    "verify_embedded_quote",
    "verify_quote",
    "verify_quotes",
]

EMBEDDED_MEMBERS = (
    "quote",
    "signature",
    "ak_public",
    "ak_cert",
    "ak_chain",
    "pcrs",
    "event_log",
    *NV_MEMBERS,
)


def embed_evidence(
    quote: bytes,
    signature: bytes,
    ak_public: bytes,
    *,
    ak_cert: bytes | None = None,
    ak_chain: Sequence[bytes] = (),
    pcrs: Mapping[int, Mapping[int, bytes]] | None = None,
    event_log: bytes | None = None,
) -> dict[str, str]:
    """The members of ``gateway.attestation.evidence`` for a TPM quote (see module docs).

    ``quote`` is the TPMS_ATTEST, ``signature`` the TPMT_SIGNATURE, ``ak_public`` the
    TPM2B_PUBLIC/TPMT_PUBLIC, ``ak_cert`` and ``ak_chain`` DER certificates.
    """
    out = {"quote": quote, "signature": signature, "ak_public": ak_public}
    if ak_cert is not None:
        out["ak_cert"] = ak_cert
    if ak_chain:
        out["ak_chain"] = b"".join(ak_chain)
    if pcrs is not None:
        out["pcrs"] = canonical_bytes(pcrs_to_json(pcrs))
    if event_log is not None:
        out["event_log"] = event_log
    return {k: b64url_encode(v) for k, v in out.items()}


def verify_embedded_quote(evidence: Mapping[str, Any], policy: EvidencePolicy) -> EvidenceReport:
    """Verify the embedded form; the AK certificate is required (fail closed)."""
    unknown = sorted(set(evidence) - set(EMBEDDED_MEMBERS))
    if unknown:
        raise InputError(f"tpm evidence has unexpected members {unknown}", code="tpm.embedded")
    for member in ("quote", "signature"):
        if member not in evidence:
            raise InputError(f"tpm evidence lacks {member!r}", code="tpm.embedded")
    raw = {k: b64url_decode(v, what=f"tpm evidence {k}") for k, v in evidence.items()}
    pcrs = (
        pcrs_from_json(parse_json(raw["pcrs"], what="tpm evidence pcrs")) if "pcrs" in raw else None
    )
    chain = (
        certificate_list(raw["ak_chain"], what="tpm evidence ak_chain") if "ak_chain" in raw else []
    )
    report = verify_quote(
        raw["quote"],
        raw["signature"],
        raw.get("ak_public"),
        pcrs=pcrs,
        event_log=raw.get("event_log"),
        ak_cert=raw.get("ak_cert"),
        ak_chain=chain,
        require_ak_cert=True,
        roots_dir=policy.roots_dir,
        at=policy.now(),
    )
    if any(m in raw for m in NV_MEMBERS):
        try:
            ak = (
                load_ak_public(raw["ak_public"])
                if "ak_public" in raw
                else ak_from_certificate(load_certificate(raw["ak_cert"], what="AK certificate"))
            )
        except (InputError, KeyError):
            report.fail("bundle_nv", "no usable AK to check the NV certification with")
        else:
            check_bundle_nv(raw, ak, report)
    return report


def _read(path: str, what: str) -> bytes:
    try:
        return read_input(path, what=what)
    except InputError as exc:
        if exc.code == "evidence.unreadable":
            raise InputError(exc.message, code="usage.unreadable") from None
        raise


def _verify_attestation(
    args: argparse.Namespace, ak: bytes | None, options: dict[str, Any]
) -> EvidenceReport:
    """``--attestation``: its own AK, certificates and log, unless given on the command line."""
    if args.tpm_quote or args.tpm_signature or args.tpm_pcrs:
        raise InputError("--attestation replaces --quote/--signature/--pcrs", code="usage.conflict")
    att = parse_gotpm_attestation(_read(args.tpm_attestation, "attestation"))
    if options["event_log"] is None:
        options["event_log"] = att.event_log
    if options["ak_cert"] is None:
        options["ak_cert"] = att.ak_cert
    options["ak_chain"] = [*options["ak_chain"], *att.intermediates]
    subject = f"TPM attestation {args.tpm_attestation}"
    return verify_quotes(att.quotes, ak or att.ak_public, subject=subject, **options)


class TpmEvidence:
    """``--type tpm``: TPM 2.0 quotes from tpm2-tools files, a go-tpm-tools attestation, or a
    claim."""

    name = "tpm"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        a = parser.add_argument
        a("--quote", dest="tpm_quote", metavar="FILE", help="TPMS_ATTEST (tpm2_quote -m)")
        a("--signature", dest="tpm_signature", metavar="FILE", help="TPMT_SIGNATURE or plain (-s)")
        a("--ak", dest="tpm_ak", metavar="FILE", help="AK public key: PEM/DER, TPM2B_PUBLIC, JWK")
        a("--ak-cert", dest="tpm_ak_cert", metavar="FILE", help="AK certificate (PEM or DER)")
        a("--ak-chain", dest="tpm_ak_chain", metavar="FILE", help="AK intermediate certificates")
        a("--pcrs", dest="tpm_pcrs", metavar="FILE", help="PCR values (tpm2_quote -o, YAML, JSON)")
        a("--event-log", dest="tpm_event_log", metavar="FILE", help="TCG event log to replay")
        a("--sig-hash", dest="tpm_sig_hash", metavar="ALG", help="hash of a plain signature")
        a(
            "--attestation",
            dest="tpm_attestation",
            metavar="FILE",
            help="go-tpm-tools attestation JSON",
        )

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        if args.tpm_sig_hash is not None and args.tpm_sig_hash not in HASH_BY_NAME:
            raise InputError(
                f"--sig-hash {args.tpm_sig_hash!r}: use one of {sorted(HASH_BY_NAME)}",
                code="usage.sig_hash",
            )
        chain = (
            certificate_list(_read(args.tpm_ak_chain, "AK chain"), what="AK chain")
            if args.tpm_ak_chain
            else []
        )
        options: dict[str, Any] = {
            "nonce": policy.nonce,
            "roots_dir": policy.roots_dir,
            "at": policy.now(),
            "sig_hash": args.tpm_sig_hash,
            "ak_chain": chain,
            "ak_cert": _read(args.tpm_ak_cert, "AK certificate") if args.tpm_ak_cert else None,
            "event_log": _read(args.tpm_event_log, "event log") if args.tpm_event_log else None,
        }
        ak = _read(args.tpm_ak, "AK") if args.tpm_ak else None
        if args.tpm_attestation:
            return _verify_attestation(args, ak, options)
        if not (args.tpm_quote and args.tpm_signature and (ak or options["ak_cert"])):
            raise InputError(
                "--type tpm needs --quote, --signature and --ak or --ak-cert (or --attestation)",
                code="usage.missing_option",
            )
        quote = Quote(
            hex_or_raw(_read(args.tpm_quote, "quote")),
            _read(args.tpm_signature, "signature"),
            _read(args.tpm_pcrs, "PCR file") if args.tpm_pcrs else None,
        )
        return verify_quotes([quote], ak, subject=f"TPM quote {args.tpm_quote}", **options)

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        return verify_embedded_quote(evidence, policy)


register(TpmEvidence())
