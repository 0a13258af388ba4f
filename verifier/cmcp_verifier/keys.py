"""Ed25519 keys as JWKs (RFC 8037) and their RFC 7638 thumbprints."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .canonical import canonical_bytes
from .digests import b64url_decode, b64url_encode
from .errors import InputError


def public_jwk(key: Ed25519PrivateKey | Ed25519PublicKey) -> dict[str, str]:
    """The OKP public JWK of an Ed25519 key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (base64url SHA-256) of an OKP Ed25519 JWK."""
    key = load_public_jwk(jwk)
    members = public_jwk(key)
    digest = hashlib.sha256(canonical_bytes({k: members[k] for k in ("crv", "kty", "x")}))
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def load_public_jwk(jwk: Any) -> Ed25519PublicKey:
    """An Ed25519 public key from a JWK; anything else is an :class:`InputError`."""
    if not isinstance(jwk, dict):
        raise InputError("cnf.jwk must be an object", code="jwk.malformed")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise InputError(
            "only OKP/Ed25519 keys are accepted, "
            f"got kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}",
            code="jwk.unsupported",
        )
    if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise InputError("JWK carries private key material", code="jwk.private")
    raw = b64url_decode(jwk.get("x"), what="jwk.x")
    if len(raw) != 32:
        raise InputError("Ed25519 public key must be 32 bytes", code="jwk.malformed")
    return Ed25519PublicKey.from_public_bytes(raw)
