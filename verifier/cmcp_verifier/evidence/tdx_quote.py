"""Intel TDX quotes (DCAP quote format v4 and v5): parsing only, no cryptography.

Layout (Intel TDX DCAP Quoting Library API, appendix A; integers little-endian)::

    header (48)      u16 version · u16 attestation key type (2 = ECDSA P-256)
                     · u32 TEE type (0x81 = TDX) · u16 · u16 · QE vendor id (16) · user data (20)
    v4: TD report body (584, TD 1.0)
    v5: u16 body type (2 = TD 1.0, 3 = TD 1.5) · u32 body size · body (584 or 648)
    u32 signature data length · signature data:
        ECDSA signature r‖s (64) · attestation public key x‖y (64)
        · u16 certification data type (6) · u32 size · QE report certification data:
            QE report (384, an SGX enclave report) · its ECDSA signature by the PCK key (64)
            · u16 QE auth data size · QE auth data
            · u16 certification data type (5) · u32 size · PCK certificate chain (PEM)

The attestation key signs everything before the signature data length. TD report body:
TEE_TCB_SVN (16) · MRSEAM (48) · MRSIGNERSEAM (48) · SEAMATTRIBUTES (8) · TDATTRIBUTES (8)
· XFAM (8) · MRTD (48) · MRCONFIGID (48) · MROWNER (48) · MROWNERCONFIG (48)
· RTMR0..3 (4 × 48) · REPORTDATA (64) [· TD 1.5: TEE_TCB_SVN2 (16) · MRSERVICETD (48)].

Quotes read from devices are often zero-padded; zeros after the signature data are ignored,
any other trailing bytes are kept in :attr:`TdQuote.trailing` for the verifier to reject.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ._common import Reader

HEADER_SIZE = 48
TEE_TYPE_TDX = 0x00000081
ATTESTATION_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
BODY_TD10, BODY_TD15 = 2, 3
BODY_SIZES = {BODY_TD10: 584, BODY_TD15: 648}
QE_REPORT_SIZE = 384
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6
MAX_QUOTE_BYTES = 1 << 20
TD_ATTRIBUTE_DEBUG = 0x01  # TDATTRIBUTES bit 0 (TUD.DEBUG)


def _bad(message: str, *, code: str = "tdx.quote.malformed") -> InputError:
    return InputError(message, code=code)


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class TdReportBody:
    """The TD report body: what the TDX module measured and what the guest asked to sign."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None  # TD 1.5 only
    mr_service_td: bytes | None = None  # TD 1.5 only

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES.DEBUG: the host can read and change the TD's state."""
        return bool(self.td_attributes[0] & TD_ATTRIBUTE_DEBUG)


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX enclave report body (here: the quoting enclave's)."""

    raw: bytes
    cpu_svn: bytes
    misc_select: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class TdQuote:
    """A parsed TDX quote. ``signed_data`` is the exact byte range the attestation key signs."""

    header: QuoteHeader
    body_type: int
    body: TdReportBody
    signed_data: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    padding: int
    trailing: bytes


def _header(r: Reader) -> QuoteHeader:
    version, key_type, tee_type = r.u16le(), r.u16le(), r.u32le()
    r.take(4)  # reserved
    header = QuoteHeader(version, key_type, tee_type, r.take(16), r.take(20))
    if version not in (4, 5):
        raise _bad(f"unsupported quote version {version} (4 and 5 are)", code="tdx.quote.version")
    if tee_type != TEE_TYPE_TDX:
        raise _bad(f"TEE type {tee_type:#x} is not TDX (0x81)", code="tdx.quote.tee_type")
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise _bad(
            f"attestation key type {key_type} is not supported (2 = ECDSA P-256)",
            code="tdx.quote.key_type",
        )
    return header


def _td_body(raw: bytes) -> TdReportBody:
    r = Reader(raw, what="TD report body")
    return TdReportBody(
        tee_tcb_svn=r.take(16),
        mr_seam=r.take(48),
        mr_signer_seam=r.take(48),
        seam_attributes=r.take(8),
        td_attributes=r.take(8),
        xfam=r.take(8),
        mr_td=r.take(48),
        mr_config_id=r.take(48),
        mr_owner=r.take(48),
        mr_owner_config=r.take(48),
        rtmrs=(r.take(48), r.take(48), r.take(48), r.take(48)),
        report_data=r.take(64),
        tee_tcb_svn2=r.take(16) if r.remaining() else None,
        mr_service_td=r.take(48) if r.remaining() else None,
    )


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    """Parse a 384-byte SGX enclave report body."""
    r = Reader(raw, what="QE report")
    cpu_svn, misc = r.take(16), r.take(4)
    r.take(28)
    attributes, mr_enclave = r.take(16), r.take(32)
    r.take(32)
    mr_signer = r.take(32)
    r.take(96)
    prod_id, isv_svn = r.u16le(), r.u16le()
    r.take(60)
    report_data = r.take(64)
    return EnclaveReport(
        raw, cpu_svn, misc, attributes, mr_enclave, mr_signer, prod_id, isv_svn, report_data
    )


def _cert_data(r: Reader, expected: int, what: str) -> bytes:
    kind, size = r.u16le(), r.u32le()
    if kind != expected:
        raise _bad(
            f"{what} has certification data type {kind}, expected {expected}",
            code="tdx.quote.cert_type",
        )
    if size > r.remaining():
        raise _bad(f"{what} declares {size} bytes of certification data, {r.remaining()} remain")
    return r.take(size)


def parse_quote(data: bytes) -> TdQuote:
    """Parse a TDX quote; raise :class:`InputError` (code ``tdx.quote.*``) when malformed."""
    if len(data) > MAX_QUOTE_BYTES:
        raise _bad(
            f"quote is {len(data)} bytes (limit {MAX_QUOTE_BYTES})", code="tdx.quote.too_large"
        )
    r = Reader(data, what="TDX quote")
    header = _header(r)
    body_type = BODY_TD10
    if header.version == 5:
        body_type, size = r.u16le(), r.u32le()
        if BODY_SIZES.get(body_type) != size:
            raise _bad(f"quote v5 body type {body_type} with size {size} is not a TD report")
    body = _td_body(r.take(BODY_SIZES[body_type]))
    signed_end = r.pos
    sig_len = r.u32le()
    if sig_len > r.remaining():
        raise _bad(f"signature data length {sig_len} exceeds the {r.remaining()} bytes left")
    sig = Reader(r.take(sig_len), what="quote signature data")
    signature, key = sig.take(64), sig.take(64)
    qe = Reader(_cert_data(sig, CERT_DATA_QE_REPORT, "quote signature data"), what="QE data")
    if sig.remaining():
        raise _bad(f"{sig.remaining()} unexplained bytes at the end of the signature data")
    qe_report = parse_enclave_report(qe.take(QE_REPORT_SIZE))
    qe_signature = qe.take(64)
    auth = qe.take(qe.u16le())
    chain = _cert_data(qe, CERT_DATA_PCK_CHAIN, "QE report certification data")
    if qe.remaining():
        raise _bad(f"{qe.remaining()} unexplained bytes after the PCK certificate chain")
    rest = data[r.pos :]
    trailing = rest.rstrip(b"\x00")
    return TdQuote(
        header=header,
        body_type=body_type,
        body=body,
        signed_data=data[:signed_end],
        signature=signature,
        attestation_key=key,
        qe_report=qe_report,
        qe_report_signature=qe_signature,
        qe_auth_data=auth,
        pck_chain_pem=chain,
        padding=len(rest) - len(trailing),
        trailing=trailing,
    )
