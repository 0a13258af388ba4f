"""The SGX extension of Intel PCK certificates (OID 1.2.840.113741.1.13.1).

Its DER value is ``SEQUENCE OF SEQUENCE { OID, value }``: .1 PPID, .2 TCB (itself a sequence
of .2.1-.2.16 component SVNs, .2.17 PCESVN, .2.18 CPUSVN), .3 PCE-ID, .4 FMSPC, .5 SGX type.
A small bounded DER reader extracts what TCB evaluation needs; malformed input raises
:class:`InputError` (code ``tdx.pck.extension``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ..errors import InputError

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"


def _bad(message: str, code: str = "tdx.pck.extension") -> InputError:
    return InputError(message, code=code)


@dataclass(frozen=True)
class PckTcb:
    """What the PCK certificate says about the platform (SGX extension 1.2.840.113741.1.13.1)."""

    fmspc: bytes
    pce_id: bytes
    cpu_svn: bytes
    sgx_svns: tuple[int, ...]
    pce_svn: int


def _der_items(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """The (tag, content) pairs of concatenated DER TLVs."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2 or data[pos] & 0x1F == 0x1F:
            raise _bad(f"{what}: malformed DER", "tdx.pck.extension")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if not 1 <= n <= 4 or pos + n > len(data):
                raise _bad(f"{what}: malformed DER length", "tdx.pck.extension")
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise _bad(f"{what}: DER value runs past its container", "tdx.pck.extension")
        items.append((tag, data[pos : pos + length]))
        pos += length
    return items


def _oid(content: bytes) -> str:
    if not content:
        return ""
    parts = [content[0] // 40, content[0] % 40]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _pairs(content: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """SEQUENCE OF SEQUENCE { OID, value } → {oid: (tag, value content)}."""
    pairs: dict[str, tuple[int, bytes]] = {}
    for tag, seq in _der_items(content, what):
        inner = _der_items(seq, what)
        if tag != 0x30 or len(inner) != 2 or inner[0][0] != 0x06:
            raise _bad(f"{what}: expected SEQUENCE {{OID, value}}", "tdx.pck.extension")
        pairs[_oid(inner[0][1])] = inner[1]
    return pairs


def _field(pairs: dict[str, tuple[int, bytes]], oid: str, tag: int, what: str) -> bytes:
    if oid not in pairs or pairs[oid][0] != tag:
        raise _bad(f"PCK certificate SGX extension lacks {what} ({oid})", "tdx.pck.extension")
    return pairs[oid][1]


def _uint(content: bytes, what: str) -> int:
    if not 1 <= len(content) <= 3 or content[0] & 0x80:
        raise _bad(
            f"PCK certificate: {what} is not a small non-negative INTEGER", "tdx.pck.extension"
        )
    return int.from_bytes(content, "big")


def parse_pck_extensions(cert: x509.Certificate) -> PckTcb:
    """FMSPC, PCE id, CPUSVN, TCB component SVNs and PCESVN from a PCK certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise _bad("PCK certificate has no SGX extension", "tdx.pck.extension") from None
    except ValueError as exc:
        raise _bad(f"PCK certificate extensions unreadable: {exc}", "tdx.pck.extension") from None
    return parse_sgx_extension(ext.value if isinstance(ext, x509.UnrecognizedExtension) else b"")


def parse_sgx_extension(raw: bytes) -> PckTcb:
    """The DER value of the SGX extension: SEQUENCE OF {OID, value}, TCB nested likewise."""
    outer = _der_items(raw, "SGX extension")
    if len(outer) != 1 or outer[0][0] != 0x30:
        raise _bad("PCK certificate SGX extension is not a SEQUENCE", "tdx.pck.extension")
    top = _pairs(outer[0][1], "SGX extension")
    tcb = _pairs(_field(top, f"{_SGX}.2", 0x30, "TCB"), "SGX TCB")
    svns = tuple(
        _uint(_field(tcb, f"{_SGX}.2.{i}", 0x02, f"SVN {i}"), f"SVN {i}") for i in range(1, 17)
    )
    cpu_svn = _field(tcb, f"{_SGX}.2.18", 0x04, "CPUSVN")
    fmspc = _field(top, f"{_SGX}.4", 0x04, "FMSPC")
    pce_id = _field(top, f"{_SGX}.3", 0x04, "PCE-ID")
    if len(cpu_svn) != 16 or len(fmspc) != 6 or len(pce_id) != 2:
        raise _bad(
            "PCK certificate: CPUSVN, FMSPC or PCE-ID has the wrong size", "tdx.pck.extension"
        )
    return PckTcb(
        fmspc=fmspc,
        pce_id=pce_id,
        cpu_svn=cpu_svn,
        sgx_svns=svns,
        pce_svn=_uint(_field(tcb, f"{_SGX}.2.17", 0x02, "PCESVN"), "PCESVN"),
    )
