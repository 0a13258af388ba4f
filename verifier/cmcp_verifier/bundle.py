"""Policy bundle identity: which files make a bundle and how its hash is computed.

A bundle is a flat set of files: one or more ``*.cedar`` policy files, exactly one
``schema.cedarschema`` and one ``manifest.json``. Its hash is

    sha256( RFC8785({"format": "cmcp-bundle/v1",
                     "files": {<name>: "sha256:<hex of the file's bytes>", ...}}) )

so any byte change in any member changes it, file order does not matter, and the same value
can be computed from a directory, a ConfigMap or a custom resource. Other files (README, dot
files such as Kubernetes' ``..data`` links) are not part of the bundle and are reported as
ignored. See docs/formats.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .canonical import canonical_bytes
from .digests import sha256_digest
from .errors import BundleError

BUNDLE_FORMAT = "cmcp-bundle/v1"
SCHEMA_FILE = "schema.cedarschema"
MANIFEST_FILE = "manifest.json"
MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 256
_POLICY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.cedar$")


def is_bundle_member(name: str) -> bool:
    """True for the file names that belong to a bundle."""
    return name in (SCHEMA_FILE, MANIFEST_FILE) or _POLICY_NAME_RE.match(name) is not None


@dataclass(frozen=True)
class BundleFiles:
    """The members of a bundle (name → bytes) and the names that were ignored."""

    files: Mapping[str, bytes]
    ignored: tuple[str, ...] = field(default=())

    @property
    def policy_names(self) -> list[str]:
        return sorted(n for n in self.files if n.endswith(".cedar"))

    @property
    def hash(self) -> str:
        return bundle_hash(self.files)


def bundle_hash(files: Mapping[str, bytes]) -> str:
    """The bundle hash of a name → content mapping (members only; see module docs)."""
    check_members(files)
    digests = {name: sha256_digest(content) for name, content in files.items()}
    return sha256_digest(canonical_bytes({"format": BUNDLE_FORMAT, "files": digests}))


def check_members(files: Mapping[str, bytes]) -> None:
    """Raise :class:`BundleError` unless ``files`` is a complete, well-named bundle."""
    bad = sorted(n for n in files if not is_bundle_member(n))
    if bad:
        raise BundleError(f"not a bundle file name: {bad[0]!r}", code="bundle.file_name")
    if SCHEMA_FILE not in files:
        raise BundleError(
            f"bundle has no {SCHEMA_FILE}",
            code="bundle.missing_schema",
            hint="every bundle ships the Cedar schema its policies are validated against",
        )
    if MANIFEST_FILE not in files:
        raise BundleError(f"bundle has no {MANIFEST_FILE}", code="bundle.missing_manifest")
    if not any(n.endswith(".cedar") for n in files):
        raise BundleError("bundle has no *.cedar policy file", code="bundle.no_policies")
    if len(files) > MAX_FILES:
        raise BundleError(f"bundle has more than {MAX_FILES} files", code="bundle.too_large")


def read_bundle_dir(path: str | os.PathLike[str]) -> BundleFiles:
    """Read a bundle directory (symlinked ConfigMap mounts included)."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle path {str(root)!r} is not a directory", code="bundle.not_found")
    files: dict[str, bytes] = {}
    ignored: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name.startswith(".") or not is_bundle_member(name):
            ignored.append(name)
            continue
        if not entry.is_file():
            raise BundleError(
                f"bundle member {name!r} is not a regular file", code="bundle.file_type"
            )
        size = entry.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BundleError(
                f"bundle member {name!r} is {size} bytes (limit {MAX_FILE_BYTES})",
                code="bundle.too_large",
            )
        files[name] = entry.read_bytes()
    check_members(files)
    return BundleFiles(files=files, ignored=tuple(ignored))
