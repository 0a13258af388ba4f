"""The gateway's signing identity: an Ed25519 key generated in memory at start.

Usage::

    identity = SigningIdentity.generate()
    identity.jwk          # OKP public JWK (claims' cnf.jwk)
    identity.thumbprint   # RFC 7638 thumbprint, committed into the binding digest
    sign_claim(trace, gateway, identity.signing_key)

The private key is never serialised, logged or written anywhere: it lives only in this
process's memory (inside the TEE), the object refuses to be pickled or copied, and its
``repr`` shows only the thumbprint. A restart makes a new key, bound by new evidence.
"""

from __future__ import annotations

from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmcp_verifier.keys import jwk_thumbprint, public_jwk


class SigningIdentity:
    """An in-memory Ed25519 key with its public JWK and thumbprint."""

    __slots__ = ("_key", "jwk", "thumbprint")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.jwk = public_jwk(key)
        self.thumbprint = jwk_thumbprint(self.jwk)

    @classmethod
    def generate(cls) -> SigningIdentity:
        """A fresh key from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The private key object, for :func:`cmcp_verifier.claim.sign_claim`."""
        return self._key

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningIdentity(thumbprint={self.thumbprint!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("the gateway signing key is never serialised")

    def __copy__(self) -> NoReturn:
        raise TypeError("the gateway signing key is never copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("the gateway signing key is never copied")
