"""The policy bundle recorded in a TPM NV extend index, certified by the AK (TPM2_NV_Certify).

The gateway's TPM provider defines an NV index of type TPM_NT_EXTEND (nameAlg SHA-256, 32
bytes) afresh for every policy bundle and extends it once with the bundle's SHA-256 digest,
so it holds SHA-256(32 zero bytes ‖ digest) (:func:`cmcp_verifier.binding.bundle_measurement`).
The evidence carries the index's TPM2B_NV_PUBLIC (``bundle_nv_public``) and an NV certify
TPMS_ATTEST (``bundle_nv_attest``) with its TPMT_SIGNATURE (``bundle_nv_signature``) by the
quote's AK. :func:`check_bundle_nv` verifies, as check ``bundle_nv``:

- the public area describes an extend index (TPM_NT_EXTEND) with nameAlg SHA-256, 32 bytes of
  data, already written;
- the attestation is TPM_ST_ATTEST_NV, signed by the AK, its extraData equals the quote's, and
  it certifies that index (name = nameAlg ‖ SHA-256(TPMS_NV_PUBLIC)) from offset 0, all 32
  bytes.

The certified contents go to ``report.extra["bundle_measurement"]``; the claim verifier
compares them with the claim's ``policy.bundle_hash``.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from ..errors import InputError
from . import EvidenceReport
from ._common import Reader
from .tpm_keys import AkPublic, load_signature, signature_problem
from .tpm_structures import TPM_GENERATED_VALUE, hash_alg

MEMBERS = ("bundle_nv_public", "bundle_nv_attest", "bundle_nv_signature")
TPM_ST_ATTEST_NV = 0x8014
TPM_NT_EXTEND = 0x4
TPMA_NV_WRITTEN = 1 << 29
SHA256 = 0x000B
MAX_NV_BUFFER = 2048


@dataclass(frozen=True)
class NvPublic:
    """A TPMS_NV_PUBLIC and the TPM name it gives the index."""

    index: int
    name_alg: int
    attributes: int
    data_size: int
    name: bytes


@dataclass(frozen=True)
class NvCertify:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_NV; ``raw`` is what the AK signed."""

    raw: bytes
    extra_data: bytes
    index_name: bytes
    offset: int
    contents: bytes


def _tpm2b(r: Reader, limit: int) -> bytes:
    size = r.u16be()
    if size > limit:
        raise InputError(f"{r.what}: a size field of {size} exceeds {limit}", code="tpm.size")
    return r.take(size)


def _done(r: Reader) -> None:
    if r.remaining():
        raise InputError(f"{r.what} has {r.remaining()} trailing bytes", code="tpm.trailing")


def parse_nv_public(data: bytes) -> NvPublic:
    """A TPM2B_NV_PUBLIC (or bare TPMS_NV_PUBLIC)."""
    if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == len(data) - 2:
        data = data[2:]
    r = Reader(data, what="NV public area")
    index, name_alg, attributes = r.u32be(), r.u16be(), r.u32be()
    _tpm2b(r, 64)  # authPolicy
    size = r.u16be()
    _done(r)
    alg = hash_alg(name_alg, what="NV nameAlg")
    return NvPublic(
        index, name_alg, attributes, size, struct.pack(">H", name_alg) + alg.digest(data)
    )


def parse_nv_certify(data: bytes) -> NvCertify:
    """A TPMS_ATTEST of an NV certification (TPM2_NV_Certify)."""
    r = Reader(data, what="NV certify attestation")
    if r.u32be() != TPM_GENERATED_VALUE:
        raise InputError("NV certify attestation: not TPM-generated", code="tpm.magic")
    if r.u16be() != TPM_ST_ATTEST_NV:
        raise InputError("NV certify attestation: not of type NV", code="tpm.attest_type")
    _tpm2b(r, 66)  # qualifiedSigner
    extra = _tpm2b(r, 66)
    r.take(17 + 8)  # clockInfo, firmwareVersion
    name = _tpm2b(r, 66)
    offset = r.u16be()
    contents = _tpm2b(r, MAX_NV_BUFFER)
    _done(r)
    return NvCertify(data, extra, name, offset, contents)


def check_bundle_nv(raw: dict[str, bytes], ak: AkPublic, report: EvidenceReport) -> None:
    """Check the bundle NV members of ``raw`` against ``ak`` and the quote's extraData."""
    present = [m for m in MEMBERS if m in raw]
    if not present:
        return
    if len(present) != len(MEMBERS):
        report.fail("bundle_nv", f"needs all of {list(MEMBERS)}, has {present}")
        return
    try:
        public = parse_nv_public(raw["bundle_nv_public"])
        certify = parse_nv_certify(raw["bundle_nv_attest"])
        sig = load_signature(raw["bundle_nv_signature"], ak)
    except InputError as exc:
        report.fail("bundle_nv", exc.message)
        return
    problem = _problem(public, certify, report.report_data)
    if problem is None:
        if sig.hash_alg is None:
            problem = "the NV certification signature names no hash (not a TPMT_SIGNATURE)"
        else:
            alg = hash_alg(sig.hash_alg, what="NV certification signature")
            problem = signature_problem(sig, ak, certify.raw, alg)
    if problem is None:
        report.extra["bundle_measurement"] = certify.contents
    report.add(
        "bundle_nv",
        problem is None,
        problem
        or f"NV extend index 0x{public.index:08x} certified by the AK: "
        f"{certify.contents.hex()[:16]}…",
    )


def _problem(public: NvPublic, certify: NvCertify, quote_extra: bytes | None) -> str | None:
    if (public.attributes >> 4) & 0xF != TPM_NT_EXTEND:
        return "the bundle NV index is not an extend index"
    if public.name_alg != SHA256 or public.data_size != 32:
        return "the bundle NV index is not a 32-byte SHA-256 extend index"
    if not public.attributes & TPMA_NV_WRITTEN:
        return "the bundle NV index was never written"
    if not hmac.compare_digest(certify.index_name, public.name):
        return "the NV certification is for another index than bundle_nv_public"
    if certify.offset != 0 or len(certify.contents) != 32:
        return "the NV certification does not cover the whole index"
    if quote_extra is None or not hmac.compare_digest(certify.extra_data, quote_extra):
        return "the NV certification's extraData differs from the quote's"
    return None
