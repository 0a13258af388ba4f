"""TPM 2.0 wire structures (TPM 2.0 Library, Part 2), parsed strictly.

Big-endian, every size field bounded by the specification's maxima, unknown selectors and
trailing bytes rejected. Parsers raise :class:`~cmcp_verifier.errors.InputError` (code
``tpm.*``) and never anything else.

- :func:`parse_tpms_attest` — TPMS_ATTEST of a quote (also accepts the TPM2B_ATTEST wrapper
  that tpm2-pytss ``marshal()`` produces)
- :func:`parse_tpmt_signature` — TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA)
- :func:`parse_tpmt_public` — TPMT_PUBLIC of an RSA or ECC key (or its TPM2B_PUBLIC wrapper)
- :func:`parse_tpml_pcr_selection`, :class:`PcrSelection`, the algorithm tables
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import InputError
from ._common import Reader

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
ATTEST_TYPES = {
    0x8014: "nv",
    0x8015: "command audit",
    0x8016: "session audit",
    0x8017: "certify",
    0x8018: "quote",
    0x8019: "time",
    0x801A: "creation",
    0x801C: "nv digest",
}

ALG_RSA, ALG_KEYEDHASH, ALG_NULL, ALG_ECC, ALG_SYMCIPHER = 0x0001, 0x0008, 0x0010, 0x0023, 0x0025
ALG_RSASSA, ALG_RSAES, ALG_RSAPSS, ALG_OAEP = 0x0014, 0x0015, 0x0016, 0x0017
ALG_ECDSA, ALG_ECDH, ALG_ECDAA, ALG_SM2, ALG_ECSCHNORR, ALG_ECMQV = (
    0x0018,
    0x0019,
    0x001A,
    0x001B,
    0x001C,
    0x001D,
)
SIG_SCHEMES = {ALG_RSASSA: "rsassa", ALG_RSAPSS: "rsapss", ALG_ECDSA: "ecdsa"}


@dataclass(frozen=True)
class HashAlg:
    """A TPM hash algorithm: its TPM_ALG_ID, tpm2-tools name and implementations."""

    alg_id: int
    name: str
    size: int
    new: Callable[[], Any]  # hashlib constructor
    crypto: Callable[[], hashes.HashAlgorithm] | None  # for signatures; None = not accepted

    def digest(self, data: bytes) -> bytes:
        h = self.new()
        h.update(data)
        return bytes(h.digest())


HASH_ALGS: dict[int, HashAlg] = {
    a.alg_id: a
    for a in (
        HashAlg(0x0004, "sha1", 20, hashlib.sha1, None),  # PCR bank only: no SHA-1 signatures
        HashAlg(0x000B, "sha256", 32, hashlib.sha256, hashes.SHA256),
        HashAlg(0x000C, "sha384", 48, hashlib.sha384, hashes.SHA384),
        HashAlg(0x000D, "sha512", 64, hashlib.sha512, hashes.SHA512),
        HashAlg(0x0027, "sha3_256", 32, hashlib.sha3_256, hashes.SHA3_256),
        HashAlg(0x0028, "sha3_384", 48, hashlib.sha3_384, hashes.SHA3_384),
        HashAlg(0x0029, "sha3_512", 64, hashlib.sha3_512, hashes.SHA3_512),
    )
}
HASH_BY_NAME = {a.name: a for a in HASH_ALGS.values()}
# Hash algorithms a TPM may name whose implementation we lack (their sizes still matter).
OTHER_HASH_SIZES = {0x0012: 32}  # SM3_256

CURVES: dict[int, tuple[str, Callable[[], ec.EllipticCurve], int]] = {
    0x0001: ("nist_p192", ec.SECP192R1, 24),
    0x0002: ("nist_p224", ec.SECP224R1, 28),
    0x0003: ("nist_p256", ec.SECP256R1, 32),
    0x0004: ("nist_p384", ec.SECP384R1, 48),
    0x0005: ("nist_p521", ec.SECP521R1, 66),
}

# Specification maxima (TPM 2.0 Part 2 with the PC Client platform's values).
MAX_DIGEST = 64
MAX_NAME = 2 + MAX_DIGEST
MAX_DATA = 2 + MAX_DIGEST  # sizeof(TPMT_HA)
MAX_RSA_BYTES = 512
MAX_ECC_BYTES = 128
MAX_PCR_BANKS = 16  # HASH_COUNT upper bound
MAX_SIZEOF_SELECT = 4  # PCR_SELECT_MAX for 32 PCRs

ATTR_FIXED_TPM = 1 << 1
ATTR_FIXED_PARENT = 1 << 4
ATTR_SENSITIVE_DATA_ORIGIN = 1 << 5
ATTR_RESTRICTED = 1 << 16
ATTR_DECRYPT = 1 << 17
ATTR_SIGN = 1 << 18


def hash_alg(alg_id: int, *, what: str) -> HashAlg:
    """The implemented hash algorithm ``alg_id``, or an InputError naming ``what``."""
    alg = HASH_ALGS.get(alg_id)
    if alg is None:
        raise InputError(f"{what}: unsupported hash algorithm 0x{alg_id:04x}", code="tpm.hash_alg")
    return alg


def alg_name(alg_id: int) -> str:
    """A readable name for a hash algorithm id (``sha256``, or ``0x0012``)."""
    alg = HASH_ALGS.get(alg_id)
    return alg.name if alg else f"0x{alg_id:04x}"


def _tpm2b(r: Reader, limit: int, what: str) -> bytes:
    size = r.u16be()
    if size > limit:
        raise InputError(
            f"{r.what}: {what} size {size} exceeds the maximum {limit}", code="tpm.size"
        )
    return r.take(size)


def _finish(r: Reader) -> None:
    if r.remaining():
        raise InputError(
            f"{r.what} has {r.remaining()} trailing bytes after offset {r.pos}",
            code="tpm.trailing",
        )


@dataclass(frozen=True)
class PcrSelection:
    """One bank of a TPML_PCR_SELECTION: hash algorithm and selected PCR indices (ascending)."""

    hash_alg: int
    pcrs: tuple[int, ...]

    @property
    def bank(self) -> str:
        return alg_name(self.hash_alg)

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.bank, "pcrs": list(self.pcrs)}


def _read_pcr_selection(r: Reader) -> tuple[PcrSelection, ...]:
    count = r.u32be()
    if count > MAX_PCR_BANKS:
        raise InputError(
            f"{r.what}: TPML_PCR_SELECTION count {count} exceeds {MAX_PCR_BANKS}",
            code="tpm.size",
        )
    banks = []
    for _ in range(count):
        alg = r.u16be()
        size = r.u8()
        if size > MAX_SIZEOF_SELECT:
            raise InputError(
                f"{r.what}: sizeofSelect {size} exceeds {MAX_SIZEOF_SELECT}", code="tpm.size"
            )
        bitmap = r.take(size)
        pcrs = tuple(i for i in range(8 * size) if bitmap[i // 8] >> (i % 8) & 1)
        banks.append(PcrSelection(alg, pcrs))
    return tuple(banks)


def parse_tpml_pcr_selection(data: bytes) -> tuple[PcrSelection, ...]:
    """A marshalled TPML_PCR_SELECTION (big-endian, no trailing bytes)."""
    r = Reader(data, what="TPML_PCR_SELECTION")
    banks = _read_pcr_selection(r)
    _finish(r)
    return banks


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "clock_ms": self.clock,
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "safe": self.safe,
        }


@dataclass(frozen=True)
class TpmsAttest:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE; ``raw`` is exactly what the AK signed."""

    raw: bytes
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_tpms_attest(data: bytes) -> TpmsAttest:
    """Parse a quote's TPMS_ATTEST (or a TPM2B_ATTEST holding one)."""
    wrapped = len(data) >= 6 and int.from_bytes(data[:2], "big") == len(data) - 2
    if wrapped and int.from_bytes(data[2:6], "big") == TPM_GENERATED_VALUE:
        data = data[2:]  # TPM2B_ATTEST: size-prefixed
    r = Reader(data, what="TPMS_ATTEST")
    magic = r.u32be()
    if magic != TPM_GENERATED_VALUE:
        raise InputError(
            f"TPMS_ATTEST magic is 0x{magic:08x}, not TPM_GENERATED_VALUE 0xff544347",
            code="tpm.magic",
        )
    kind = r.u16be()
    if kind != TPM_ST_ATTEST_QUOTE:
        name = ATTEST_TYPES.get(kind, "unknown")
        raise InputError(
            f"TPMS_ATTEST type 0x{kind:04x} ({name}) is not a quote (0x8018)",
            code="tpm.attest_type",
        )
    signer = _tpm2b(r, MAX_NAME, "qualifiedSigner")
    extra = _tpm2b(r, MAX_DATA, "extraData")
    clock, resets, restarts, safe = r.u64be(), r.u32be(), r.u32be(), r.u8()
    if safe > 1:
        raise InputError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not 0/1", code="tpm.value")
    firmware = r.u64be()
    selection = _read_pcr_selection(r)
    digest = _tpm2b(r, MAX_DIGEST, "pcrDigest")
    _finish(r)
    return TpmsAttest(
        raw=data,
        qualified_signer=signer,
        extra_data=extra,
        clock_info=ClockInfo(clock, resets, restarts, bool(safe)),
        firmware_version=firmware,
        pcr_selection=selection,
        pcr_digest=digest,
    )


@dataclass(frozen=True)
class TpmSignature:
    """A quote signature: scheme (``rsassa``/``rsapss``/``ecdsa``), hash and value.

    ``value`` is the RSA signature, or the DER ECDSA-Sig-Value for ECDSA. ``hash_alg`` is
    None for a plain signature whose hash is not recorded in it.
    """

    scheme: str
    hash_alg: int | None
    value: bytes
    form: str  # "TPMT_SIGNATURE" or "plain"


def parse_tpmt_signature(data: bytes) -> TpmSignature:
    """Parse a TPMT_SIGNATURE of scheme RSASSA, RSAPSS or ECDSA."""
    r = Reader(data, what="TPMT_SIGNATURE")
    sig_alg = r.u16be()
    scheme = SIG_SCHEMES.get(sig_alg)
    if scheme is None:
        raise InputError(
            f"TPMT_SIGNATURE scheme 0x{sig_alg:04x} is not RSASSA, RSAPSS or ECDSA",
            code="tpm.sig_scheme",
        )
    alg = r.u16be()
    if scheme == "ecdsa":
        sig_r = _tpm2b(r, MAX_ECC_BYTES, "signatureR")
        sig_s = _tpm2b(r, MAX_ECC_BYTES, "signatureS")
        value = encode_dss_signature(int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))
    else:
        value = _tpm2b(r, MAX_RSA_BYTES, "signature")
    _finish(r)
    return TpmSignature(scheme, alg, value, "TPMT_SIGNATURE")


@dataclass(frozen=True)
class TpmPublic:
    """A TPMT_PUBLIC of an RSA or ECC key."""

    raw: bytes
    type: int
    name_alg: int
    attributes: int
    scheme: int  # ALG_NULL when the key has no fixed scheme
    scheme_hash: int | None
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    @property
    def name(self) -> bytes | None:
        """TPM Name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC); None for an unsupported nameAlg."""
        alg = HASH_ALGS.get(self.name_alg)
        return self.name_alg.to_bytes(2, "big") + alg.digest(self.raw) if alg else None

    def has(self, *flags: int) -> bool:
        return all(self.attributes & f for f in flags)


def _read_scheme(r: Reader, *, ecdaa_count: bool) -> tuple[int, int | None]:
    scheme = r.u16be()
    if scheme in (ALG_NULL, ALG_RSAES):
        return scheme, None
    hash_id = r.u16be()
    if ecdaa_count and scheme == ALG_ECDAA:
        r.u16be()  # count
    return scheme, hash_id


def _read_symmetric(r: Reader) -> None:
    if r.u16be() != ALG_NULL:
        r.u16be()  # keyBits
        r.u16be()  # mode


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse an RSA or ECC TPMT_PUBLIC (or a TPM2B_PUBLIC holding one)."""
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        data = data[2:]  # TPM2B_PUBLIC
    r = Reader(data, what="TPMT_PUBLIC")
    kind, name_alg, attributes = r.u16be(), r.u16be(), r.u32be()
    _tpm2b(r, MAX_DIGEST, "authPolicy")
    if kind == ALG_RSA:
        _read_symmetric(r)
        scheme, scheme_hash = _read_scheme(r, ecdaa_count=False)
        bits, exponent = r.u16be(), r.u32be()
        modulus = _tpm2b(r, MAX_RSA_BYTES, "unique.rsa")
        _finish(r)
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = _rsa_key(modulus, bits, exponent)
    elif kind == ALG_ECC:
        _read_symmetric(r)
        scheme, scheme_hash = _read_scheme(r, ecdaa_count=True)
        curve_id = r.u16be()
        _read_scheme(r, ecdaa_count=False)  # kdf
        x = _tpm2b(r, MAX_ECC_BYTES, "unique.ecc.x")
        y = _tpm2b(r, MAX_ECC_BYTES, "unique.ecc.y")
        _finish(r)
        key = _ecc_key(curve_id, x, y)
    else:
        raise InputError(
            f"TPMT_PUBLIC type 0x{kind:04x} is not an RSA or ECC key", code="tpm.key_type"
        )
    return TpmPublic(data, kind, name_alg, attributes, scheme, scheme_hash, key)


def _rsa_key(modulus: bytes, bits: int, exponent: int) -> rsa.RSAPublicKey:
    n = int.from_bytes(modulus, "big")
    if bits not in (1024, 2048, 3072, 4096) or n.bit_length() != bits:
        raise InputError(
            f"TPMT_PUBLIC: RSA modulus has {n.bit_length()} bits, keyBits says {bits}",
            code="tpm.key",
        )
    e = exponent or 65537
    if e < 3 or e % 2 == 0:
        raise InputError(f"TPMT_PUBLIC: bad RSA exponent {e}", code="tpm.key")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"TPMT_PUBLIC: unusable RSA key: {exc}", code="tpm.key") from None


def _ecc_key(curve_id: int, x: bytes, y: bytes) -> ec.EllipticCurvePublicKey:
    curve = CURVES.get(curve_id)
    if curve is None:
        raise InputError(f"TPMT_PUBLIC: unsupported ECC curve 0x{curve_id:04x}", code="tpm.curve")
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve[1]()
        )
        return numbers.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"TPMT_PUBLIC: point is not on curve {curve[0]}", code="tpm.key") from None
