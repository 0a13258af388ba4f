"""Helpers for the hardware-provider tests: an AK certificate authority, claims from a provider,
and re-signing claims after a deliberate change (so only the changed check can fail)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.claim import sign_claim
from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.report import Report, Status

from ..tpm_fixtures import Swtpm
from ..verifier.claimfactory import make_claim
from .trailkit import Trail, call


class AkCa:
    """The operator's AK certificate authority: a self-signed root written into a roots
    directory as ``tpm-cmcp-test-root.pem`` (the verifier pins ``tpm-*`` roots)."""

    def __init__(self, roots: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cmcp test AK CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        roots.mkdir(parents=True, exist_ok=True)
        (roots / "tpm-cmcp-test-root.pem").write_bytes(
            self.cert.public_bytes(serialization.Encoding.PEM)
        )
        self.roots = roots

    def issue(self, ak_public_pem: bytes, path: Path) -> Path:
        """An AK certificate for the PEM public key, written to ``path`` (PEM)."""
        key = serialization.load_pem_public_key(ak_public_pem)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway AK")]))
            .issuer_name(self.cert.subject)
            .public_key(key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path


def ak_pem(tpm: Swtpm) -> bytes:
    """The operator's enrolment step: the AK that ``python -m cmcp_sidecar.attest.tpm ak``
    prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "cmcp_sidecar.attest.tpm", "ak", "--tcti", tpm.tcti],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.startswith(b"# AK: default ECC P-256 AK template")
    return proc.stdout


async def session_claim(t: Trail, nonce: bytes = b"") -> bytes:
    await t.log.append(call("s-1"))
    return await t.issuer.claim_now("s-1", nonce)


def resign(claim: bytes, t: Trail, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``claim`` changed by ``change`` and signed again with the trail's gateway key."""
    env = json.loads(claim)
    change(env)
    trace = {k: v for k, v in env["trace"].items() if k != "signature"}
    return canonical_bytes(sign_claim(trace, env["gateway"], t.identity.signing_key))


def status(report: Report, name: str) -> Status | None:
    return next((c.status for c in report.checks if c.name == name), None)


def failed(report: Report) -> set[str]:
    return {c.name for c in report.failures}


@asynccontextmanager
async def loopback(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _encode(members: Mapping[str, Any]) -> dict[str, Any]:
    return {k: b64url_encode(v) if isinstance(v, bytes) else _encode(v) for k, v in members.items()}


def claim_with(
    kind: str,
    platform: str,
    members: Mapping[str, Any],
    measurement: str,
    key: Ed25519PrivateKey | None = None,
) -> bytes:
    """A claim (tests/verifier/claimfactory.py) resting on evidence collected by a provider
    without the attestor — for evidence the attestor would refuse (another machine's report).
    With ``key`` the claim's binding is the one computed for that key."""

    def mutate(trace: dict[str, Any], gateway: dict[str, Any]) -> None:
        trace["runtime"].update(platform=platform, measurement=measurement)
        gateway["attestation"].update(type=kind, evidence=_encode(members))

    claim, _ = make_claim(key, mutate=mutate)
    return canonical_bytes(claim)
