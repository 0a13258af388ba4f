"""Enveloped XML signatures (XML-DSig) as vendors sign reference manifests: one Reference with
``URI=""``, the enveloped-signature transform, inclusive C14N 1.0/1.1, ECDSA or RSA with
SHA-2, and X.509 certificates in KeyInfo. Anything else is refused, not guessed at.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import InputError, VerificationError
from ._common import load_certificate
from ._xml import C14N_10, C14N_11, Document, Element, canonicalize_document, canonicalize_subtree

DSIG = "http://www.w3.org/2000/09/xmldsig#"
ENVELOPED = DSIG + "enveloped-signature"
_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
_ENC = "http://www.w3.org/2001/04/xmlenc#"
DIGESTS: dict[str, hashes.HashAlgorithm] = {
    _ENC + "sha256": hashes.SHA256(),
    _MORE + "sha384": hashes.SHA384(),
    _ENC + "sha512": hashes.SHA512(),
}
SIGNATURES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    _MORE + "ecdsa-sha256": ("ecdsa", hashes.SHA256()),
    _MORE + "ecdsa-sha384": ("ecdsa", hashes.SHA384()),
    _MORE + "ecdsa-sha512": ("ecdsa", hashes.SHA512()),
    _MORE + "rsa-sha256": ("rsa", hashes.SHA256()),
    _MORE + "rsa-sha384": ("rsa", hashes.SHA384()),
    _MORE + "rsa-sha512": ("rsa", hashes.SHA512()),
}
MAX_KEYINFO_CERTS = 8


@dataclass(frozen=True)
class SignedXml:
    """A document whose enveloped signature verified, and who signed it."""

    document: Document
    signer: x509.Certificate
    certificates: list[x509.Certificate]  # all of KeyInfo, in document order
    digest_algorithm: str
    canonicalization: str


def _bad(detail: str) -> InputError:
    return InputError(f"XML signature: {detail}", code="xmldsig.malformed")


def _one(parent: Element, local: str) -> Element:
    found = [c for c in parent.elements() if c.is_(DSIG, local)]
    if len(found) != 1:
        raise _bad(f"{parent.local} needs exactly one {local}, has {len(found)}")
    return found[0]


def _algorithm(e: Element) -> str:
    alg = e.get("Algorithm")
    if alg is None:
        raise _bad(f"{e.local} has no Algorithm")
    return alg


def _b64(e: Element) -> bytes:
    text = "".join(e.text().split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{e.local} is not base64") from None


def _reference(signed_info: Element) -> tuple[hashes.HashAlgorithm, str, bytes]:
    """The single whole-document Reference: (digest algorithm, its URI, digest value)."""
    ref = _one(signed_info, "Reference")
    if ref.get("URI") != "":
        raise _bad('only a whole-document Reference (URI="") is supported')
    transforms = [_algorithm(t) for t in _one(ref, "Transforms").elements()]
    if (
        not transforms
        or transforms[0] != ENVELOPED
        or transforms[1:] not in ([], [C14N_10], [C14N_11])
    ):
        raise _bad(f"unsupported transforms {transforms}")
    digest_uri = _algorithm(_one(ref, "DigestMethod"))
    if digest_uri not in DIGESTS:
        raise _bad(f"unsupported digest {digest_uri}")
    return DIGESTS[digest_uri], digest_uri, _b64(_one(ref, "DigestValue"))


def _signature_valid(cert: x509.Certificate, method: str, signature: bytes, message: bytes) -> bool:
    kind, digest = SIGNATURES[method]
    try:
        key = cert.public_key()
        if kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            if len(signature) % 2 or half != (key.curve.key_size + 7) // 8:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, message, ec.ECDSA(digest))
            return True
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), digest)
            return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return False


def verify_enveloped(doc: Document) -> SignedXml:
    """Verify the document's enveloped signature.

    Raises :class:`InputError` when the signature is missing, malformed or uses something
    unsupported, and :class:`VerificationError` when the digest or signature is wrong. Who
    signed is returned, not judged: the caller validates ``signer``'s chain.
    """
    signatures = [e for e in doc.root.iter() if e.is_(DSIG, "Signature")]
    if len(signatures) != 1 or signatures[0].parent is not doc.root:
        raise _bad(f"need exactly one enveloped Signature, found {len(signatures)}")
    sig = signatures[0]
    signed_info = _one(sig, "SignedInfo")
    c14n = _algorithm(_one(signed_info, "CanonicalizationMethod"))
    method = _algorithm(_one(signed_info, "SignatureMethod"))
    if c14n not in (C14N_10, C14N_11):
        raise _bad(f"unsupported canonicalization {c14n}")
    if method not in SIGNATURES:
        raise _bad(f"unsupported signature method {method}")
    digest, digest_uri, expected = _reference(signed_info)
    x509_data = _one(_one(sig, "KeyInfo"), "X509Data")
    cert_elements = [c for c in x509_data.elements() if c.is_(DSIG, "X509Certificate")]
    if not cert_elements or len(cert_elements) > MAX_KEYINFO_CERTS:
        raise _bad(f"KeyInfo must carry 1 to {MAX_KEYINFO_CERTS} X509Certificate elements")
    certs = [load_certificate(_b64(c), what="KeyInfo certificate") for c in cert_elements]

    h = hashes.Hash(digest)
    h.update(canonicalize_document(doc, exclude=sig))
    if not hmac.compare_digest(h.finalize(), expected):
        raise VerificationError(
            "signed content was modified: digest does not match", code="xmldsig.digest"
        )
    value = _b64(_one(sig, "SignatureValue"))
    message = canonicalize_subtree(signed_info, c14n)
    signer = next((c for c in certs if _signature_valid(c, method, value, message)), None)
    if signer is None:
        raise VerificationError(
            "SignedInfo signature does not verify with any KeyInfo certificate",
            code="xmldsig.signature",
        )
    return SignedXml(doc, signer, certs, digest_uri, c14n)
