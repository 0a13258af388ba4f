"""TPM 2.0 quotes: the verification library and the ``tpm`` evidence type.

Library API (reused for Azure vTPM quotes and by the sidecar's TPM provider):

- :func:`verify_quote` (one quote) / :func:`verify_quotes` (several quotes by one AK, e.g. one
  per PCR bank) → :class:`~cmcp_verifier.evidence.EvidenceReport`; bad input becomes failed
  checks, never an exception.
- :func:`embed_evidence` builds, and :func:`verify_embedded_quote` checks, the claim form below.
- Building blocks: :func:`~.tpm_keys.load_ak_public`, :func:`~.tpm_keys.ak_from_jwk`,
  :func:`~.tpm_structures.parse_tpms_attest`, :func:`~.tpm_structures.parse_tpmt_signature`,
  :func:`~.tpm_structures.parse_tpmt_public`, :func:`~.tpm_pcrs.parse_pcr_file`,
  :func:`~.tcg_log.parse_event_log`, :func:`~.tcg_log.replay`.

Checks (names as in the report): ``ak.key`` (a restricted, fixedTPM signing key when its
TPMT_PUBLIC is known), ``ak.certificate`` (AK certificate chains to a pinned TPM root and holds
the AK), ``quote.format``, ``quote.signature``, ``quote.nonce`` (extraData == nonce),
``quote.pcr_digest`` (pcrDigest == H_sig(selected PCR values in selection order)),
``event_log.<bank>`` (replaying the log reproduces the quoted PCRs). With several quotes the
per-quote names read ``quote[i].…``. Pinned TPM roots are the self-signed certificates among the
root files named ``gce-tpm-*`` or ``tpm-*``; the others there serve as intermediates.

Report data is the quote's extraData (a claim puts its 32-byte binding digest there). The
measurement is ``<signing hash>:<hex pcrDigest>`` (``sha256:…`` in practice) of the quote over
the SHA-256 bank, or of the first quote when none selects that bank.

Embedded form (``gateway.attestation.evidence`` of a claim whose type is ``tpm``), every member
a base64url string:

=========== ==================================================================================
quote       TPMS_ATTEST of TPM2_Quote (required)
signature   TPMT_SIGNATURE (required)
ak_public   TPM2B_PUBLIC or TPMT_PUBLIC of the AK (or DER SubjectPublicKeyInfo)
ak_cert     DER X.509 AK certificate; required: without it the claim's AK is not anchored
ak_chain    intermediate certificates, concatenated DER or a PEM bundle (optional)
pcrs        UTF-8 JSON ``{"sha256": {"0": "<hex>", …}}`` with the quoted PCR values (optional)
event_log   TCG crypto-agile event log (optional; checked against ``pcrs``)
=========== ==================================================================================

In a claim the verifier's nonce is bound through the binding digest in extraData (compared by
the claim verifier), so :meth:`TpmEvidence.verify_embedded` does not compare extraData with it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hmac
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509

from ..canonical import canonical_bytes, parse_json
from ..digests import b64url_decode, b64url_encode
from ..errors import InputError
from ..roots import BUNDLED, root_certificates
from . import EvidencePolicy, EvidenceReport, register
from ._common import (
    chain_problems,
    hex_or_raw,
    issued_by,
    load_certificate,
    load_certificates,
    read_input,
)
from .tcg_log import parse_event_log, replay
from .tpm_keys import (
    AkPublic,
    ak_from_certificate,
    load_ak_public,
    load_signature,
    signature_problem,
)
from .tpm_pcrs import PcrValues, parse_pcr_file, pcr_composite_digest, pcrs_from_json, pcrs_to_json
from .tpm_structures import (
    ATTR_DECRYPT,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SIGN,
    HASH_ALGS,
    HASH_BY_NAME,
    HashAlg,
    TpmsAttest,
    TpmSignature,
    alg_name,
    hash_alg,
    parse_tpms_attest,
)

PLATFORM = "tpm2"
TPM_ROOT_PREFIXES = ("gce-tpm-", "tpm-")
MAX_CHAIN_DEPTH = 6
SHA256_ALG = 0x000B
EMBEDDED_MEMBERS = ("quote", "signature", "ak_public", "ak_cert", "ak_chain", "pcrs", "event_log")
_BY_DIGEST_SIZE = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}


@dataclass(frozen=True)
class Quote:
    """One quote: the signed TPMS_ATTEST, its signature, and optionally the PCR values.

    ``pcrs`` is :data:`~.tpm_pcrs.PcrValues` or the bytes of a PCR file in any form
    :func:`~.tpm_pcrs.parse_pcr_file` reads.
    """

    attest: bytes
    signature: bytes
    pcrs: Mapping[int, Mapping[int, bytes]] | bytes | None = None


@dataclass
class _QuoteResult:
    attest: TpmsAttest | None = None
    alg: HashAlg | None = None
    pcrs: PcrValues = field(default_factory=dict)  # values proven by pcrDigest


def verify_quote(
    attest: bytes,
    signature: bytes,
    ak_public: AkPublic | bytes | None,
    *,
    pcrs: Mapping[int, Mapping[int, bytes]] | bytes | None = None,
    nonce: bytes | None = None,
    event_log: bytes | None = None,
    ak_cert: x509.Certificate | bytes | None = None,
    ak_chain: Sequence[x509.Certificate] = (),
    require_ak_cert: bool = False,
    roots_dir: Path | None = None,
    at: dt.datetime | None = None,
    sig_hash: str | None = None,
) -> EvidenceReport:
    """Verify one TPM2_Quote; see :func:`verify_quotes`."""
    return verify_quotes(
        [Quote(attest, signature, pcrs)],
        ak_public,
        nonce=nonce,
        event_log=event_log,
        ak_cert=ak_cert,
        ak_chain=ak_chain,
        require_ak_cert=require_ak_cert,
        roots_dir=roots_dir,
        at=at,
        sig_hash=sig_hash,
    )


def verify_quotes(
    quotes: Sequence[Quote],
    ak_public: AkPublic | bytes | None,
    *,
    nonce: bytes | None = None,
    event_log: bytes | None = None,
    ak_cert: x509.Certificate | bytes | None = None,
    ak_chain: Sequence[x509.Certificate] = (),
    require_ak_cert: bool = False,
    roots_dir: Path | None = None,
    at: dt.datetime | None = None,
    sig_hash: str | None = None,
    subject: str = "TPM quote",
) -> EvidenceReport:
    """Verify quotes signed by one AK.

    ``ak_public`` is trusted as given unless ``ak_cert`` is passed (then the certificate must
    chain to a pinned TPM root and hold that key; with ``ak_public`` None the certificate's key
    is the AK). ``require_ak_cert`` makes a missing certificate a failure. ``nonce`` (when
    given) must equal every quote's extraData. ``sig_hash`` names the hash of plain
    signatures (default: the AK's scheme hash, else the one whose size pcrDigest has).
    """
    report = EvidenceReport(subject=subject, platform=PLATFORM)
    try:
        cert = (
            load_certificate(ak_cert, what="AK certificate")
            if isinstance(ak_cert, bytes)
            else ak_cert
        )
    except InputError as exc:
        report.fail("ak.certificate", exc.message)
        return report
    try:
        ak = _resolve_ak(ak_public, cert)
    except InputError as exc:
        report.fail("ak.key", exc.message)
        return report
    report.facts["ak"] = _ak_facts(ak)
    _check_ak_key(ak, report)
    _check_ak_certificate(
        ak, ak_public is not None, ak_chain, require_ak_cert, roots_dir, at, report
    )
    results = []
    for i, quote in enumerate(quotes):
        prefix = "quote." if len(quotes) == 1 else f"quote[{i}]."
        results.append(_verify_one(quote, ak, nonce, sig_hash, prefix, report))
    _summarise(results, report)
    if event_log is not None:
        _check_event_log(event_log, results, report)
    return report


def _resolve_ak(ak_public: AkPublic | bytes | None, cert: x509.Certificate | None) -> AkPublic:
    if ak_public is None:
        if cert is None:
            raise InputError("no AK public key and no AK certificate given", code="tpm.no_ak")
        return ak_from_certificate(cert)
    ak = ak_public if isinstance(ak_public, AkPublic) else load_ak_public(ak_public)
    if cert is not None:
        ak = AkPublic(ak.key, ak.source, ak.tpm_public, cert)
    return ak


def _ak_facts(ak: AkPublic) -> dict[str, Any]:
    facts: dict[str, Any] = {"key": ak.describe(), "source": ak.source}
    if ak.tpm_public is not None:
        name = ak.tpm_public.name
        facts["attributes"] = f"0x{ak.tpm_public.attributes:08x}"
        facts["name"] = name.hex() if name else None
    return facts


def _check_ak_key(ak: AkPublic, report: EvidenceReport) -> None:
    public = ak.tpm_public
    if public is None:
        report.skip("ak.key", f"{ak.describe()} from a {ak.source}: TPM object attributes unknown")
        return
    missing = [
        name
        for name, flag in (
            ("restricted", ATTR_RESTRICTED),
            ("sign", ATTR_SIGN),
            ("fixedTPM", ATTR_FIXED_TPM),
        )
        if not public.has(flag)
    ]
    if public.has(ATTR_DECRYPT):
        missing.append("not decrypt")
    report.add(
        "ak.key",
        not missing,
        f"{ak.describe()} restricted signing key, fixedTPM"
        if not missing
        else f"AK is not a restricted TPM signing key (lacks {', '.join(missing)}): "
        "it could sign forged quotes",
    )


def _check_ak_certificate(
    ak: AkPublic,
    separate_key: bool,
    chain: Sequence[x509.Certificate],
    required: bool,
    roots_dir: Path | None,
    at: dt.datetime | None,
    report: EvidenceReport,
) -> None:
    cert = ak.certificate
    if cert is None:
        if required:
            report.fail(
                "ak.certificate", "no AK certificate: the AK is not anchored to a pinned root"
            )
        else:
            report.skip("ak.certificate", "no AK certificate given: the AK is trusted as supplied")
        return
    if separate_key and ak_from_certificate(cert).spki() != ak.spki():
        report.fail("ak.certificate", "the AK certificate holds a different key than the AK")
        return
    problems, path = ak_chain_problems(cert, chain, roots_dir=roots_dir, at=at)
    report.add("ak.certificate", not problems, "; ".join(problems) or f"chain {path}")


def tpm_roots(
    roots_dir: Path | None = None,
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """Pinned TPM trust anchors and known intermediates (root files ``gce-tpm-*``, ``tpm-*``)."""
    if roots_dir is not None:
        try:
            names = sorted(p.name for p in Path(roots_dir).iterdir() if p.is_file())
        except OSError as exc:
            raise InputError(
                f"roots directory {str(roots_dir)!r} unreadable: {exc.strerror}",
                code="roots.missing",
            ) from None
    else:
        names = sorted(p.name for p in resources.files("cmcp_verifier").joinpath(BUNDLED).iterdir())
    anchors: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    for name in names:
        if name.startswith(TPM_ROOT_PREFIXES):
            for cert in root_certificates(name, roots_dir):
                (anchors if issued_by(cert, cert) else intermediates).append(cert)
    return anchors, intermediates


def ak_chain_problems(
    cert: x509.Certificate,
    extra: Sequence[x509.Certificate] = (),
    *,
    roots_dir: Path | None = None,
    at: dt.datetime | None = None,
) -> tuple[list[str], str]:
    """Problems of ``cert``'s chain to a pinned TPM root (empty = valid), and the path taken."""
    try:
        anchors, known = tpm_roots(roots_dir)
    except InputError as exc:
        return [exc.message], ""
    if not anchors:
        return ["no pinned TPM roots (files gce-tpm-* or tpm-* in the roots directory)"], ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Google's CA names exceed X.520's 64-character CN bound
        return _build_chain(cert, [*extra, *known], anchors, at)


def _build_chain(
    cert: x509.Certificate,
    pool: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime | None,
) -> tuple[list[str], str]:
    path = [cert]
    while len(path) <= MAX_CHAIN_DEPTH:
        anchor = next((a for a in anchors if issued_by(path[-1], a)), None)
        if anchor is not None:
            problems = chain_problems(path, anchor, at=at or dt.datetime.now(dt.UTC))
            return problems, " → ".join(_short_name(c) for c in [*path, anchor])
        parent = next((c for c in pool if c not in path and issued_by(path[-1], c)), None)
        if parent is None:
            break
        path.append(parent)
    issuer = path[-1].issuer.rfc4514_string()[:120]
    return [f"AK certificate does not chain to a pinned TPM root (stuck at issuer {issuer})"], ""


def _short_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string() or "(AK)"


def _verify_one(
    quote: Quote,
    ak: AkPublic,
    nonce: bytes | None,
    sig_hash: str | None,
    prefix: str,
    report: EvidenceReport,
) -> _QuoteResult:
    result = _QuoteResult()
    try:
        attest = parse_tpms_attest(quote.attest)
    except InputError as exc:
        report.fail(prefix + "format", exc.message)
        return result
    result.attest = attest
    report.passed(prefix + "format", f"TPMS_ATTEST quote, {len(attest.raw)} bytes")
    try:
        sig = load_signature(quote.signature, ak)
        alg = _signing_hash(sig, ak, attest, sig_hash)
    except InputError as exc:
        report.fail(prefix + "signature", exc.message)
        return result
    result.alg = alg
    problem = signature_problem(sig, ak, attest.raw, alg)
    report.add(
        prefix + "signature",
        problem is None,
        problem or f"{sig.scheme}-{alg.name} ({sig.form}) by the AK",
    )
    if nonce is not None:
        report.add(
            prefix + "nonce",
            hmac.compare_digest(attest.extra_data, nonce),
            f"extraData {'equals' if attest.extra_data == nonce else 'differs from'} the nonce"
            + ("" if attest.extra_data else " (extraData is empty)"),
        )
    if quote.pcrs is not None:
        result.pcrs = _check_pcr_digest(quote.pcrs, attest, alg, prefix, report)
    else:
        report.skip(prefix + "pcr_digest", "no PCR values given: pcrDigest not compared")
    facts = _quote_facts(attest, sig, alg)
    if result.pcrs:
        facts["pcrs"] = pcrs_to_json(result.pcrs)
    report.facts.setdefault("quotes", []).append(facts)
    return result


def _signing_hash(
    sig: TpmSignature, ak: AkPublic, attest: TpmsAttest, sig_hash: str | None
) -> HashAlg:
    if sig.hash_alg is not None:
        return hash_alg(sig.hash_alg, what="signature")
    if sig_hash is not None:
        named = HASH_BY_NAME.get(sig_hash)
        if named is None:
            raise InputError(f"unknown signature hash {sig_hash!r}", code="usage.sig_hash")
        return named
    scheme_hash = ak.tpm_public.scheme_hash if ak.tpm_public else None
    if scheme_hash is not None:
        return hash_alg(scheme_hash, what="AK scheme")
    by_size = _BY_DIGEST_SIZE.get(len(attest.pcr_digest))
    if by_size is None:
        raise InputError(
            "plain signature: cannot tell its hash (give --sig-hash)", code="tpm.signature_hash"
        )
    return HASH_BY_NAME[by_size]


def _check_pcr_digest(
    pcrs: Mapping[int, Mapping[int, bytes]] | bytes,
    attest: TpmsAttest,
    alg: HashAlg,
    prefix: str,
    report: EvidenceReport,
) -> PcrValues:
    name = prefix + "pcr_digest"
    try:
        values = parse_pcr_file(pcrs, attest.pcr_selection) if isinstance(pcrs, bytes) else pcrs
        digest = pcr_composite_digest(attest.pcr_selection, values, alg)
    except InputError as exc:
        report.fail(name, exc.message)
        return {}
    ok = hmac.compare_digest(digest, attest.pcr_digest)
    banks = ", ".join(f"{s.bank}:{_ranges(s.pcrs)}" for s in attest.pcr_selection)
    report.add(
        name,
        ok,
        f"{alg.name} over {banks} equals pcrDigest"
        if ok
        else f"{alg.name} over the given {banks} values is {digest.hex()[:16]}…, "
        f"pcrDigest is {attest.pcr_digest.hex()[:16]}…",
    )
    if not ok:
        return {}
    return {
        s.hash_alg: {i: bytes(values[s.hash_alg][i]) for i in s.pcrs} for s in attest.pcr_selection
    }


def _quote_facts(attest: TpmsAttest, sig: TpmSignature, alg: HashAlg) -> dict[str, Any]:
    return {
        "signer": attest.qualified_signer.hex(),
        "extra_data": attest.extra_data.hex(),
        "clock": attest.clock_info.to_json(),
        "firmware_version": f"0x{attest.firmware_version:016x}",
        "pcr_selection": [s.to_json() for s in attest.pcr_selection],
        "pcr_digest": f"{alg.name}:{attest.pcr_digest.hex()}",
        "signature": f"{sig.scheme}-{alg.name}",
    }


def _summarise(results: list[_QuoteResult], report: EvidenceReport) -> None:
    parsed = [r for r in results if r.attest is not None and r.alg is not None]
    if not parsed:
        return
    extra = {r.attest.extra_data for r in parsed if r.attest}
    if len(results) > 1:
        report.add("quotes.extra_data", len(extra) == 1, f"{len(extra)} distinct extraData values")
    report.report_data = parsed[0].attest.extra_data if parsed[0].attest else None
    main = next(
        (
            r
            for r in parsed
            if r.attest and any(s.hash_alg == SHA256_ALG for s in r.attest.pcr_selection)
        ),
        parsed[0],
    )
    if main.attest and main.alg:
        report.measurement = f"{main.alg.name}:{main.attest.pcr_digest.hex()}"


def _check_event_log(data: bytes, results: list[_QuoteResult], report: EvidenceReport) -> None:
    try:
        log = parse_event_log(data)
    except InputError as exc:
        report.fail("event_log.parse", exc.message)
        return
    report.facts["event_log"] = {"events": len(log.events), "banks": log.banks}
    quoted: PcrValues = {}
    for r in results:
        for alg_id, bank in r.pcrs.items():
            quoted.setdefault(alg_id, {}).update(bank)
    compared = 0
    for alg_id in log.digest_sizes:
        alg = HASH_ALGS.get(alg_id)
        if alg is None or alg_id not in quoted:
            report.skip(f"event_log.{alg_name(alg_id)}", "bank not covered by a verified quote")
            continue
        try:
            regs = replay(log.events, alg)
        except InputError as exc:
            report.fail(f"event_log.{alg.name}", exc.message)
            continue
        compared += _compare_replay(alg, regs, quoted[alg_id], len(log.events), report)
    if not compared:
        report.fail(
            "event_log.replay",
            "no verified PCR values of the log's banks "
            f"({', '.join(log.banks)}) to compare with (give PCR values the quote covers)",
        )


def _compare_replay(
    alg: HashAlg,
    regs: dict[int, bytes],
    quoted: dict[int, bytes],
    events: int,
    report: EvidenceReport,
) -> bool:
    """Compare one bank's replay with the quoted values; False when they share no PCR."""
    name = f"event_log.{alg.name}"
    both = sorted(set(regs) & set(quoted))
    if not both:
        report.skip(name, f"the log's PCR {_ranges(sorted(regs))} are not quoted in this bank")
        return False
    wrong = [i for i in both if not hmac.compare_digest(regs[i], quoted[i])]
    if wrong:
        i = wrong[0]
        report.fail(
            name,
            f"replay differs at PCR {_ranges(wrong)} (PCR {i}: log {regs[i].hex()[:16]}…, "
            f"quoted {quoted[i].hex()[:16]}…)",
        )
    else:
        unquoted = sorted(set(regs) - set(quoted))
        note = f"; PCR {_ranges(unquoted)} not quoted" if unquoted else ""
        report.passed(name, f"{events} events reproduce PCR {_ranges(both)}{note}")
    return True


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` → ``0-2,5``."""
    parts: list[str] = []
    for i in indices:
        if parts and parts[-1].split("-")[-1] == str(i - 1):
            parts[-1] = parts[-1].split("-")[0] + f"-{i}"
        else:
            parts.append(str(i))
    return ",".join(parts) or "none"


# --- the claim's embedded form ---------------------------------------------------------------


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
        _certificates(raw["ak_chain"], what="tpm evidence ak_chain") if "ak_chain" in raw else []
    )
    return verify_quote(
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


def _certificates(data: bytes, *, what: str) -> list[x509.Certificate]:
    """A PEM bundle, or DER certificates concatenated."""
    if b"-----BEGIN" in data:
        return load_certificates(data, what=what)
    certs, pos = [], 0
    while pos < len(data):
        end = pos + _der_length(data, pos, what)
        certs.append(load_certificate(data[pos:end], what=what))
        pos = end
    return certs


def _der_length(data: bytes, pos: int, what: str) -> int:
    """Total length of the DER SEQUENCE at ``pos``."""
    if data[pos] != 0x30 or pos + 2 > len(data):
        raise InputError(f"{what}: not a DER certificate at offset {pos}", code="cert.malformed")
    first = data[pos + 1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if not 1 <= n <= 3 or pos + 2 + n > len(data):
        raise InputError(f"{what}: bad DER length at offset {pos}", code="cert.malformed")
    return 2 + n + int.from_bytes(data[pos + 2 : pos + 2 + n], "big")


# --- go-tpm-tools attestation (JSON re-encoding of its protobuf) ----------------------------


@dataclass(frozen=True)
class Attestation:
    """What a go-tpm-tools Attestation holds: AK, certificates, quotes and the event log."""

    ak_public: bytes
    ak_cert: bytes | None
    intermediates: list[x509.Certificate]
    quotes: list[Quote]
    event_log: bytes | None


def parse_gotpm_attestation(data: bytes) -> Attestation:
    """A go-tpm-tools Attestation as JSON (``ak_public_tpmt_hex``, ``ak_cert_der_b64``,
    ``intermediate_certs_der_b64``, ``event_log_b64``, ``quotes[{tpms_attest_hex,
    tpmt_signature_hex, pcr_hash_alg, pcrs{index: hex}}]``)."""
    obj = parse_json(data, what="attestation")
    if not isinstance(obj, dict) or not isinstance(obj.get("quotes"), list) or not obj["quotes"]:
        raise InputError("attestation JSON needs a non-empty 'quotes' list", code="tpm.attestation")
    quotes = [_gotpm_quote(q, i) for i, q in enumerate(obj["quotes"][:16])]
    ak_cert = _b64(obj, "ak_cert_der_b64") if "ak_cert_der_b64" in obj else None
    inter = obj.get("intermediate_certs_der_b64", [])
    if not isinstance(inter, list):
        raise InputError("intermediate_certs_der_b64 must be a list", code="tpm.attestation")
    certs = [
        load_certificate(_b64({"c": c}, "c"), what="intermediate certificate") for c in inter[:8]
    ]
    return Attestation(
        ak_public=_hex(obj, "ak_public_tpmt_hex"),
        ak_cert=ak_cert,
        intermediates=certs,
        quotes=quotes,
        event_log=_b64(obj, "event_log_b64") if "event_log_b64" in obj else None,
    )


def _gotpm_quote(q: Any, i: int) -> Quote:
    if not isinstance(q, dict):
        raise InputError(f"attestation quotes[{i}] must be an object", code="tpm.attestation")
    pcrs = None
    if "pcrs" in q:
        alg = q.get("pcr_hash_alg")
        if not isinstance(alg, int) or alg not in HASH_ALGS:
            raise InputError(
                f"quotes[{i}].pcr_hash_alg {alg!r} unsupported", code="tpm.attestation"
            )
        pcrs = pcrs_from_json({alg_name(alg): q["pcrs"]})
    return Quote(_hex(q, "tpms_attest_hex"), _hex(q, "tpmt_signature_hex"), pcrs)


def _hex(obj: dict[str, Any], key: str) -> bytes:
    value = obj.get(key)
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
    except ValueError:
        pass
    raise InputError(f"attestation member {key!r} must be a hex string", code="tpm.attestation")


def _b64(obj: dict[str, Any], key: str) -> bytes:
    value = obj.get(key)
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    raise InputError(f"attestation member {key!r} must be base64", code="tpm.attestation")


# --- the evidence type ------------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        return read_input(path, what=what)
    except InputError as exc:
        if exc.code == "evidence.unreadable":
            raise InputError(exc.message, code="usage.unreadable") from None
        raise


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
            load_certificates(_read(args.tpm_ak_chain, "AK chain"), what="AK chain")
            if args.tpm_ak_chain
            else []
        )
        cert = _read(args.tpm_ak_cert, "AK certificate") if args.tpm_ak_cert else None
        ak = _read(args.tpm_ak, "AK") if args.tpm_ak else None
        event_log = _read(args.tpm_event_log, "event log") if args.tpm_event_log else None
        common: dict[str, Any] = {
            "nonce": policy.nonce,
            "roots_dir": policy.roots_dir,
            "at": policy.now(),
            "sig_hash": args.tpm_sig_hash,
        }
        if args.tpm_attestation:
            if args.tpm_quote or args.tpm_signature or args.tpm_pcrs:
                raise InputError(
                    "--attestation replaces --quote/--signature/--pcrs", code="usage.conflict"
                )
            att = parse_gotpm_attestation(_read(args.tpm_attestation, "attestation"))
            return verify_quotes(
                att.quotes,
                ak if ak is not None else att.ak_public,
                event_log=event_log if event_log is not None else att.event_log,
                ak_cert=cert if cert is not None else att.ak_cert,
                ak_chain=[*chain, *att.intermediates],
                subject=f"TPM attestation {args.tpm_attestation}",
                **common,
            )
        if not (args.tpm_quote and args.tpm_signature and (ak or cert)):
            raise InputError(
                "--type tpm needs --quote, --signature and --ak or --ak-cert (or --attestation)",
                code="usage.missing_option",
            )
        quote = Quote(
            hex_or_raw(_read(args.tpm_quote, "quote")),
            _read(args.tpm_signature, "signature"),
            _read(args.tpm_pcrs, "PCR file") if args.tpm_pcrs else None,
        )
        return verify_quotes(
            [quote],
            ak,
            event_log=event_log,
            ak_cert=cert,
            ak_chain=chain,
            subject=f"TPM quote {args.tpm_quote}",
            **common,
        )

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        return verify_embedded_quote(evidence, policy)


register(TpmEvidence())
