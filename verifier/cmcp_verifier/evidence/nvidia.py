"""NVIDIA Hopper GPU confidential-computing evidence: SPDM 1.1 measurement reports.

The report is the GET_MEASUREMENTS request (37 bytes, carrying the verifier's 32-byte nonce)
followed by the MEASUREMENTS response, whose last 96 bytes are an ECDSA P-384 signature (raw
r‖s) over SHA-384 of everything before it. Checks:

- ``report.format``: SPDM 1.1 request/response, DMTF measurement blocks, NVIDIA opaque data.
- ``cert.chain``: the attestation certificate chain (leaf first, usually 5 certificates)
  ends at the pinned NVIDIA Device Identity CA, valid at the evaluation time.
- ``cert.fwid``: the leaf's TCG DICE FWID extension (2.23.133.5.4.1) carries the FWID of
  the opaque data.
- ``report.signature``: the leaf's key signed the request ‖ response.
- ``nonce``: when the caller gives one, it is the request nonce.
- ``rim.<n>.signature`` / ``rim.<n>.chain`` / ``rim.<n>.version`` and ``measurements``: for
  each signed RIM given (VBIOS and/or driver), its active reference measurements are
  compared with the report's blocks; without a RIM the measurements are not appraised.

Embedded form (a claim's ``gateway.attestation.evidence`` for type ``gpu-cc``); every member
is unpadded base64url:

- ``report`` (required): the raw request ‖ response bytes.
- ``certs`` (required): the device certificate chain, PEM or concatenated DER, leaf first.
- ``vbios_rim``, ``driver_rim`` (optional): signed RIM (SWID tag XML) files.

:attr:`EvidenceReport.report_data` is the 32-byte request nonce.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
from collections.abc import Sequence
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
    Reader,
    chain_problems,
    hex_or_raw,
    is_ca,
    load_certificates,
    read_input,
)
from ._der import TAG_OCTET_STRING, TAG_OID, children, walk
from .nvidia_rim import Rim, verify_rim

PLATFORM = "nvidia-h100"
DEVICE_ROOT_FILE = "nvidia-device-identity-root.pem"
REQUEST_SIZE = 37
SPDM_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
NONCE_SIZE = 32
SIGNATURE_SIZE = 96
DMTF_MEASUREMENT_SPEC = 0x01
MAX_CHAIN = 10
OID_DICE_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")
OPAQUE_FWID = 20
OPAQUE_FIELDS = {
    1: "cert_issuer_name",
    2: "cert_authority_key_identifier",
    3: "driver_version",
    4: "gpu_info",
    5: "sku",
    6: "vbios_version",
    7: "manufacturer_id",
    8: "tamper_detection",
    9: "smc",
    10: "vpr",
    11: "nvdec0_status",
    12: "msrscnt",
    13: "cprinfo",
    14: "board_id",
    15: "chip_sku",
    16: "chip_sku_mod",
    17: "project",
    18: "project_sku",
    19: "project_sku_mod",
    20: "fwid",
    21: "protected_pcie_status",
    22: "switch_pdi",
    23: "floorswept_ports",
    24: "position_id",
    25: "lock_switch_status",
    32: "gpu_link_conn",
    33: "sys_enable_status",
    34: "opaque_data_version",
    35: "chip_info",
}
_TEXT_FIELDS = {3, 5, 15, 16, 17, 18, 19}
EMBEDDED_MEMBERS = frozenset({"report", "certs", "vbios_rim", "driver_rim"})


def _malformed(detail: str) -> InputError:
    return InputError(f"SPDM measurement report: {detail}", code="gpu-cc.malformed")


@dataclass(frozen=True)
class MeasurementBlock:
    """One DMTF measurement block."""

    index: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class SpdmReport:
    """A parsed GET_MEASUREMENTS request ‖ MEASUREMENTS response."""

    raw: bytes
    nonce: bytes
    slot_id: int
    blocks: dict[int, MeasurementBlock]
    responder_nonce: bytes
    opaque: dict[int, bytes]
    signed: bytes
    signature: bytes
    padding: int

    @classmethod
    def parse(cls, data: bytes) -> SpdmReport:
        """Parse and structurally validate; raise :class:`InputError`."""
        r = Reader(data, what="SPDM measurement report")
        version, code, attributes, _operation = r.take(4)
        if version != SPDM_11 or code != GET_MEASUREMENTS:
            raise _malformed(f"request is not SPDM 1.1 GET_MEASUREMENTS ({version:#x}/{code:#x})")
        if not attributes & 1:
            raise _malformed("the request did not ask for a signature")
        nonce = r.take(NONCE_SIZE)
        r.take(1)  # SlotIDParam
        version, code, _param1, slot, count = r.take(5)
        if version != SPDM_11 or code != MEASUREMENTS:
            raise _malformed(f"response is not SPDM 1.1 MEASUREMENTS ({version:#x}/{code:#x})")
        record_len = int.from_bytes(r.take(3), "little")
        blocks = _parse_blocks(r.take(record_len), count)
        responder_nonce = r.take(NONCE_SIZE)
        opaque = _parse_opaque(r.take(r.u16le()))
        signed_end = r.pos
        signature = r.take(SIGNATURE_SIZE)
        tail = data[r.pos :]
        if any(tail):
            raise _malformed(f"{len(tail)} bytes follow the signature")
        return cls(
            raw=data,
            nonce=nonce,
            slot_id=slot & 0x0F,
            blocks=blocks,
            responder_nonce=responder_nonce,
            opaque=opaque,
            signed=data[:signed_end],
            signature=signature,
            padding=len(tail),
        )

    def text(self, field: int) -> str | None:
        raw = self.opaque.get(field)
        return None if raw is None else raw.split(b"\0", 1)[0].decode("ascii", "replace")

    @property
    def vbios_version(self) -> str | None:
        """The VBIOS version as NVIDIA writes it (e.g. ``96.00.74.00.1A``)."""
        b = self.opaque.get(6)
        if b is None or len(b) < 5:
            return None
        return f"{b[3]:02X}.{b[2]:02X}.{b[1]:02X}.{b[0]:02X}.{b[4]:02X}"

    def facts(self) -> dict[str, Any]:
        opaque: dict[str, Any] = {}
        for field, raw in self.opaque.items():
            name = OPAQUE_FIELDS.get(field, f"field_{field}")
            opaque[name] = self.text(field) if field in _TEXT_FIELDS else raw.hex()
        return {
            "nonce": self.nonce.hex(),
            "responder_nonce": self.responder_nonce.hex(),
            "slot_id": self.slot_id,
            "driver_version": self.text(3),
            "vbios_version": self.vbios_version,
            "measurements": {str(i): b.value.hex() for i, b in self.blocks.items()},
            "opaque": opaque,
        }


def _parse_blocks(record: bytes, count: int) -> dict[int, MeasurementBlock]:
    if count == 0:
        raise _malformed("no measurement blocks")
    r = Reader(record, what="measurement record")
    blocks: dict[int, MeasurementBlock] = {}
    for _ in range(count):
        index, spec, size = r.u8(), r.u8(), r.u16le()
        block = Reader(r.take(size), what=f"measurement block {index}")
        if spec != DMTF_MEASUREMENT_SPEC or index in blocks:
            raise _malformed(f"measurement block {index}: not DMTF or repeated")
        value_type, value_size = block.u8(), block.u16le()
        value = block.take(value_size)
        if block.remaining():
            raise _malformed(f"measurement block {index}: {block.remaining()} stray bytes")
        blocks[index] = MeasurementBlock(index, value_type, value)
    if r.remaining():
        raise _malformed(f"measurement record: {r.remaining()} bytes after {count} blocks")
    return blocks


def _parse_opaque(data: bytes) -> dict[int, bytes]:
    r = Reader(data, what="opaque data")
    fields: dict[int, bytes] = {}
    while r.remaining():
        field, size = r.u16le(), r.u16le()
        if field in fields:
            raise _malformed(f"opaque data repeats field {field}")
        fields[field] = r.take(size)
    return fields


def certificate_fwids(cert: x509.Certificate) -> list[bytes]:
    """The FWID digests of the TCG DICE TcbInfo extension (``SEQUENCE {OID, OCTET STRING}``)."""
    try:
        ext = cert.extensions.get_extension_for_oid(OID_DICE_TCB_INFO).value
    except x509.ExtensionNotFound:
        return []
    if not isinstance(ext, x509.UnrecognizedExtension):
        return []
    found = []
    for tlv in walk(ext.value, what="DICE TcbInfo"):
        if tlv.constructed:
            kids = list(children(tlv.content))
            if len(kids) == 2 and (kids[0].tag, kids[1].tag) == (TAG_OID, TAG_OCTET_STRING):
                found.append(kids[1].content)
    return found


class _Verification:
    def __init__(self, spdm: SpdmReport, policy: EvidencePolicy) -> None:
        self.spdm = spdm
        self.policy = policy
        self.out = EvidenceReport(
            subject="NVIDIA Hopper GPU measurement report",
            platform=PLATFORM,
            report_data=spdm.nonce,
        )

    def check_chain(self, chain: Sequence[x509.Certificate]) -> None:
        if not chain or len(chain) > MAX_CHAIN:
            self.out.fail("cert.chain", f"needs 1 to {MAX_CHAIN} certificates, got {len(chain)}")
            return
        problems: list[str] = []
        for anchor in root_certificates(DEVICE_ROOT_FILE, self.policy.roots_dir):
            problems = chain_problems(list(chain), anchor, at=self.policy.now())
            if not problems:
                break
        if is_ca(chain[0]):
            problems.append(f"leaf {chain[0].subject.rfc4514_string()} is a CA certificate")
        self.out.add(
            "cert.chain",
            not problems,
            "; ".join(problems) or f"{len(chain)} certificates to the NVIDIA Device Identity CA",
        )

    def check_fwid(self, leaf: x509.Certificate) -> None:
        fwid = self.spdm.opaque.get(OPAQUE_FWID)
        if not fwid:
            self.out.fail("cert.fwid", "the report's opaque data carries no FWID")
            return
        try:
            ok = any(hmac.compare_digest(fwid, f) for f in certificate_fwids(leaf))
        except InputError as exc:
            self.out.fail("cert.fwid", exc.message)
            return
        self.out.add(
            "cert.fwid",
            ok,
            f"FWID {fwid.hex()[:16]}… {'is' if ok else 'is not'} in the leaf's DICE TcbInfo",
        )

    def check_signature(self, leaf: x509.Certificate) -> None:
        sig = self.spdm.signature
        try:
            key = leaf.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
                raise InvalidSignature
            r, s = int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")
            key.verify(encode_dss_signature(r, s), self.spdm.signed, ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, UnsupportedAlgorithm, ValueError):
            self.out.fail("report.signature", "ECDSA P-384 signature does not verify with the leaf")
            return
        self.out.passed("report.signature", "ECDSA P-384 over SHA-384(request ‖ response)")

    def check_nonce(self, expected: bytes | None) -> None:
        if expected is None:
            return
        ok = hmac.compare_digest(expected, self.spdm.nonce)
        self.out.add(
            "nonce",
            ok,
            f"request nonce equals {expected.hex()}",
            failed="request nonce differs: " + bytes_mismatch(expected, self.spdm.nonce),
        )

    def check_rims(self, rims: Sequence[bytes]) -> None:
        if not rims:
            self.out.skip("measurements", "no RIM given: measurements are not appraised")
            return
        reference: dict[int, tuple[int, tuple[bytes, ...]]] = {}
        for n, data in enumerate(rims, 1):
            rim = verify_rim(data, str(n), self.policy, self.out)
            if rim is None or not self._check_rim_version(rim, n):
                continue
            for m in (m for m in rim.measurements.values() if m.active):
                if m.index in reference:
                    first = reference[m.index][0]
                    self.out.fail("measurements", f"RIMs {first} and {n} both set index {m.index}")
                    return
                reference[m.index] = (n, m.alternatives)
        self._compare(reference)

    def _check_rim_version(self, rim: Rim, n: int) -> bool:
        vbios, driver = self.spdm.vbios_version, self.spdm.text(3)
        ok = rim.version.upper() in {v.upper() for v in (vbios, driver) if v}
        self.out.add(
            f"rim.{n}.version",
            ok,
            f"RIM version {rim.version} "
            + ("matches the report" if ok else f"is neither VBIOS {vbios} nor driver {driver}"),
        )
        return ok

    def _compare(self, reference: dict[int, tuple[int, tuple[bytes, ...]]]) -> None:
        if not reference:
            self.out.fail("measurements", "no usable reference measurements")
            return
        bad = []
        for index, (_, alternatives) in sorted(reference.items()):
            block = self.spdm.blocks.get(index + 1)
            if block is None or not any(hmac.compare_digest(block.value, a) for a in alternatives):
                seen = block.value.hex()[:16] + "…" if block else "missing"
                bad.append(
                    (index, f"SPDM block {index + 1} {seen}, RIM {alternatives[0].hex()[:16]}…")
                )
        detail = f"{len(reference) - len(bad)} of {len(reference)} reference measurements match"
        if bad:
            which = ", ".join(str(i) for i, _ in bad)
            detail += f"; index {which} mismatch{'es' if len(bad) == 1 else ''} ({bad[0][1]})"
        self.out.add("measurements", not bad, detail)


def verify_gpu_report(
    report: bytes,
    chain: Sequence[x509.Certificate],
    policy: EvidencePolicy,
    *,
    rims: Sequence[bytes] = (),
    expected_nonce: bytes | None = None,
) -> EvidenceReport:
    """Verify a Hopper SPDM measurement report; never raises for bad input."""
    try:
        spdm = SpdmReport.parse(report)
    except InputError as exc:
        out = EvidenceReport(subject="NVIDIA Hopper GPU measurement report", platform=PLATFORM)
        out.fail("report.format", exc.message)
        return out
    v = _Verification(spdm, policy)
    v.out.passed(
        "report.format",
        f"SPDM 1.1, {len(spdm.blocks)} measurement blocks, driver {spdm.text(3)}, "
        f"VBIOS {spdm.vbios_version}"
        + (f"; {spdm.padding} trailing zero byte(s) ignored" if spdm.padding else ""),
    )
    try:
        v.check_chain(chain)
    except InputError as exc:  # e.g. the roots file is missing from --roots DIR
        v.out.fail_error(exc)
    if chain:
        v.check_fwid(chain[0])
        v.check_signature(chain[0])
    v.check_nonce(expected_nonce)
    v.check_rims(rims)
    v.out.facts["gpu"] = spdm.facts() | {
        "certificates": [c.subject.rfc4514_string() for c in chain],
        "report_sha256": hashlib.sha256(report).hexdigest(),
    }
    return v.out


class GpuCc:
    """``--type gpu-cc``: NVIDIA Hopper confidential-computing evidence."""

    name = "gpu-cc"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--gpu-report", metavar="FILE", help="SPDM request ‖ response (raw or hex)"
        )
        parser.add_argument(
            "--gpu-certs", metavar="FILE", help="GPU attestation certificate chain, leaf first"
        )
        parser.add_argument(
            "--rim",
            metavar="FILE",
            action="append",
            default=[],
            help="signed RIM (SWID tag) to compare measurements with (repeatable)",
        )

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        report_path = getattr(args, "gpu_report", None)
        certs_path = getattr(args, "gpu_certs", None)
        if report_path is None or certs_path is None:
            raise InputError(
                "--type gpu-cc needs --gpu-report FILE and --gpu-certs FILE", code="evidence.usage"
            )
        if policy.nonce is not None and len(policy.nonce) != NONCE_SIZE:
            raise InputError("--nonce must be 32 bytes for gpu-cc", code="evidence.usage")
        report = hex_or_raw(read_input(report_path, what="GPU report"))
        chain = load_certificates(
            read_input(certs_path, what="GPU certificates"), what="--gpu-certs"
        )
        rims = [read_input(p, what="RIM") for p in getattr(args, "rim", [])]
        return verify_gpu_report(report, chain, policy, rims=rims, expected_nonce=policy.nonce)

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        unknown = sorted(set(evidence) - EMBEDDED_MEMBERS)
        if unknown or not {"report", "certs"} <= set(evidence):
            raise InputError(
                f"gpu-cc evidence needs 'report' and 'certs' and allows only "
                f"{sorted(EMBEDDED_MEMBERS)}" + (f"; unexpected {unknown}" if unknown else ""),
                code="gpu-cc.embedded",
            )
        blobs = {k: b64url_decode(v, what=f"gpu-cc evidence {k}") for k, v in evidence.items()}
        chain = load_certificates(blobs["certs"], what="gpu-cc certs")
        rims = [blobs[k] for k in ("vbios_rim", "driver_rim") if k in blobs]
        return verify_gpu_report(blobs["report"], chain, policy, rims=rims)


register(GpuCc())
