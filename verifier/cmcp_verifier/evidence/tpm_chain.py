"""AK certificates: the chain from an AK certificate to a pinned TPM root.

Pinned TPM roots are the self-signed certificates among the root files (bundled, or the
``--roots`` directory) whose names start with ``gce-tpm-`` or ``tpm-``; the other certificates
in those files serve as known intermediates, as do the caller's.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from ..errors import InputError
from ..roots import root_certificates, root_file_names
from ._common import chain_problems, common_name, issued_by

TPM_ROOT_PREFIXES = ("gce-tpm-", "tpm-")
MAX_CHAIN_DEPTH = 6


def tpm_roots(
    roots_dir: Path | None = None,
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """Pinned TPM trust anchors and known intermediates (root files ``gce-tpm-*``, ``tpm-*``)."""
    anchors: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    for name in root_file_names(roots_dir):
        if name.startswith(TPM_ROOT_PREFIXES):
            for cert in root_certificates(name, roots_dir):
                (anchors if issued_by(cert, cert) else intermediates).append(cert)
    return anchors, intermediates


def ak_chain_problems(
    cert: x509.Certificate,
    extra: Sequence[x509.Certificate] = (),
    *,
    roots_dir: Path | None = None,
    at: dt.datetime | None = None,
) -> tuple[list[str], str]:
    """Problems of ``cert``'s chain to a pinned TPM root (empty = valid), and the path taken."""
    try:
        anchors, known = tpm_roots(roots_dir)
    except InputError as exc:
        return [exc.message], ""
    if not anchors:
        return ["no pinned TPM roots (files gce-tpm-* or tpm-* in the roots directory)"], ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Google's CA names exceed X.520's 64-character CN bound
        return _build_chain(cert, [*extra, *known], anchors, at)


def _build_chain(
    cert: x509.Certificate,
    pool: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime | None,
) -> tuple[list[str], str]:
    path = [cert]
    while len(path) <= MAX_CHAIN_DEPTH:
        anchor = next((a for a in anchors if issued_by(path[-1], a)), None)
        if anchor is not None:
            problems = chain_problems(path, anchor, at=at or dt.datetime.now(dt.UTC))
            return problems, " → ".join(common_name(c) for c in [*path, anchor])
        parent = next((c for c in pool if c not in path and issued_by(path[-1], c)), None)
        if parent is None:
            break
        path.append(parent)
    issuer = path[-1].issuer.rfc4514_string()[:120]
    return [f"AK certificate does not chain to a pinned TPM root (stuck at issuer {issuer})"], ""
