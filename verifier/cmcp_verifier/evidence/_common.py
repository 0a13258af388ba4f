"""Building blocks shared by the evidence parsers: bounded binary reads, input decoding and
certificate-chain checks. Every failure is an :class:`InputError` or a list of problems, never
an unhandled exception.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
import re
import struct
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from ..errors import InputError
from ._der import split_concatenated

MAX_INPUT_BYTES = 16 * 1024 * 1024
_HEX_TEXT_RE = re.compile(rb"^[0-9a-fA-F\s]+$")
_SHA256 = hashes.SHA256()


class Reader:
    """Little- or big-endian reads from a buffer; running past the end is an InputError."""

    def __init__(self, data: bytes, *, what: str, offset: int = 0) -> None:
        self.data = data
        self.pos = offset
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InputError(
                f"{self.what} is truncated: needs {n} bytes at offset {self.pos}, "
                f"has {max(0, len(self.data) - self.pos)}",
                code="evidence.truncated",
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16le(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32le(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64le(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def u16be(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32be(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64be(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def remaining(self) -> int:
        return len(self.data) - self.pos


def read_input(path: str | Path, *, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read an evidence file with a size limit."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limit:
            raise InputError(
                f"{what} {str(p)!r} is {size} bytes (limit {limit})", code="evidence.too_large"
            )
        return p.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read {what} {str(p)!r}: {exc.strerror}", code="evidence.unreadable"
        ) from None


def hex_or_raw(data: bytes) -> bytes:
    """Bytes given either raw or as hex text (whitespace allowed)."""
    stripped = data.strip()
    if stripped and _HEX_TEXT_RE.match(stripped):
        text = b"".join(stripped.split())
        if len(text) % 2 == 0:
            return bytes.fromhex(text.decode("ascii"))
    return data


# What cryptography may raise for a malformed certificate, at load or at first use of a
# lazily parsed field (InvalidVersion and DuplicateExtension are no ValueErrors).
_CERT_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


def _fully_parsed(cert: x509.Certificate) -> x509.Certificate:
    """Parse the lazily decoded fields now, so later use cannot raise."""
    _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.extensions)
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.public_key())
    return cert


def load_certificate(data: bytes, *, what: str) -> x509.Certificate:
    """One certificate from PEM (trailing NULs ignored) or DER."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some vendor certs have non-positive serials
            if b"-----BEGIN" in data:
                return _fully_parsed(x509.load_pem_x509_certificate(data.rstrip(b"\x00")))
            return _fully_parsed(x509.load_der_x509_certificate(data))
    except _CERT_ERRORS as exc:
        raise InputError(
            f"{what} is not an X.509 certificate: {exc}", code="cert.malformed"
        ) from None


def load_certificates(data: bytes, *, what: str) -> list[x509.Certificate]:
    """All certificates of a PEM bundle (trailing NULs ignored), or of concatenated DER.

    A DER certificate may well end in a zero byte, so NULs are only stripped from PEM.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if b"-----BEGIN" in data:
                certs = x509.load_pem_x509_certificates(data.rstrip(b"\x00"))
                blocks = max(data.count(b"-----BEGIN"), data.count(b"-----END"))
                if blocks != len(certs):
                    # cryptography skips blocks it cannot read; a damaged chain must not
                    # quietly lose a certificate.
                    raise ValueError(f"{blocks - len(certs)} of {blocks} PEM blocks unreadable")
            else:
                parts = split_concatenated(data, what=what)
                certs = [x509.load_der_x509_certificate(d) for d in parts]
            return [_fully_parsed(c) for c in certs]
    except _CERT_ERRORS as exc:
        raise InputError(
            f"{what} holds no readable certificate: {exc}", code="cert.malformed"
        ) from None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key signed ``cert`` and the names chain."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def chain_problems(
    chain: list[x509.Certificate], anchor: x509.Certificate, *, at: dt.datetime | None
) -> list[str]:
    """Problems with ``chain`` (leaf first, ending below or at ``anchor``) at time ``at``.

    Checks each signature up to the pinned ``anchor`` (which must be self-signed), validity
    periods at ``at`` (``None``: the caller judges validity itself), and that every issuer is
    a CA. Empty list = chain valid.
    """
    problems: list[str] = []
    full = list(chain)
    if not full or full[-1].fingerprint(_SHA256) != anchor.fingerprint(_SHA256):
        full.append(anchor)
    if not issued_by(anchor, anchor):
        problems.append("pinned root is not self-signed")
    for cert, issuer in itertools.pairwise(full):
        name = cert.subject.rfc4514_string() or "(empty subject)"
        if not issued_by(cert, issuer):
            problems.append(f"{name} is not signed by {issuer.subject.rfc4514_string()}")
        if not _is_ca(issuer):
            problems.append(f"{issuer.subject.rfc4514_string()} is not a CA certificate")
    for cert in full:
        if at is not None and not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
            problems.append(
                f"{cert.subject.rfc4514_string()} is not valid at {at.isoformat()} "
                f"({cert.not_valid_before_utc.date()} … {cert.not_valid_after_utc.date()})"
            )
    return problems


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def json_bytes(value: object, what: str, *, text: str = "b64") -> bytes:
    """Bytes as evidence JSON writes them: an array of integers 0-255, or text — base64
    (standard or URL-safe, padded or not) or, with ``text="hex"``, hex digits."""
    if isinstance(value, list):
        if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value):
            raise InputError(f"{what} must be a list of bytes", code="evidence.format")
        return bytes(value)
    if not isinstance(value, str):
        raise InputError(f"{what} must be bytes as a JSON array or text", code="evidence.format")
    if text == "hex":
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise InputError(f"{what} is not hex", code="evidence.format") from None
    b64 = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not base64", code="evidence.format") from None
