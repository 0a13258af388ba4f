"""Pinned vendor roots: shipped with the package, overridable with a directory.

Nothing here touches the network. ``roots_dir`` (CLI ``--roots DIR``) replaces the bundled
directory wholesale: a file missing there is missing, never silently taken from the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryptography import x509

from .errors import InputError
from .evidence._common import load_certificates

BUNDLED = "data/roots"
MAX_ROOT_FILE_BYTES = 1 << 20


def root_file_names(roots_dir: Path | None = None) -> list[str]:
    """The names of the root files (bundled, or in ``roots_dir``), sorted."""
    if roots_dir is None:
        return sorted(p.name for p in resources.files("cmcp_verifier").joinpath(BUNDLED).iterdir())
    try:
        return sorted(p.name for p in Path(roots_dir).iterdir() if p.is_file())
    except OSError as exc:
        raise InputError(
            f"roots directory {str(roots_dir)!r} unreadable: {exc.strerror}", code="roots.missing"
        ) from None


def root_bytes(filename: str, roots_dir: Path | None = None) -> bytes:
    """The bytes of one pinned root file."""
    if "/" in filename or filename.startswith("."):
        raise ValueError(f"bad root file name {filename!r}")
    if roots_dir is None:
        return resources.files("cmcp_verifier").joinpath(f"{BUNDLED}/{filename}").read_bytes()
    path = Path(roots_dir) / filename
    try:
        if path.stat().st_size > MAX_ROOT_FILE_BYTES:
            raise InputError(
                f"root file {str(path)!r} is larger than {MAX_ROOT_FILE_BYTES} bytes",
                code="roots.too_large",
            )
        return path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"root file {str(path)!r} unreadable: {exc.strerror}", code="roots.missing"
        ) from None


def root_certificates(filename: str, roots_dir: Path | None = None) -> list[x509.Certificate]:
    """The certificates in one pinned root file (PEM, or DER certificates back to back)."""
    return load_certificates(root_bytes(filename, roots_dir), what=f"root file {filename}")
