"""NVIDIA reference integrity manifests (RIMs): ISO/IEC 19770-2 SWID tags signed with an
enveloped XML signature whose certificate chain ends at the NVIDIA CoRIM signing root.

Each ``Resource type="Measurement"`` gives an index (0-based; SPDM measurement block
``index + 1``), whether it is ``active``, and ``alternatives`` acceptable digests
``Hash0``, ``Hash1``, … (namespace = hash algorithm, e.g. ``xmlenc#sha384``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ..errors import CmcpError, InputError
from ..roots import root_certificates
from . import EvidencePolicy, EvidenceReport
from ._common import chain_problems, issued_by
from ._xml import Element, parse_xml
from ._xmldsig import verify_enveloped

RIM_ROOT_FILE = "nvidia-rim-root.pem"
SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
HASH_SIZES = {
    "http://www.w3.org/2001/04/xmlenc#sha256": 32,
    "http://www.w3.org/2001/04/xmlenc#sha384": 48,
    "http://www.w3.org/2001/04/xmlenc#sha512": 64,
}
MAX_MEASUREMENTS = 256
MAX_ALTERNATIVES = 16


@dataclass(frozen=True)
class ReferenceMeasurement:
    """One golden measurement: the digests a measurement block may have."""

    index: int
    name: str
    active: bool
    alternatives: tuple[bytes, ...]


@dataclass(frozen=True)
class Rim:
    """The reference values of one verified RIM."""

    product: str
    version: str
    tag_id: str
    measurements: dict[int, ReferenceMeasurement]
    signer: x509.Certificate
    certificates: list[x509.Certificate]


def _bad(detail: str) -> InputError:
    return InputError(f"RIM: {detail}", code="rim.malformed")


def _int(value: str | None, what: str, limit: int) -> int:
    if value is None or not (value.isascii() and value.isdigit()) or int(value) >= limit:
        raise _bad(f"{what} {value!r} is not an integer below {limit}")
    return int(value)


def parse_rim(data: bytes) -> Rim:
    """Parse a RIM and verify its XML signature (not yet its chain)."""
    signed = verify_enveloped(parse_xml(data))
    root = signed.document.root
    if not root.is_(SWID_NS, "SoftwareIdentity"):
        raise _bad("root element is not a SWID SoftwareIdentity")
    metas = [e for e in root.elements() if e.is_(SWID_NS, "Meta")]
    payloads = [e for e in root.elements() if e.is_(SWID_NS, "Payload")]
    if len(metas) != 1 or len(payloads) != 1:
        raise _bad("needs exactly one Meta and one Payload")
    measurements: dict[int, ReferenceMeasurement] = {}
    for res in payloads[0].elements():
        if not res.is_(SWID_NS, "Resource") or res.get("type") != "Measurement":
            continue
        if len(measurements) == MAX_MEASUREMENTS:
            raise _bad(f"more than {MAX_MEASUREMENTS} measurements")
        index = _int(res.get("index"), "index", MAX_MEASUREMENTS)
        count = _int(res.get("alternatives"), "alternatives", MAX_ALTERNATIVES + 1)
        active = (res.get("active") or "").lower()
        if index in measurements or active not in ("true", "false") or count == 0:
            raise _bad(f"measurement {index}: duplicate index, bad 'active' or no alternatives")
        alternatives = tuple(_digest(res, i) for i in range(count))
        measurements[index] = ReferenceMeasurement(
            index, res.get("name") or "", active == "true", alternatives
        )
    meta = metas[0]
    return Rim(
        product=meta.get("product") or "",
        version=meta.get("colloquialVersion") or "",
        tag_id=root.get("tagId") or "",
        measurements=measurements,
        signer=signed.signer,
        certificates=signed.certificates,
    )


def _digest(resource: Element, i: int) -> bytes:
    for namespace, size in HASH_SIZES.items():
        value = resource.get(f"Hash{i}", namespace)
        if value is not None:
            try:
                digest = bytes.fromhex(value)
            except ValueError:
                digest = b""
            if len(digest) != size:
                raise _bad(
                    f"Hash{i} of measurement {resource.get('index')} is not {size} hex bytes"
                )
            return digest
    raise _bad(f"measurement {resource.get('index')} lacks Hash{i}")


def build_path(
    leaf: x509.Certificate, pool: list[x509.Certificate], anchor: x509.Certificate
) -> list[x509.Certificate]:
    """``leaf`` and the certificates of ``pool`` that lead from it towards ``anchor``."""
    path = [leaf]
    while not issued_by(path[-1], anchor) and len(path) <= len(pool):
        nxt = next((c for c in pool if c not in path and issued_by(path[-1], c)), None)
        if nxt is None:
            break
        path.append(nxt)
    return path


def verify_rim(data: bytes, label: str, policy: EvidencePolicy, out: EvidenceReport) -> Rim | None:
    """Verify one RIM into ``out`` (checks ``rim.<label>.signature`` and ``.chain``).

    Returns the RIM whenever its signature verified, so that its values can still be shown
    next to a failed chain check (which already rejects the evidence).
    """
    try:
        rim = parse_rim(data)
    except CmcpError as exc:
        out.fail(f"rim.{label}.signature", exc.message)
        return None
    out.passed(
        f"rim.{label}.signature",
        f"{rim.product} {rim.version}: XML signature by {rim.signer.subject.rfc4514_string()}",
    )
    try:
        anchors = root_certificates(RIM_ROOT_FILE, policy.roots_dir)
    except InputError as exc:
        out.fail(f"rim.{label}.chain", exc.message)
        return rim
    problems = ["no pinned CoRIM root"]
    for anchor in anchors:
        path = build_path(rim.signer, rim.certificates, anchor)
        problems = chain_problems(path, anchor, at=policy.now())
        problems += [
            f"KeyInfo certificate {c.subject.rfc4514_string()} is not on the chain"
            for c in rim.certificates
            if c not in path and c != anchor
        ]
        if not problems:
            break
    out.add(
        f"rim.{label}.chain",
        not problems,
        "; ".join(problems) or "signer chains to the NVIDIA CoRIM signing root",
    )
    return rim
