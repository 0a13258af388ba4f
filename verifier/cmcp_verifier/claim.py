"""The claim envelope: a signed TRACE v0.2 record plus the gateway's own evidence.

::

    {"cmcp_version": "1.0",
     "trace":   {…TRACE v0.2 record, self-signed by the cnf key…},
     "gateway": {"instance_id", "session_id", "session_kind", "principal", "reason",
                 "activity": {"first_ms", "last_ms"},
                 "audit_chain": {"root", "tip", "length"},
                 "transcript": {"hash", "entries"},
                 "call_summary": {"calls", "allow", "deny", "redact", "error", "blocked"},
                 "bundle": {"hash", "candidate_hash"}, "catalog": {"hash", "drift"},
                 "attestation": {"type", "evidence", "binding", "collected_at", "stale"}},
     "signature": "<base64url Ed25519 over RFC 8785 of the envelope without signature>"}

Both signatures are made by the key whose public half is ``trace.cnf.jwk``; the hardware
evidence binds that key (see :mod:`cmcp_verifier.binding`). See docs/formats.md.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_bytes
from .digests import b64url_decode, b64url_encode
from .errors import InputError

CMCP_VERSION = "1.0"
TRACE_PROFILE = "tag:agentrust-io.com,2026:trace-v0.2"
TRACE_PROFILE_V01 = "tag:agentrust.io,2026:trace-v0.1"
ENVELOPE_MEMBERS = frozenset({"cmcp_version", "trace", "gateway", "signature"})
PLATFORM_BY_EVIDENCE = {
    "software": "software-only",
    "sev-snp": "amd-sev-snp",
    "tdx": "intel-tdx",
    "tpm": "tpm2",
    "azure-cvm": None,  # azure-cvm-sev-snp, or intel-tdx on TDX, as the HCL report says
    "coco": None,  # platform of the underlying TEE (amd-sev-snp, intel-tdx)
    "gpu-cc": "nvidia-h100",
}


def signing_input(obj: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of ``obj`` without its ``signature`` member."""
    return canonical_bytes({k: v for k, v in obj.items() if k != "signature"})


def sign_object(obj: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``obj`` with ``signature`` set (base64url Ed25519 over :func:`signing_input`)."""
    signed = {k: v for k, v in obj.items() if k != "signature"}
    signed["signature"] = b64url_encode(key.sign(signing_input(signed)))
    return signed


def signature_valid(obj: dict[str, Any], key: Ed25519PublicKey) -> bool:
    """True when ``obj['signature']`` is ``key``'s signature over :func:`signing_input`."""
    try:
        sig = b64url_decode(obj.get("signature"), what="signature")
    except InputError:
        return False
    if len(sig) != 64:
        return False
    try:
        key.verify(sig, signing_input(obj))
    except InvalidSignature:
        return False
    return True


def sign_claim(
    trace: dict[str, Any], gateway: dict[str, Any], key: Ed25519PrivateKey
) -> dict[str, Any]:
    """Sign the inner record, then the envelope around it."""
    envelope = {"cmcp_version": CMCP_VERSION, "trace": sign_object(trace, key), "gateway": gateway}
    return sign_object(envelope, key)
