"""The SGX extension of Intel PCK certificates (OID 1.2.840.113741.1.13.1).

Its DER value is ``SEQUENCE OF SEQUENCE { OID, value }``: .1 PPID, .2 TCB (itself a sequence
of .2.1-.2.16 component SVNs, .2.17 PCESVN, .2.18 CPUSVN), .3 PCE-ID, .4 FMSPC, .5 SGX type.
The strict DER reader of :mod:`._der` extracts what TCB evaluation needs; malformed input raises
:class:`InputError` (code ``tdx.pck.extension``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ..errors import InputError
from ._der import (
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    Tlv,
    children,
    oid_string,
    read_whole,
)

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"


def _bad(message: str) -> InputError:
    return InputError(message, code="tdx.pck.extension")


@dataclass(frozen=True)
class PckTcb:
    """What the PCK certificate says about the platform (SGX extension 1.2.840.113741.1.13.1)."""

    fmspc: bytes
    pce_id: bytes
    cpu_svn: bytes
    sgx_svns: tuple[int, ...]
    pce_svn: int


def _pairs(content: bytes, what: str) -> dict[str, Tlv]:
    """SEQUENCE OF SEQUENCE { OID, value } → {dotted oid: value element}."""
    pairs: dict[str, Tlv] = {}
    for seq in children(content, what=what):
        inner = list(children(seq.content, what=what)) if seq.tag == TAG_SEQUENCE else []
        if len(inner) != 2 or inner[0].tag != TAG_OID:
            raise _bad(f"{what}: expected SEQUENCE {{OID, value}}")
        pairs[oid_string(inner[0].content)] = inner[1]
    return pairs


def _field(pairs: dict[str, Tlv], oid: str, tag: int, what: str) -> bytes:
    if oid not in pairs or pairs[oid].tag != tag:
        raise _bad(f"PCK certificate SGX extension lacks {what} ({oid})")
    return pairs[oid].content


def _uint(content: bytes, what: str) -> int:
    if not 1 <= len(content) <= 3 or content[0] & 0x80:
        raise _bad(f"PCK certificate: {what} is not a small non-negative INTEGER")
    return int.from_bytes(content, "big")


def parse_pck_extensions(cert: x509.Certificate) -> PckTcb:
    """FMSPC, PCE id, CPUSVN, TCB component SVNs and PCESVN from a PCK certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise _bad("PCK certificate has no SGX extension") from None
    except ValueError as exc:
        raise _bad(f"PCK certificate extensions unreadable: {exc}") from None
    return parse_sgx_extension(ext.value if isinstance(ext, x509.UnrecognizedExtension) else b"")


def parse_sgx_extension(raw: bytes) -> PckTcb:
    """The DER value of the SGX extension: SEQUENCE OF {OID, value}, TCB nested likewise."""
    try:
        outer = read_whole(raw, what="SGX extension")
        if outer.tag != TAG_SEQUENCE:
            raise _bad("PCK certificate SGX extension is not a SEQUENCE")
        top = _pairs(outer.content, "SGX extension")
        tcb = _pairs(_field(top, f"{_SGX}.2", TAG_SEQUENCE, "TCB"), "SGX TCB")
    except InputError as exc:  # malformed DER: name the extension in the code
        raise _bad(exc.message) from None
    svns = tuple(
        _uint(_field(tcb, f"{_SGX}.2.{i}", TAG_INTEGER, f"SVN {i}"), f"SVN {i}")
        for i in range(1, 17)
    )
    cpu_svn = _field(tcb, f"{_SGX}.2.18", TAG_OCTET_STRING, "CPUSVN")
    fmspc = _field(top, f"{_SGX}.4", TAG_OCTET_STRING, "FMSPC")
    pce_id = _field(top, f"{_SGX}.3", TAG_OCTET_STRING, "PCE-ID")
    if len(cpu_svn) != 16 or len(fmspc) != 6 or len(pce_id) != 2:
        raise _bad("PCK certificate: CPUSVN, FMSPC or PCE-ID has the wrong size")
    return PckTcb(
        fmspc=fmspc,
        pce_id=pce_id,
        cpu_svn=cpu_svn,
        sgx_svns=svns,
        pce_svn=_uint(_field(tcb, f"{_SGX}.2.17", TAG_INTEGER, "PCESVN"), "PCESVN"),
    )
