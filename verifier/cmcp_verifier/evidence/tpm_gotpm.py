"""go-tpm-tools attestations, as the JSON re-encoding of its protobuf the GCE samples use.

Members read: ``ak_public_tpmt_hex``, ``ak_cert_der_b64``, ``intermediate_certs_der_b64``
(optional list), ``event_log_b64``, ``quotes[{tpms_attest_hex, tpmt_signature_hex,
pcr_hash_alg, pcrs{index: hex}}]``; others are ignored.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ..canonical import parse_json
from ..errors import InputError
from ._common import load_certificate
from .tpm_pcrs import pcrs_from_json
from .tpm_quote import Quote
from .tpm_structures import HASH_ALGS, alg_name


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
