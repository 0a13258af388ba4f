"""An honest self-measurement: a digest over the installed gateway and verifier code.

    measurement = SHA-256( RFC 8785 {"format": "cmcp-self-measurement/v1",
                                     "files": {"<package>/<path>": "sha256:<hex>", …}} )

over every file of the ``cmcp_sidecar`` and ``cmcp_verifier`` packages as installed (Python
sources and data files; ``__pycache__`` and ``*.pyc`` excluded, paths with ``/``). It
identifies the code, nothing more: the process measures itself, so a modified process could
lie. The software provider reports it as ``runtime.measurement`` and claims use it as
``build_provenance.digest``; with hardware, the launch measurement comes from the TEE.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.digests import sha256_digest

PACKAGES = ("cmcp_sidecar", "cmcp_verifier")
FORMAT = "cmcp-self-measurement/v1"


@dataclass(frozen=True)
class SelfMeasurement:
    """The digest and how many files it covers."""

    digest: str
    files: int


@cache
def self_measurement() -> SelfMeasurement:
    """Measure the installed gateway packages once per process (blocking: run in a thread)."""
    return measure_packages(PACKAGES)


def measure_packages(packages: tuple[str, ...]) -> SelfMeasurement:
    """Measure the files of importable packages (see the module docs for the preimage)."""
    files: dict[str, str] = {}
    for package in packages:
        module = importlib.import_module(package)
        root = Path(module.__file__ or "").parent
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                files[f"{package}/{rel.as_posix()}"] = (
                    "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
                )
    digest = sha256_digest(canonical_bytes({"format": FORMAT, "files": files}))
    return SelfMeasurement(digest=digest, files=len(files))
