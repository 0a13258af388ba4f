"""Helpers for the evidence-trail tests: a whole trail (audit, attestation, claims) in tmp dirs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmcp_sidecar.attest import (
    AttestationError,
    AttestationProvider,
    Attestor,
    Evidence,
    Probe,
    SigningIdentity,
    StalenessPolicy,
)
from cmcp_sidecar.attest.selfmeasure import self_measurement
from cmcp_sidecar.attest.software import SoftwareProvider
from cmcp_sidecar.audit import AuditLog, CallEntry
from cmcp_sidecar.audit.entries import Decision
from cmcp_sidecar.claims import (
    ClaimIssuer,
    ClaimMode,
    ClaimSettings,
    DirectorySink,
    default_subject,
)
from cmcp_verifier.digests import sha256_digest

BUNDLE = sha256_digest(b"test bundle")
CATALOG = sha256_digest(b"test catalog")
PRINCIPAL = "demo/agent"


def call(session: str | None, decision: Decision = "allow", **extra: Any) -> CallEntry:
    """A call entry as the proxy would write it."""
    return CallEntry(
        session=session,
        principal=PRINCIPAL,
        tool="echo",
        upstream="everything",
        decision=decision,
        mode="enforcing",
        forwarded=decision in ("allow", "redact"),
        bundle=BUNDLE,
        **extra,
    )


@dataclass
class Trail:
    log: AuditLog
    identity: SigningIdentity
    attestor: Attestor
    issuer: ClaimIssuer
    claims_dir: Path

    async def export(self, session_id: str | None = None) -> bytes:
        return b"".join([line async for line in self.log.export(session_id)])


@asynccontextmanager
async def trail(
    root: Path,
    *,
    mode: ClaimMode = "session",
    interval_seconds: float = 300,
    idle_timeout_seconds: float = 900,
    validity_seconds: float = 3600,
    staleness_policy: StalenessPolicy = "fail_closed",
    provider: AttestationProvider | None = None,
) -> AsyncIterator[Trail]:
    """Audit log, software attestor and claim issuer wired as the gateway wires them."""
    log = await AuditLog.open(root / "audit", instance_id="gw-test", fsync="batch")
    identity = SigningIdentity.generate()
    attestor = Attestor(
        provider or SoftwareProvider(dev_mode=True),
        identity,
        bundle_hash=BUNDLE,
        catalog_hash=CATALOG,
        validity_seconds=validity_seconds,
        staleness_policy=staleness_policy,
    )
    await attestor.start()
    settings = ClaimSettings(
        instance_id="gw-test",
        subject=default_subject(instance_id="gw-test"),
        build_digest=self_measurement().digest,
    )
    issuer = ClaimIssuer(
        audit=log,
        attestor=attestor,
        settings=settings,
        sink=DirectorySink(root / "claims"),
        mode=mode,
        interval_seconds=interval_seconds,
        idle_timeout_seconds=idle_timeout_seconds,
    )
    await issuer.start()
    try:
        yield Trail(log, identity, attestor, issuer, root / "claims")
    finally:
        await issuer.close()
        await attestor.close()
        await log.close()


class DeviceFileProvider(AttestationProvider):
    """A stand-in for a hardware provider whose device is a file, so tests can make the
    device vanish for real (delete the file) and come back. Its evidence is self-measured
    like the software provider's (type ``software``): it exercises the attestor, not a TEE."""

    name = "test-device"
    evidence_type = "software"
    platform = "software-only"

    def __init__(self, device: Path, *, delay: float = 0.0) -> None:
        self.device, self.delay, self.collections = device, delay, 0

    async def probe(self) -> Probe:
        ok = self.device.exists()
        return Probe(ok, f"{self.device} {'present' if ok else 'missing'}")

    async def collect(self, report_data: bytes) -> Evidence:
        self.collections += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            content = await asyncio.to_thread(self.device.read_bytes)
        except FileNotFoundError:
            raise AttestationError(
                self.name, f"device {self.device} is missing", hint="load the TEE driver"
            ) from None
        return Evidence(
            members={"report": content + report_data},
            measurement=sha256_digest(content),
            report_data=report_data,
            collected_at=int(time.time()),
        )


def cmcp_verify(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``cmcp-verify`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "cmcp_verifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
