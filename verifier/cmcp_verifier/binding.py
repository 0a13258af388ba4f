"""The binding digest committed into hardware report data.

    binding = SHA-256( "cmcp-binding/v1" ‖ lp(key_thumbprint) ‖ lp(bundle_hash)
                       ‖ lp(catalog_hash) ‖ lp(nonce) )

where ``lp(x)`` is the 4-byte big-endian length of ``x`` followed by ``x``; the thumbprint
is the RFC 7638 JWK thumbprint (base64url ASCII) of the gateway's Ed25519 key, the two hashes
are their ``sha256:<hex>`` ASCII strings and the nonce is the verifier's raw nonce bytes
(empty when none was given). Length prefixes make the encoding injective; the tag separates
it from every other use of SHA-256.

SEV-SNP and TDX report data (64 bytes) carry ``binding ‖ 32 zero bytes``; TPM quotes carry
``binding`` as qualifying data (extraData). See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

BINDING_TAG = b"cmcp-binding/v1"
REPORT_DATA_SIZE = 64
MAX_NONCE_BYTES = 64


def binding_digest(key_thumbprint: str, bundle_hash: str, catalog_hash: str, nonce: bytes) -> bytes:
    """The 32-byte binding digest (see module docs for the exact preimage)."""
    if len(nonce) > MAX_NONCE_BYTES:
        raise ValueError(f"nonce longer than {MAX_NONCE_BYTES} bytes")
    h = hashlib.sha256(BINDING_TAG)
    for part in (
        key_thumbprint.encode("ascii"),
        bundle_hash.encode("ascii"),
        catalog_hash.encode("ascii"),
        nonce,
    ):
        h.update(struct.pack(">I", len(part)))
        h.update(part)
    return h.digest()


def report_data(binding: bytes) -> bytes:
    """The 64-byte report data for SEV-SNP / TDX: binding followed by zeros."""
    return binding + bytes(REPORT_DATA_SIZE - len(binding))


def report_data_matches(actual: bytes, binding: bytes) -> bool:
    """Constant-time check that ``actual`` report data carries ``binding``."""
    expected = binding if len(actual) == len(binding) else report_data(binding)
    return len(actual) == len(expected) and hmac.compare_digest(actual, expected)
