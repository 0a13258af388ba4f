"""Attestation keys and quote signatures in the forms TPM tools write, detected by content.

- :func:`load_ak_public`: PEM or DER SubjectPublicKeyInfo, PEM or DER X.509 certificate,
  TPM2B_PUBLIC or TPMT_PUBLIC (binary or hex text), or a JWK (RSA or EC; Azure's HCLAkPub).
- :func:`load_signature`: TPMT_SIGNATURE, or a plain signature (``tpm2_quote -f plain``): the
  raw RSA signature, or an ECDSA signature as DER or raw r‖s.
- :func:`signature_problem`: verify one against a message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ..canonical import parse_json
from ..errors import InputError
from ._common import hex_or_raw, load_certificate
from .tpm_structures import (
    ALG_RSAPSS,
    ALG_RSASSA,
    SIG_SCHEMES,
    HashAlg,
    TpmPublic,
    TpmSignature,
    parse_tpmt_public,
    parse_tpmt_signature,
)

AkKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_JWK_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}


@dataclass(frozen=True)
class AkPublic:
    """An attestation key's public key, with the TPM structure or certificate it came from."""

    key: AkKey
    source: str  # "TPMT_PUBLIC", "SubjectPublicKeyInfo", "X.509 certificate", "JWK"
    tpm_public: TpmPublic | None = None
    certificate: x509.Certificate | None = None

    def describe(self) -> str:
        if isinstance(self.key, rsa.RSAPublicKey):
            return f"RSA-{self.key.key_size}"
        return f"ECC {self.key.curve.name}"

    def spki(self) -> bytes:
        """DER SubjectPublicKeyInfo, for comparing keys across forms."""
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _checked_key(key: object, source: str) -> AkKey:
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return key
    raise InputError(
        f"{source} holds a {type(key).__name__}, not an RSA or ECC key", code="tpm.key_type"
    )


def load_ak_public(data: bytes | Mapping[str, Any]) -> AkPublic:
    """An AK public key from any supported form (see the module docs)."""
    if isinstance(data, Mapping):
        return ak_from_jwk(data)
    stripped = data.strip()
    if stripped[:1] == b"{":
        return ak_from_jwk(parse_json(stripped, what="AK JWK"))
    if b"-----BEGIN CERTIFICATE-----" in stripped:
        return ak_from_certificate(load_certificate(stripped, what="AK certificate"))
    if b"-----BEGIN" in stripped:
        try:
            key = serialization.load_pem_public_key(stripped)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InputError(f"AK PEM is not a public key: {exc}", code="tpm.key") from None
        return AkPublic(_checked_key(key, "AK PEM"), "SubjectPublicKeyInfo")
    raw = hex_or_raw(data)
    if raw[:1] == b"\x30":
        try:
            key = serialization.load_der_public_key(raw)
            return AkPublic(_checked_key(key, "AK DER"), "SubjectPublicKeyInfo")
        except (ValueError, UnsupportedAlgorithm):
            pass
        try:
            cert = load_certificate(raw, what="AK certificate")
        except InputError:
            pass
        else:
            return ak_from_certificate(cert)
    public = parse_tpmt_public(raw)
    return AkPublic(public.key, "TPMT_PUBLIC", tpm_public=public)


def ak_from_certificate(cert: x509.Certificate) -> AkPublic:
    """The AK public key of an AK certificate (the chain is checked elsewhere)."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"AK certificate key unreadable: {exc}", code="tpm.key") from None
    return AkPublic(_checked_key(key, "AK certificate"), "X.509 certificate", certificate=cert)


def ak_from_jwk(jwk: Any) -> AkPublic:
    """An RSA or EC public JWK (e.g. Azure's HCLAkPub from the HCL report's runtime data)."""
    if not isinstance(jwk, Mapping):
        raise InputError("AK JWK must be a JSON object", code="tpm.key")
    if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi")):
        raise InputError("AK JWK carries private key material", code="jwk.private")
    try:
        if jwk.get("kty") == "RSA":
            n, e = _jwk_int(jwk, "n"), _jwk_int(jwk, "e")
            return AkPublic(rsa.RSAPublicNumbers(e, n).public_key(), "JWK")
        if jwk.get("kty") == "EC" and jwk.get("crv") in _JWK_CURVES:
            curve = _JWK_CURVES[jwk["crv"]]()
            x, y = _jwk_int(jwk, "x"), _jwk_int(jwk, "y")
            return AkPublic(ec.EllipticCurvePublicNumbers(x, y, curve).public_key(), "JWK")
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"AK JWK is not a valid public key: {exc}", code="tpm.key") from None
    raise InputError(
        f"AK JWK kty={str(jwk.get('kty'))[:20]!r} crv={str(jwk.get('crv'))[:20]!r} unsupported",
        code="tpm.key",
    )


def _jwk_int(jwk: Mapping[str, Any], member: str) -> int:
    value = jwk.get(member)
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise InputError(f"AK JWK member {member!r} missing or not a string", code="tpm.key")
    try:
        raw = base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise InputError(f"AK JWK member {member!r} is not base64url", code="tpm.key") from None
    return int.from_bytes(raw, "big")


def load_signature(data: bytes, ak: AkPublic) -> TpmSignature:
    """A TPMT_SIGNATURE or a plain signature for ``ak``'s key type (detected by length/shape)."""
    raw = hex_or_raw(data)
    if len(raw) >= 2 and int.from_bytes(raw[:2], "big") in SIG_SCHEMES:
        try:
            return parse_tpmt_signature(raw)
        except InputError:
            pass  # may still be a plain signature that happens to start like one
    key = ak.key
    if isinstance(key, rsa.RSAPublicKey):
        if len(raw) == (key.key_size + 7) // 8:
            return TpmSignature(_rsa_scheme(ak), None, raw, "plain")
        what = f"{(key.key_size + 7) // 8}-byte plain RSA signature"
    else:
        size = (key.curve.key_size + 7) // 8
        if raw[:1] == b"\x30":
            try:
                decode_dss_signature(raw)
                return TpmSignature("ecdsa", None, raw, "plain")
            except ValueError:
                pass
        if len(raw) == 2 * size:
            r, s = int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
            return TpmSignature("ecdsa", None, encode_dss_signature(r, s), "plain")
        what = f"DER or {2 * size}-byte r‖s ECDSA signature"
    raise InputError(
        f"signature ({len(raw)} bytes) is neither a TPMT_SIGNATURE nor a {what}",
        code="tpm.signature_format",
    )


def _rsa_scheme(ak: AkPublic) -> str:
    """The scheme of a plain RSA signature: the key's own, else either PKCS#1 scheme."""
    scheme = ak.tpm_public.scheme if ak.tpm_public else None
    return {ALG_RSASSA: "rsassa", ALG_RSAPSS: "rsapss"}.get(scheme or 0, "rsa")


def signature_problem(sig: TpmSignature, ak: AkPublic, message: bytes, alg: HashAlg) -> str | None:
    """None when ``sig`` is ``ak``'s signature over ``message`` with hash ``alg``."""
    if alg.crypto is None:
        return f"{alg.name} signatures are not accepted"
    h = alg.crypto()
    key = ak.key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if sig.scheme == "ecdsa":
                return "ECDSA signature, but the AK is an RSA key"
            if sig.scheme in ("rsassa", "rsa") and _rsa_ok(
                key, sig.value, message, padding.PKCS1v15(), h
            ):
                return None
            pss = padding.PSS(mgf=padding.MGF1(alg.crypto()), salt_length=padding.PSS.AUTO)
            if sig.scheme in ("rsapss", "rsa") and _rsa_ok(key, sig.value, message, pss, h):
                return None
            return f"{sig.scheme} {alg.name} signature does not verify with the AK"
        if sig.scheme != "ecdsa":
            return f"{sig.scheme} signature, but the AK is an ECC key"
        key.verify(sig.value, message, ec.ECDSA(h))
    except InvalidSignature:
        return f"ecdsa {alg.name} signature does not verify with the AK"
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"signature unusable: {exc}"
    return None


def _rsa_ok(
    key: rsa.RSAPublicKey, sig: bytes, msg: bytes, pad: padding.AsymmetricPadding, h: Any
) -> bool:
    try:
        key.verify(sig, msg, pad, h)
    except InvalidSignature:
        return False
    return True
