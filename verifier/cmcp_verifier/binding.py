"""The binding digest committed into hardware report data.

    binding = SHA-256( "cmcp-binding/v1" ‖ lp(key_thumbprint) ‖ lp(bundle_hash)
                       ‖ lp(catalog_hash) ‖ lp(nonce) )

where ``lp(x)`` is the 4-byte big-endian length of ``x`` followed by ``x``; the thumbprint
is the RFC 7638 JWK thumbprint (base64url ASCII) of the gateway's Ed25519 key, the two hashes
are their ``sha256:<hex>`` ASCII strings and the nonce is the verifier's raw nonce bytes
(empty when none was given). Length prefixes make the encoding injective; the tag separates
it from every other use of SHA-256.

SEV-SNP and TDX report data (64 bytes) carry ``binding ‖ 32 zero bytes``; TPM quotes carry
``binding`` as qualifying data (extraData). Evidence from a Confidential Containers attestation
agent (type ``coco``) carries the 64 ASCII characters of ``hex(binding)``: the agent's REST API
takes runtime data as a text query parameter and puts its UTF-8 bytes, zero padded to 64, into
REPORT_DATA (:func:`evidence_carries_binding` knows which form each evidence type uses).

The TPM provider also records the policy bundle in an NV extend index it defines afresh for
each bundle, so the index holds :func:`bundle_measurement` (see docs/attestation.md).
See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

BINDING_TAG = b"cmcp-binding/v1"
HEX_REPORT_DATA_TYPES = frozenset({"coco"})
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


def hex_report_data(binding: bytes) -> bytes:
    """The 64-byte report data of ``coco`` evidence: the ASCII hex digits of the binding."""
    return binding.hex().encode("ascii")


def evidence_carries_binding(evidence_type: str, actual: bytes, binding: bytes) -> bool:
    """Whether report data ``actual`` of ``evidence_type`` evidence carries ``binding``."""
    if evidence_type in HEX_REPORT_DATA_TYPES:
        return hmac.compare_digest(actual, hex_report_data(binding))
    return report_data_matches(actual, binding)


def bundle_measurement(bundle_hash: str) -> bytes:
    """The value of an NV extend index (SHA-256) freshly defined and extended once with the
    32-byte bundle digest: SHA-256(32 zero bytes ‖ digest)."""
    if not bundle_hash.startswith("sha256:") or len(bundle_hash) != 71:
        raise ValueError(f"not a sha256 digest: {bundle_hash!r}")
    return hashlib.sha256(bytes(32) + bytes.fromhex(bundle_hash[7:])).digest()
