"""The bundled roots: one loading path, and the fingerprint table in docs/verifier.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from cmcp_verifier.errors import InputError
from cmcp_verifier.roots import MAX_ROOT_FILE_BYTES, root_certificates, root_file_names

from ..conftest import REPO

ROW = re.compile(r"^\| (`[^`]+`)? *\|[^|]*\|[^|]*\| `([0-9a-f]{64})` \|", re.M)


def _documented() -> set[tuple[str, str]]:
    text = (REPO / "docs" / "verifier.md").read_text()
    section = text[text.index("## Pinned roots") :]
    section = section[: section.index("\n## ", 4)]
    rows, current = set(), ""
    for name, fingerprint in ROW.findall(section):
        current = name.strip("`") or current  # continuation rows leave the file cell empty
        rows.add((current, fingerprint))
    return rows


def test_docs_list_every_bundled_certificate_with_its_fingerprint() -> None:
    shipped = {
        (name, cert.fingerprint(hashes.SHA256()).hex())
        for name in root_file_names()
        for cert in root_certificates(name)
    }
    assert len(shipped) == 15
    assert _documented() == shipped


def test_roots_directory_replaces_the_bundle_and_is_bounded(tmp_path: Path) -> None:
    assert root_file_names(tmp_path) == []
    (tmp_path / "intel-sgx-root-ca.pem").write_bytes(b"\0" * (MAX_ROOT_FILE_BYTES + 1))
    with pytest.raises(InputError) as big:
        root_certificates("intel-sgx-root-ca.pem", tmp_path)
    assert big.value.code == "roots.too_large"
    with pytest.raises(InputError) as missing:
        root_certificates("nvidia-rim-root.pem", tmp_path)
    assert missing.value.code == "roots.missing"
    der = root_certificates("gce-tpm-ek-root-1.cer")[0]
    # Trailing NULs are stripped from PEM only: a DER file must be exactly the certificate.
    (tmp_path / "x.cer").write_bytes(der.public_bytes(Encoding.DER) + b"\0")
    with pytest.raises(InputError):
        root_certificates("x.cer", tmp_path)
