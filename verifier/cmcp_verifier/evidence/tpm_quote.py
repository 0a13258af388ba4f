"""TPM 2.0 quote verification: the library behind ``--type tpm``, Azure vTPM quotes and the
sidecar's TPM provider.

:func:`verify_quote` (one quote) and :func:`verify_quotes` (several quotes by one AK, e.g. one
per PCR bank) return an :class:`~cmcp_verifier.evidence.EvidenceReport`; bad input becomes
failed checks, never an exception. Checks, by report name: ``ak.key`` (a restricted, fixedTPM
signing key when its TPMT_PUBLIC is known), ``ak.certificate`` (chains to a pinned TPM root and
holds the AK), ``quote.format``, ``quote.signature``, ``quote.nonce`` (extraData == nonce),
``quote.pcr_digest`` (pcrDigest == H_sig(selected PCR values in selection order)),
``event_log.<bank>`` (replaying the log reproduces the quoted PCRs). With several quotes the
per-quote names read ``quote[i].…``.

Report data is the quote's extraData. The measurement is ``<signing hash>:<hex pcrDigest>``
(``sha256:…`` in practice) of the quote over the SHA-256 bank, else of the first quote.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import InputError
from ..report import bytes_mismatch
from . import EvidenceReport
from ._common import load_certificate
from .tcg_eventlog import parse_event_log, replay
from .tpm_chain import ak_chain_problems
from .tpm_keys import (
    AkPublic,
    ak_from_certificate,
    load_ak_public,
    load_signature,
    signature_problem,
)
from .tpm_pcrs import PcrValues, parse_pcr_file, pcr_composite_digest, pcrs_to_json
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
SHA256_ALG = 0x000B
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
    try:
        if separate_key and ak_from_certificate(cert).spki() != ak.spki():
            report.fail("ak.certificate", "the AK certificate holds a different key than the AK")
            return
    except InputError as exc:
        report.fail("ak.certificate", exc.message)
        return
    problems, path = ak_chain_problems(cert, chain, roots_dir=roots_dir, at=at)
    report.add("ak.certificate", not problems, "; ".join(problems) or f"chain {path}")


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
            "extraData equals the nonce",
            failed="extraData differs from the nonce: " + bytes_mismatch(nonce, attest.extra_data),
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
            raise InputError(f"unknown signature hash {sig_hash!r}", code="tpm.sig_hash")
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
