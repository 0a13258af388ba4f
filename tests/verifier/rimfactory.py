"""Signed test RIMs (SWID tags with an enveloped XML signature) from a test CoRIM root, for RIM
shapes the one public RIM does not have (several alternatives, driver RIMs, bad fields).

The signature is built with the verifier's own canonicalization, which the W3C examples and
NVIDIA's real RIM test independently (tests/verifier/test_xml_c14n.py, test_evidence_nvidia.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cmcp_verifier.evidence._xml import (
    C14N_11,
    canonicalize_document,
    canonicalize_subtree,
    parse_xml,
)
from cmcp_verifier.evidence._xmldsig import DSIG
from cmcp_verifier.roots import root_bytes

SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384"


def _cert(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=cn == issuer, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )


class RimSigner:
    """A test CoRIM root and a signer under it."""

    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.root = _cert("Test CoRIM Root", self.root_key, "Test CoRIM Root", self.root_key)
        self.signer = _cert("Test RIM Signer", self.key, "Test CoRIM Root", self.root_key)

    def write_roots(self, directory: Path) -> Path:
        """Roots trusting NVIDIA's real RIM root *and* this test root."""
        pem = root_bytes("nvidia-rim-root.pem") + self.root.public_bytes(Encoding.PEM)
        (directory / "nvidia-rim-root.pem").write_bytes(pem)
        return directory

    def rim(self, version: str, resources: list[dict[str, str]]) -> bytes:
        """A signed RIM: one ``Resource`` element per dict (attribute -> value)."""
        body = "".join(
            "<Resource " + " ".join(f'{k}="{v}"' for k, v in r.items()) + "/>" for r in resources
        )
        unsigned = (
            f'<SoftwareIdentity xmlns="{SWID}" xmlns:h="{SHA384_NS}" name="GH100" tagId="t">'
            f'<Meta colloquialVersion="{version}" product="GH100"/><Payload>{body}</Payload>'
        )
        digest = hashlib.sha384(
            canonicalize_document(parse_xml(unsigned.encode() + b"</SoftwareIdentity>"))
        )
        signed_info = (
            f'<ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{C14N_11}"/>'
            '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"/>'
            '<ds:Reference URI=""><ds:Transforms>'
            f'<ds:Transform Algorithm="{DSIG}enveloped-signature"/>'
            f'<ds:Transform Algorithm="{C14N_11}"/></ds:Transforms>'
            '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/>'
            f"<ds:DigestValue>{base64.b64encode(digest.digest()).decode()}</ds:DigestValue>"
            "</ds:Reference></ds:SignedInfo>"
        )
        certs = "".join(
            f"<ds:X509Certificate>{base64.b64encode(c.public_bytes(Encoding.DER)).decode()}"
            "</ds:X509Certificate>"
            for c in (self.signer, self.root)
        )
        template = (
            f'{unsigned}<ds:Signature xmlns:ds="{DSIG}">{signed_info}'
            "<ds:SignatureValue>{value}</ds:SignatureValue>"
            f"<ds:KeyInfo><ds:X509Data>{certs}</ds:X509Data></ds:KeyInfo></ds:Signature>"
            "</SoftwareIdentity>"
        )
        doc = parse_xml(template.replace("{value}", "").encode())
        sig = doc.root.elements()[-1]
        message = canonicalize_subtree(sig.elements()[0], C14N_11)
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA384())))
        value = base64.b64encode(r.to_bytes(48, "big") + s.to_bytes(48, "big")).decode()
        return template.replace("{value}", value).encode()


def measurement(index: int, *hashes_hex: str, active: bool = True) -> dict[str, str]:
    """A ``Resource`` for ``index`` with the given alternatives."""
    resource = {
        "type": "Measurement",
        "index": str(index),
        "active": "True" if active else "False",
        "alternatives": str(len(hashes_hex)),
    }
    resource.update({f"h:Hash{i}": h for i, h in enumerate(hashes_hex)})
    return resource
