"""AMD SEV-SNP attestation reports (report versions 2, 3, 4 and 5).

Checks, in the order they appear in a report:

- ``report.format``: 1184 bytes, a known version, ECDSA P-384/SHA-384, reserved bytes zero.
- ``cert.kind``: the certificate is the kind the report's SIGNING_KEY names (VCEK or VLEK).
- ``cert.chain``: VCEK ← ASK ← ARK or VLEK ← ASVK ← ARK (RSA-PSS) to a pinned AMD root
  (Milan, Genoa, Turin: ``amd-<product>-ask-ark-asvk.pem``), valid at the evaluation time.
- ``report.signature``: ECDSA P-384 over bytes [0, 0x2A0) with the VCEK/VLEK.
- ``cert.product``: the certificate's product name and the report's CPUID agree with the root.
- ``cert.tcb``: the certificate's SPL extensions equal REPORTED_TCB (Turin adds FMC).
- ``cert.chip_id``: the VCEK's hwID equals CHIP_ID (skipped when masked, or for a VLEK).
- ``guest.policy``: DEBUG (bit 19) is rejected unless the caller allows debug.
- ``report_data`` / ``measurement``: when the caller gives expected values.

Embedded form (a claim's ``gateway.attestation.evidence`` for type ``sev-snp``); every member
is unpadded base64url:

- ``report`` (required): the raw 1184-byte ATTESTATION_REPORT.
- ``vcek`` (optional): the VCEK *or* VLEK certificate, DER or PEM.
- ``certs`` (optional): the extended-report certificate table (configfs-tsm ``auxblob``, the
  GHCB GUID table): VCEK/VLEK, ASK/ASVK and ARK in DER.
- ``chain`` (optional): ASK/ASVK and ARK, PEM or concatenated DER.

Supplied ASK/ARK certificates are only ever intermediates: trust comes from the pinned ARK.
Azure CVM verification reuses :func:`verify_snp_report` and :class:`SnpReport`.
"""

from __future__ import annotations

import argparse
import hmac
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..digests import b64url_decode
from ..errors import InputError
from ..report import bytes_mismatch
from ..roots import root_certificates
from . import EvidencePolicy, EvidenceReport, register
from ._common import (
    chain_problems,
    common_name,
    hex_or_raw,
    issued_by,
    load_certificate,
    load_certificates,
    read_input,
    read_optional,
)
from ._der import der_integer, read_whole

PLATFORM = "amd-sev-snp"
REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 4, 5)
ECDSA_P384_SHA384 = 1
_RS_SIZE = 72
POLICY_DEBUG = 1 << 19
_POLICY_RESERVED_ONE = 1 << 17
_SIGNING_KEYS = {0: "vcek", 1: "vlek", 7: "none"}
PRODUCTS = ("Milan", "Genoa", "Turin")
KDS = "https://kdsintf.amd.com"

_OID_PRODUCT_NAME = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.2")
_OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
_SPL_OIDS = {
    "bootloader": "1.3.6.1.4.1.3704.1.3.1",
    "tee": "1.3.6.1.4.1.3704.1.3.2",
    "snp": "1.3.6.1.4.1.3704.1.3.3",
    "microcode": "1.3.6.1.4.1.3704.1.3.8",
    "fmc": "1.3.6.1.4.1.3704.1.3.9",
}
# Certificate table GUIDs (GHCB specification, SNP extended guest request), RFC 4122 order.
CERT_TABLE_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
_CERT_TABLE_ENTRY = 24
_CERT_TABLE_MAX_ENTRIES = 32
EMBEDDED_MEMBERS = frozenset({"report", "vcek", "certs", "chain"})


def _malformed(detail: str) -> InputError:
    return InputError(f"SEV-SNP report: {detail}", code="sev-snp.malformed")


def _u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


@dataclass(frozen=True)
class TcbVersion:
    """One TCB_VERSION: security patch levels of the AMD-SP components (Turin adds FMC)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: int, *, turin: bool) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if turin:
            return cls(bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def as_dict(self) -> dict[str, int]:
        parts = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            parts["fmc"] = self.fmc
        return parts


@dataclass(frozen=True)
class SnpReport:
    """A parsed ATTESTATION_REPORT (SEV-SNP firmware ABI, table "ATTESTATION_REPORT")."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    committed_tcb: int
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @classmethod
    def parse(cls, data: bytes) -> SnpReport:
        """Parse and structurally validate a raw report; raise :class:`InputError`."""
        if len(data) != REPORT_SIZE:
            raise _malformed(f"{len(data)} bytes, a report is exactly {REPORT_SIZE}")
        version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0)
        if version not in SUPPORTED_VERSIONS:
            raise _malformed(f"unsupported report version {version} (supported: 2, 3, 4, 5)")
        vmpl, algo, current_tcb, platform_info, signer_info = struct.unpack_from(
            "<IIQQI", data, 0x30
        )
        if algo != ECDSA_P384_SHA384:
            raise _malformed(f"unknown signature algorithm {algo}")
        if signer_info >> 5 or (signer_info >> 2) & 7 not in _SIGNING_KEYS:
            raise _malformed(f"reserved SIGNER_INFO bits set (0x{signer_info:x})")
        if not policy & _POLICY_RESERVED_ONE:
            raise _malformed("guest POLICY bit 17 (reserved, must be 1) is clear")
        cpuid = tuple(data[0x188:0x18B]) if version >= 3 else None
        v5 = version >= 5
        for lo, hi in (
            (0x4C, 0x50),
            (0x18B if cpuid else 0x188, 0x1A0),
            (0x1EB, 0x1EC),
            (0x1EF, 0x1F0),
            (0x208 if v5 else 0x1F8, SIGNED_SIZE),
            (SIGNED_SIZE + 2 * _RS_SIZE, REPORT_SIZE),
        ):
            if any(data[lo:hi]):
                raise _malformed(f"reserved bytes [0x{lo:x}, 0x{hi:x}) are not zero")
        return cls(
            raw=bytes(data),
            version=version,
            guest_svn=guest_svn,
            policy=policy,
            family_id=data[0x10:0x20],
            image_id=data[0x20:0x30],
            vmpl=vmpl,
            signature_algo=algo,
            current_tcb=current_tcb,
            platform_info=platform_info,
            signer_info=signer_info,
            report_data=data[0x50:0x90],
            measurement=data[0x90:0xC0],
            host_data=data[0xC0:0xE0],
            id_key_digest=data[0xE0:0x110],
            author_key_digest=data[0x110:0x140],
            report_id=data[0x140:0x160],
            report_id_ma=data[0x160:0x180],
            reported_tcb=_u64(data, 0x180),
            cpuid=(cpuid[0], cpuid[1], cpuid[2]) if cpuid else None,
            chip_id=data[0x1A0:0x1E0],
            committed_tcb=_u64(data, 0x1E0),
            current_version=(data[0x1EA], data[0x1E9], data[0x1E8]),
            committed_version=(data[0x1EE], data[0x1ED], data[0x1EC]),
            launch_tcb=_u64(data, 0x1F0),
            launch_mit_vector=_u64(data, 0x1F8) if v5 else None,
            current_mit_vector=_u64(data, 0x200) if v5 else None,
            signature_r=int.from_bytes(data[SIGNED_SIZE : SIGNED_SIZE + _RS_SIZE], "little"),
            signature_s=int.from_bytes(
                data[SIGNED_SIZE + _RS_SIZE : SIGNED_SIZE + 2 * _RS_SIZE], "little"
            ),
        )

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signing_key(self) -> str:
        """``vcek``, ``vlek`` or ``none`` (SIGNER_INFO.SIGNING_KEY)."""
        return _SIGNING_KEYS[(self.signer_info >> 2) & 7]

    @property
    def mask_chip_id(self) -> bool:
        return bool(self.signer_info & 2)

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)

    @property
    def cpuid_product(self) -> str | None:
        """The product the CPUID family/model names (report version 3 and later)."""
        if self.cpuid is None:
            return None
        family, model, _ = self.cpuid
        if family == 0x19:
            return "Milan" if model < 0x10 else "Genoa"
        return "Turin" if family == 0x1A else f"unknown (family 0x{family:x})"

    def tcb(self, raw: int, product: str | None) -> TcbVersion:
        return TcbVersion.decode(raw, turin=(product or self.cpuid_product) == "Turin")

    def facts(self, product: str | None) -> dict[str, Any]:
        """Everything a reader may want, as JSON-ready values."""
        p = self.policy
        facts: dict[str, Any] = {
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": f"0x{p:x}",
            "policy_bits": {
                "abi": f"{(p >> 8) & 0xFF}.{p & 0xFF}",
                "smt": bool(p & 1 << 16),
                "migrate_ma": bool(p & 1 << 18),
                "debug": self.debug,
                "single_socket": bool(p & 1 << 20),
            },
            "vmpl": self.vmpl,
            "signing_key": self.signing_key,
            "mask_chip_id": self.mask_chip_id,
            "author_key_en": bool(self.signer_info & 1),
            "platform_info": f"0x{self.platform_info:x}",
            "product": product or self.cpuid_product,
            "cpuid": None
            if self.cpuid is None
            else dict(zip(("family", "model", "stepping"), self.cpuid, strict=True)),
            "chip_id": self.chip_id.hex(),
            "firmware": ".".join(map(str, self.current_version)),
            "committed_firmware": ".".join(map(str, self.committed_version)),
        }
        for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
            facts[name] = self.tcb(getattr(self, name), product).as_dict()
        for name in (
            "report_data",
            "measurement",
            "host_data",
            "id_key_digest",
            "author_key_digest",
            "report_id",
            "report_id_ma",
            "family_id",
            "image_id",
        ):
            facts[name] = getattr(self, name).hex()
        if self.launch_mit_vector is not None:
            facts["launch_mit_vector"] = f"0x{self.launch_mit_vector:x}"
            facts["current_mit_vector"] = f"0x{self.current_mit_vector:x}"
        return facts


@dataclass(frozen=True)
class AmdRoots:
    """The pinned certificates of one product line."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate | None
    asvk: x509.Certificate | None


def pinned_amd_roots(policy: EvidencePolicy) -> list[AmdRoots]:
    """The pinned AMD roots per product; a product whose file is missing is not trusted."""
    found: list[AmdRoots] = []
    for product in PRODUCTS:
        try:
            certs = root_certificates(f"amd-{product.lower()}-ask-ark-asvk.pem", policy.roots_dir)
        except InputError as exc:
            if exc.code == "roots.missing":
                continue
            raise
        by_cn = {common_name(c): c for c in certs}
        ark = by_cn.get(f"ARK-{product}")
        if ark is not None:
            found.append(
                AmdRoots(
                    product, ark, by_cn.get(f"SEV-{product}"), by_cn.get(f"SEV-VLEK-{product}")
                )
            )
    return found


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """The certificates of an SNP extended-report certificate table, by role.

    Roles: ``vcek``, ``vlek``, ``ask`` (also used for the ASVK), ``ark``; entries with other
    GUIDs are ignored. The table ends with an all-zero entry.
    """
    table: dict[str, bytes] = {}
    entries: list[tuple[uuid.UUID, int, int]] = []
    pos = 0
    while True:
        if pos + _CERT_TABLE_ENTRY > len(data):
            raise InputError("certificate table is truncated", code="sev-snp.cert_table")
        guid = uuid.UUID(bytes=data[pos : pos + 16])
        offset, length = struct.unpack_from("<II", data, pos + 16)
        pos += _CERT_TABLE_ENTRY
        if guid.int == 0 and offset == 0 and length == 0:
            break
        if len(entries) == _CERT_TABLE_MAX_ENTRIES:
            raise InputError("certificate table has too many entries", code="sev-snp.cert_table")
        entries.append((guid, offset, length))
    for guid, offset, length in entries:
        if offset < pos or offset + length > len(data):
            raise InputError(
                f"certificate table entry {guid} points outside the table",
                code="sev-snp.cert_table",
            )
        role = CERT_TABLE_GUIDS.get(guid)
        if role is not None:
            if role in table:
                raise InputError(f"certificate table repeats {role}", code="sev-snp.cert_table")
            table[role] = data[offset : offset + length]
    return table


def _ext_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return ext.value if isinstance(ext, x509.UnrecognizedExtension) else None


def _is_p384(cert: x509.Certificate) -> bool:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"


def _cert_spl(cert: x509.Certificate, component: str) -> int | None:
    raw = _ext_value(cert, x509.ObjectIdentifier(_SPL_OIDS[component]))
    return None if raw is None else der_integer(raw, what=f"VCEK {component} SPL")


def _cert_hwid(cert: x509.Certificate) -> bytes | None:
    """The hwID extension: raw bytes, or (in some certificates) a DER OCTET STRING."""
    raw = _ext_value(cert, _OID_HWID)
    if raw is None or len(raw) in (8, 64):
        return raw
    try:
        tlv = read_whole(raw, what="VCEK hwID")
    except InputError:
        return raw
    return tlv.content if tlv.tag == 0x04 else raw


def _cert_product_name(cert: x509.Certificate) -> str | None:
    raw = _ext_value(cert, _OID_PRODUCT_NAME)
    if raw is None:
        return None
    try:
        tlv = read_whole(raw, what="VCEK product name")
    except InputError:
        return None
    return tlv.content.decode("ascii", "replace") if tlv.tag == 0x16 else None


class _Verification:
    """The state of one report verification; each method adds one check."""

    def __init__(self, report: SnpReport | None, policy: EvidencePolicy) -> None:
        self.snp = report
        self.policy = policy
        self.out = EvidenceReport(subject="AMD SEV-SNP report", platform=PLATFORM)
        self.product: AmdRoots | None = None

    def check_kind(self, cert: x509.Certificate, kind: str) -> bool:
        cn = common_name(cert)
        expected = "SEV-VLEK" if kind == "vlek" else "SEV-VCEK"
        if not _is_p384(cert):
            return self.out.add("cert.kind", False, f"{cn!r} does not hold a P-384 key")
        ok = cn == expected
        return self.out.add(
            "cert.kind", ok, f"a {cn} (P-384)" if ok else f"needs a {expected}, got {cn!r}"
        )

    def check_chain(
        self, cert: x509.Certificate, kind: str, supplied: Sequence[x509.Certificate]
    ) -> None:
        roots = pinned_amd_roots(self.policy)
        if not roots:
            self.out.fail("cert.chain", "no pinned AMD root is available")
            return
        stray = _stray_certificates(supplied, roots)
        if stray:
            self.out.fail(
                "cert.chain",
                f"supplied certificate {stray!r} is neither pinned nor issued by a pinned ARK",
            )
            return
        for root in roots:
            pinned = root.asvk if kind == "vlek" else root.ask
            supplied_here = [c for c in supplied if not issued_by(c, c) and issued_by(c, root.ark)]
            for inter in [pinned, *supplied_here] if pinned else supplied_here:
                if issued_by(cert, inter):
                    problems = chain_problems([cert, inter], root.ark, at=self.policy.now())
                    self.product = root
                    via = "ASVK" if kind == "vlek" else "ASK"
                    self.out.add(
                        "cert.chain",
                        not problems,
                        "; ".join(problems)
                        or f"{kind.upper()} ← {via} {common_name(inter)} ← ARK-{root.product}",
                    )
                    return
        pinned_names = ", ".join(r.product for r in roots)
        self.out.fail(
            "cert.chain",
            f"{common_name(cert)} (issuer {cert.issuer.rfc4514_string()}) is not signed by a "
            f"pinned AMD {'ASVK' if kind == 'vlek' else 'ASK'} ({pinned_names})",
        )

    def check_signature(self, cert: x509.Certificate) -> None:
        assert self.snp is not None
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        try:
            sig = encode_dss_signature(self.snp.signature_r, self.snp.signature_s)
            key.verify(sig, self.snp.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError):
            self.out.fail("report.signature", "ECDSA P-384 signature does not verify")
            return
        self.out.passed("report.signature", f"ECDSA P-384 by the {self.snp.signing_key.upper()}")

    def check_product(self, cert: x509.Certificate) -> None:
        assert self.snp is not None and self.product is not None
        name = self.product.product
        problems = []
        stated = _cert_product_name(cert)
        if stated is not None and not stated.startswith(name):
            problems.append(f"certificate product {stated!r} under the {name} root")
        cpu = self.snp.cpuid_product
        if cpu is not None and cpu != name:
            problems.append(f"report CPUID names {cpu}, certificate chains to {name}")
        self.out.add("cert.product", not problems, "; ".join(problems) or name)

    def check_tcb(self, cert: x509.Certificate) -> None:
        assert self.snp is not None and self.product is not None
        tcb = self.snp.tcb(self.snp.reported_tcb, self.product.product).as_dict()
        problems = []
        for component, value in tcb.items():
            spl = _cert_spl(cert, component)
            if spl != value:
                shown = "missing" if spl is None else spl
                problems.append(f"{component} SPL: certificate {shown}, report {value}")
        detail = "; ".join(problems) or "REPORTED_TCB " + ", ".join(
            f"{k}={v}" for k, v in tcb.items()
        )
        self.out.add("cert.tcb", not problems, detail)

    def check_chip_id(self, cert: x509.Certificate, kind: str) -> None:
        assert self.snp is not None
        chip = self.snp.chip_id
        if kind == "vlek":
            self.out.skip("cert.chip_id", "a VLEK is not chip-specific")
            return
        if self.snp.mask_chip_id or not any(chip):
            self.out.skip("cert.chip_id", "CHIP_ID is masked in the report")
            return
        hwid = _cert_hwid(cert)
        if hwid is None:
            self.out.fail("cert.chip_id", "VCEK has no hwID extension")
            return
        ok = len(hwid) in (8, 64) and hmac.compare_digest(hwid + bytes(64 - len(hwid)), chip)
        self.out.add(
            "cert.chip_id",
            ok,
            f"hwID matches CHIP_ID {chip[:8].hex()}…",
            failed="the VCEK's hwID is not the report's CHIP_ID: "
            + bytes_mismatch(chip, hwid, limit=16),
        )

    def check_guest_policy(self) -> None:
        assert self.snp is not None
        if not self.snp.debug:
            self.out.passed("guest.policy", f"POLICY 0x{self.snp.policy:x}: debug disabled")
        elif self.policy.allow_debug:
            self.out.warn(
                "guest.policy", f"POLICY 0x{self.snp.policy:x} allows DEBUG (accepted: allow-debug)"
            )
        else:
            self.out.fail(
                "guest.policy",
                f"POLICY 0x{self.snp.policy:x} allows DEBUG: the host can read guest memory",
            )

    def check_expected(self, expected_report_data: bytes | None) -> None:
        assert self.snp is not None
        if expected_report_data is not None:
            want = expected_report_data.ljust(64, b"\0")
            ok = len(expected_report_data) <= 64 and hmac.compare_digest(want, self.snp.report_data)
            self.out.add(
                "report_data",
                ok,
                f"REPORT_DATA equals the expected {expected_report_data.hex()[:32]}… (zero padded)",
                failed="REPORT_DATA differs from the expected value (zero padded): "
                + bytes_mismatch(want, self.snp.report_data),
            )
        pin = self.policy.expected_measurement
        if pin is not None:
            ok = self.out.measurement == pin
            self.out.add(
                "measurement", ok, f"MEASUREMENT {'equals' if ok else 'differs from'} {pin}"
            )


def _stray_certificates(supplied: Iterable[x509.Certificate], roots: list[AmdRoots]) -> str | None:
    """The name of a supplied certificate that is neither pinned nor signed by a pinned ARK.

    Such a certificate cannot help the chain; its presence means the evidence was damaged or
    assembled from a foreign trust anchor, so it is rejected rather than ignored.
    """
    pinned = {
        c.fingerprint(hashes.SHA256())
        for r in roots
        for c in (r.ark, r.ask, r.asvk)
        if c is not None
    }
    for c in supplied:
        if c.fingerprint(hashes.SHA256()) in pinned:
            continue
        if not any(issued_by(c, r.ark) for r in roots):
            return common_name(c)
    return None


def _missing_key_hint(snp: SnpReport) -> str:
    """Where the missing VCEK can be fetched (AMD KDS), or who holds a VLEK."""
    if snp.signing_key == "vlek":
        return "the cloud provider supplies the VLEK (e.g. in the extended report's cert table)"
    product = snp.cpuid_product
    name = product if product in PRODUCTS else "Milan|Genoa"
    tcb = snp.tcb(snp.reported_tcb, product)
    hwid = snp.chip_id[:8] if product == "Turin" else snp.chip_id
    query = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if tcb.fmc is not None:
        query = f"fmcSPL={tcb.fmc}&{query}"
    return f"fetch it from {KDS}/vcek/v1/{name}/{hwid.hex()}?{query}"


def _endorsement(
    snp: SnpReport,
    given: x509.Certificate | None,
    chain: Sequence[x509.Certificate],
    table: bytes | None,
) -> tuple[x509.Certificate | None, list[x509.Certificate]]:
    """The VCEK/VLEK to use and the supplied intermediates (from ``chain`` and the table)."""
    entries = parse_cert_table(table) if table else {}
    supplied = list(chain) + [
        load_certificate(entries[r], what=f"certificate table {r.upper()}")
        for r in ("ask", "ark")
        if r in entries
    ]
    cert = given
    if cert is None and snp.signing_key in entries:
        cert = load_certificate(entries[snp.signing_key], what="certificate table entry")
    return cert, supplied


def verify_snp_report(
    report: bytes | SnpReport,
    vcek_or_vlek: x509.Certificate | None,
    policy: EvidencePolicy,
    *,
    chain: Sequence[x509.Certificate] = (),
    cert_table: bytes | None = None,
    expected_report_data: bytes | None = None,
) -> EvidenceReport:
    """Verify one SEV-SNP report against the pinned AMD roots; never raises for bad input.

    ``vcek_or_vlek`` is the endorsement certificate (the report's SIGNING_KEY says which
    kind); without it, the one in ``cert_table`` (an extended-report certificate table) is
    used. ``chain`` may add ASK/ASVK/ARK certificates (never trusted on their own).
    ``expected_report_data`` (≤ 64 bytes, zero padded) is compared with REPORT_DATA; the
    claim verifier instead compares :attr:`EvidenceReport.report_data` itself.
    Roots come from ``policy.roots_dir`` (bundled when None), validity from ``policy.now()``.
    """
    v = _Verification(None, policy)
    try:
        v.snp = snp = report if isinstance(report, SnpReport) else SnpReport.parse(report)
    except InputError as exc:
        v.out.fail("report.format", exc.message)
        return v.out
    v.out.report_data = snp.report_data
    v.out.measurement = "sha384:" + snp.measurement.hex()
    v.out.passed(
        "report.format",
        f"version {snp.version}, signed by the {snp.signing_key.upper()}, VMPL {snp.vmpl}",
    )
    kind = snp.signing_key
    try:
        cert, supplied = _endorsement(snp, vcek_or_vlek, chain, cert_table)
        if kind == "none":
            v.out.fail("report.signature", "the report is unsigned (SIGNING_KEY = none)")
        elif cert is None:
            v.out.fail("report.signature", f"no {kind.upper()} given; {_missing_key_hint(snp)}")
        elif v.check_kind(cert, kind):
            v.check_chain(cert, kind, supplied)
            v.check_signature(cert)
            if v.product is not None:
                v.check_product(cert)
                v.check_tcb(cert)
            v.check_chip_id(cert, kind)
    except InputError as exc:
        v.out.fail_error(exc)
    v.check_guest_policy()
    v.check_expected(expected_report_data)
    v.out.facts["sev_snp"] = snp.facts(v.product.product if v.product else None)
    return v.out


def verify_endorsement_chain(
    cert: x509.Certificate, policy: EvidencePolicy, *, chain: Sequence[x509.Certificate] = ()
) -> EvidenceReport:
    """Check a VCEK or VLEK certificate alone: its chain to a pinned AMD root."""
    v = _Verification(None, policy)
    v.out.subject = "AMD SEV-SNP endorsement certificate"
    kind = "vlek" if common_name(cert) == "SEV-VLEK" else "vcek"
    try:
        if v.check_kind(cert, kind):
            v.check_chain(cert, kind, chain)
    except InputError as exc:
        v.out.fail_error(exc)
    v.out.facts["sev_snp"] = {
        "certificate": common_name(cert),
        "product": v.product.product if v.product else None,
        "product_name": _cert_product_name(cert),
    }
    return v.out


def _cert_list(data: bytes | None, *, what: str) -> list[x509.Certificate]:
    return [] if data is None else load_certificates(data, what=what)


class SevSnp:
    """``--type sev-snp``: AMD SEV-SNP attestation reports."""

    name = "sev-snp"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--report", dest="snp_report", metavar="FILE", help="SEV-SNP report (raw or hex)"
        )
        parser.add_argument(
            "--vcek", dest="snp_vcek", metavar="FILE", help="VCEK or VLEK certificate (DER/PEM)"
        )
        parser.add_argument(
            "--chain", dest="snp_chain", metavar="FILE", help="ASK/ASVK + ARK (PEM or DER)"
        )
        parser.add_argument(
            "--cert-table",
            dest="snp_cert_table",
            metavar="FILE",
            help="extended-report certificate table (configfs-tsm auxblob)",
        )

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        report_path = getattr(args, "snp_report", None)
        vcek_path = getattr(args, "snp_vcek", None)
        if report_path is None and vcek_path is None:
            raise InputError(
                "--type sev-snp needs --report FILE (or --vcek FILE to check a certificate alone)",
                code="evidence.usage",
            )
        if policy.nonce is not None and len(policy.nonce) > 64:
            raise InputError("--nonce is longer than REPORT_DATA (64 bytes)", code="evidence.usage")
        vcek = (
            load_certificate(read_input(vcek_path, what="VCEK"), what="VCEK") if vcek_path else None
        )
        chain_path = getattr(args, "snp_chain", None)
        chain = _cert_list(read_optional(chain_path, what="chain"), what="--chain")
        table_path = getattr(args, "snp_cert_table", None)
        table = read_optional(table_path, what="certificate table")
        if report_path is None:
            assert vcek is not None
            return verify_endorsement_chain(vcek, policy, chain=chain)
        raw = hex_or_raw(read_input(report_path, what="SEV-SNP report"))
        return verify_snp_report(
            raw, vcek, policy, chain=chain, cert_table=table, expected_report_data=policy.nonce
        )

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        unknown = sorted(set(evidence) - EMBEDDED_MEMBERS)
        if unknown or "report" not in evidence:
            raise InputError(
                f"sev-snp evidence needs 'report' and allows only {sorted(EMBEDDED_MEMBERS)}"
                + (f"; unexpected {unknown}" if unknown else ""),
                code="sev-snp.embedded",
            )
        blobs = {k: b64url_decode(v, what=f"sev-snp evidence {k}") for k, v in evidence.items()}
        vcek = load_certificate(blobs["vcek"], what="VCEK") if "vcek" in blobs else None
        return verify_snp_report(
            blobs["report"],
            vcek,
            policy,
            chain=_cert_list(blobs.get("chain"), what="sev-snp chain"),
            cert_table=blobs.get("certs"),
        )


register(SevSnp())
