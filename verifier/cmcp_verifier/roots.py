"""Pinned vendor roots: shipped with the package, overridable with a directory.

Nothing here touches the network. ``roots_dir`` (CLI ``--roots DIR``) replaces the bundled
directory wholesale: a file missing there is missing, never silently taken from the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryptography import x509

from .errors import InputError

BUNDLED = "data/roots"


def root_bytes(filename: str, roots_dir: Path | None = None) -> bytes:
    """The bytes of one pinned root file."""
    if "/" in filename or filename.startswith("."):
        raise ValueError(f"bad root file name {filename!r}")
    if roots_dir is not None:
        path = Path(roots_dir) / filename
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"root file {str(path)!r} unreadable: {exc.strerror}", code="roots.missing"
            ) from None
    return resources.files("cmcp_verifier").joinpath(f"{BUNDLED}/{filename}").read_bytes()


def load_certificates(data: bytes, *, what: str = "certificate") -> list[x509.Certificate]:
    """Certificates from PEM (one or many) or a single DER blob; trailing NULs ignored."""
    data = data.rstrip(b"\x00")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise InputError(
            f"{what} is neither PEM nor DER X.509: {exc}", code="cert.malformed"
        ) from None


def root_certificates(filename: str, roots_dir: Path | None = None) -> list[x509.Certificate]:
    """The certificates in one pinned root file."""
    return load_certificates(root_bytes(filename, roots_dir), what=f"root file {filename}")
