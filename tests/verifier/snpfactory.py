"""A test AMD key hierarchy (ARK → ASK/ASVK → VCEK/VLEK with AMD's extensions) and SEV-SNP
reports signed by it, for layouts no public sample covers (Turin, masked chip ids, v4, …).

The verifier runs unchanged against it: the test points ``EvidencePolicy.roots_dir`` at a
directory holding the test ``amd-<product>-ask-ark-asvk.pem``. Certificates are RSA-PSS
SHA-384 like AMD's (2048-bit keys to keep the tests fast).
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cmcp_verifier.evidence.sevsnp import CERT_TABLE_GUIDS, REPORT_SIZE, SIGNED_SIZE

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_END = dt.datetime(2040, 1, 1, tzinfo=dt.UTC)
AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    extensions: dict[str, bytes] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_START)
        .not_valid_after(_END)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    for oid, value in (extensions or {}).items():
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=_PSS)


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


@dataclass
class AmdHierarchy:
    """One test product line: its roots file and a VCEK/VLEK factory."""

    product: str
    ark_key: rsa.RSAPrivateKey = field(init=False)
    ask_key: rsa.RSAPrivateKey = field(init=False)
    ark: x509.Certificate = field(init=False)
    ask: x509.Certificate = field(init=False)
    asvk: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.ark_key = rsa.generate_private_key(65537, 2048)
        self.ask_key = rsa.generate_private_key(65537, 2048)
        ark_cn = f"ARK-{self.product}"
        self.ark = _cert(ark_cn, self.ark_key, ark_cn, self.ark_key, ca=True)
        self.ask = _cert(f"SEV-{self.product}", self.ask_key, ark_cn, self.ark_key, ca=True)
        self.asvk = _cert(f"SEV-VLEK-{self.product}", self.ask_key, ark_cn, self.ark_key, ca=True)

    def write_roots(self, directory: Path) -> Path:
        pem = b"".join(c.public_bytes(Encoding.PEM) for c in (self.ask, self.ark, self.asvk))
        (directory / f"amd-{self.product.lower()}-ask-ark-asvk.pem").write_bytes(pem)
        return directory

    def endorsement_key(
        self, spl: dict[str, int], *, hwid: bytes | None = None, vlek: bool = False
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A VCEK (or VLEK) for the given SPLs (1.3.6.1.4.1.3704.1.3.x) and hwID."""
        numbers = {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 8, "fmc": 9}
        ext = {f"1.3.6.1.4.1.3704.1.3.{numbers[k]}": _der_int(v) for k, v in spl.items()}
        ext["1.3.6.1.4.1.3704.1.2"] = b"\x16" + bytes([len(self.product)]) + self.product.encode()
        if hwid is not None:
            ext["1.3.6.1.4.1.3704.1.4"] = hwid
        key = ec.generate_private_key(ec.SECP384R1())
        issuer = self.asvk if vlek else self.ask
        cn = "SEV-VLEK" if vlek else "SEV-VCEK"
        issuer_cn = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(issuer_cn, str)
        return key, _cert(cn, key, issuer_cn, self.ask_key, ca=False, extensions=ext)


def tcb(product: str, *, bl: int, tee: int, snp: int, ucode: int, fmc: int = 0) -> int:
    """REPORTED_TCB in the product's layout."""
    if product == "Turin":
        return int.from_bytes(bytes([fmc, bl, tee, snp, 0, 0, 0, ucode]), "little")
    return int.from_bytes(bytes([bl, tee, 0, 0, 0, 0, snp, ucode]), "little")


def make_report(
    key: ec.EllipticCurvePrivateKey,
    *,
    version: int = 3,
    reported_tcb: int = 0,
    chip_id: bytes = b"",
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01),
    signer_info: int = 0,
    policy: int = 0x30000,
) -> bytes:
    """A signed report with the given fields (others zero)."""
    data = bytearray(REPORT_SIZE)
    struct.pack_into("<IIQ", data, 0, version, 0, policy)
    struct.pack_into("<II", data, 0x30, 0, 1)  # VMPL 0, ECDSA P-384/SHA-384
    struct.pack_into("<I", data, 0x48, signer_info)
    data[0x50:0x90] = b"\x42" * 64
    data[0x90:0xC0] = b"\x11" * 48
    struct.pack_into("<Q", data, 0x180, reported_tcb)
    if version >= 3:
        data[0x188:0x18B] = bytes(cpuid)
    data[0x1A0 : 0x1A0 + len(chip_id)] = chip_id
    r, s = decode_dss_signature(key.sign(bytes(data[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
    data[SIGNED_SIZE : SIGNED_SIZE + 72] = r.to_bytes(72, "little")
    data[SIGNED_SIZE + 72 : SIGNED_SIZE + 144] = s.to_bytes(72, "little")
    return bytes(data)


def make_cert_table(entries: dict[str, bytes]) -> bytes:
    """An extended-report certificate table holding ``entries`` (role -> DER)."""
    guids = {role: guid for guid, role in CERT_TABLE_GUIDS.items()}
    header_size = 24 * (len(entries) + 1)
    header, body = b"", b""
    for role, der in entries.items():
        header += guids[role].bytes + struct.pack("<II", header_size + len(body), len(der))
        body += der
    return header + bytes(24) + body
