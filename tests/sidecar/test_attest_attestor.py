"""The attestor: binding, freshness in real time, staleness policies, reloads, nonces, pins.

Failures of evidence collection are produced with DeviceFileProvider (trailkit): a stand-in
provider whose device is a file, deleted and restored for real. Faults a provider cannot be
made to show otherwise (evidence without the binding, a hung device) use small subclasses
and say so.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cmcp_sidecar.attest import (
    AttestationBusy,
    AttestationError,
    AttestationProvider,
    Attestor,
    Evidence,
    SigningIdentity,
)
from cmcp_sidecar.attest.selfmeasure import self_measurement
from cmcp_sidecar.attest.software import SoftwareProvider
from cmcp_verifier.binding import binding_digest
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.digests import sha256_digest
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from .trailkit import BUNDLE, CATALOG, DeviceFileProvider, call, trail


def _device(tmp_path: Path) -> Path:
    device = tmp_path / "tee0"
    device.write_bytes(b"launch measurement of the test TEE")
    return device


def _attestor(provider: AttestationProvider, **kw: Any) -> Attestor:
    options: dict[str, Any] = {"validity_seconds": 3600, **kw}
    return Attestor(
        provider, SigningIdentity.generate(), bundle_hash=BUNDLE, catalog_hash=CATALOG, **options
    )


async def test_start_binds_key_bundle_and_catalog(tmp_path: Path) -> None:
    attestor = _attestor(DeviceFileProvider(_device(tmp_path)))
    assert not attestor.may_forward() and attestor.status().state == "starting"
    bound = await attestor.start()
    try:
        expected = binding_digest(attestor.identity.thumbprint, BUNDLE, CATALOG, b"")
        assert bound.binding == expected and bound.evidence.report_data == expected
        assert attestor.fresh and attestor.may_forward()
        status = attestor.status().to_json()
        assert status["state"] == "fresh" and status["expires_at"] == status["collected_at"] + 3600
        body = bound.to_json()
        assert body["key_thumbprint"] == attestor.identity.thumbprint
        assert body["cnf"]["jwk"] == attestor.identity.jwk and "d" not in body["cnf"]["jwk"]
    finally:
        await attestor.close()
    assert attestor.status().state == "closed" and not attestor.may_forward()


async def test_reattests_before_validity_runs_out(tmp_path: Path) -> None:
    provider = DeviceFileProvider(_device(tmp_path))
    attestor = _attestor(provider, validity_seconds=1.0)
    await attestor.start()
    try:
        deadline = time.monotonic() + 2.6
        while time.monotonic() < deadline:
            assert attestor.fresh, "evidence went stale although the device works"
            await asyncio.sleep(0.05)
        assert provider.collections >= 4  # the first and one per half validity
    finally:
        await attestor.close()


async def test_fail_closed_stops_forwarding_when_stale_and_recovers(tmp_path: Path) -> None:
    device = _device(tmp_path)
    attestor = _attestor(DeviceFileProvider(device), validity_seconds=0.6)
    await attestor.start()
    try:
        content = device.read_bytes()
        device.unlink()
        await asyncio.sleep(1.0)
        status = attestor.status()
        assert status.state == "stale" and not attestor.may_forward()
        assert status.last_error is not None and "tee0 is missing" in status.last_error
        device.write_bytes(content)
        for _ in range(40):
            await asyncio.sleep(0.05)
            if attestor.fresh:
                break
        assert attestor.may_forward() and attestor.status().last_error is None
    finally:
        await attestor.close()


async def test_warn_only_keeps_forwarding_and_marks_claims(tmp_path: Path) -> None:
    device = _device(tmp_path)
    provider = DeviceFileProvider(device)
    async with trail(
        tmp_path, provider=provider, validity_seconds=0.5, staleness_policy="warn_only"
    ) as t:
        device.unlink()
        await asyncio.sleep(0.8)
        assert not t.attestor.fresh and t.attestor.may_forward()
        assert t.attestor.status().state == "stale"
        sid = t.issuer.claim_session_id(mcp_session_id="warn-1", principal="p")
        await t.log.append(call(sid))
        claim = await t.issuer.close_session(sid or "")
        assert claim is not None
        assert parse_json(claim)["gateway"]["attestation"]["stale"] is True
        policy = ClaimPolicy(allow_software=True, audit_log=await t.export())
        assert verify_claim(claim, policy).verified  # marked, still verifiable


async def test_update_rebinds_and_a_failed_update_keeps_the_old_evidence(tmp_path: Path) -> None:
    device = _device(tmp_path)
    attestor = _attestor(DeviceFileProvider(device))
    await attestor.start()
    try:
        new_bundle = sha256_digest(b"bundle v2")
        bound = await attestor.update(bundle_hash=new_bundle)
        assert attestor.current is bound and attestor.bundle_hash == new_bundle
        assert bound.binding == binding_digest(
            attestor.identity.thumbprint, new_bundle, CATALOG, b""
        )
        device.unlink()
        with pytest.raises(AttestationError, match="missing"):
            await attestor.update(bundle_hash=sha256_digest(b"bundle v3"))
        assert attestor.current is bound and attestor.bundle_hash == new_bundle
        assert attestor.fresh
    finally:
        await attestor.close()


async def test_expected_measurement_pins_the_launch(tmp_path: Path) -> None:
    right = self_measurement().digest
    ok = _attestor(SoftwareProvider(dev_mode=True), expected_measurement=right)
    assert (await ok.start()).evidence.measurement == right
    await ok.close()
    wrong = _attestor(SoftwareProvider(dev_mode=True), expected_measurement=sha256_digest(b"x"))
    with pytest.raises(AttestationError) as err:
        await wrong.start()
    assert err.value.code == "attestation.measurement_mismatch"
    assert "refuses" in (err.value.hint or "")
    assert not wrong.may_forward()


async def test_nonce_evidence_is_bound_coalesced_and_bounded(tmp_path: Path) -> None:
    provider = DeviceFileProvider(_device(tmp_path), delay=0.2)
    attestor = _attestor(provider, max_pending_nonces=2)
    await attestor.start()
    try:
        before = provider.collections
        same = await asyncio.gather(*(attestor.evidence_for_nonce(b"n-1") for _ in range(5)))
        assert provider.collections == before + 1  # five requests, one collection
        assert same[0].nonce == b"n-1"
        assert same[0].binding == binding_digest(
            attestor.identity.thumbprint, BUNDLE, CATALOG, b"n-1"
        )
        first = asyncio.ensure_future(attestor.evidence_for_nonce(b"a"))
        second = asyncio.ensure_future(attestor.evidence_for_nonce(b"b"))
        await asyncio.sleep(0)
        with pytest.raises(AttestationBusy):
            await attestor.evidence_for_nonce(b"c")
        assert (await first).nonce == b"a" and (await second).nonce == b"b"
        assert await attestor.evidence_for_nonce(b"") is attestor.current
        with pytest.raises(AttestationError) as err:
            await attestor.evidence_for_nonce(b"x" * 65)
        assert err.value.code == "attestation.nonce_too_long"
    finally:
        await attestor.close()


class _UnboundProvider(DeviceFileProvider):
    """A faulty provider whose evidence does not carry the binding (cannot be produced with a
    correct provider; this subclass exists only to show the attestor catches it)."""

    async def collect(self, report_data: bytes) -> Evidence:
        evidence = await super().collect(report_data)
        return Evidence(evidence.members, evidence.measurement, bytes(32), evidence.collected_at)


async def test_evidence_without_the_binding_is_refused(tmp_path: Path) -> None:
    attestor = _attestor(_UnboundProvider(_device(tmp_path)))
    with pytest.raises(AttestationError) as err:
        await attestor.start()
    assert err.value.code == "attestation.binding_mismatch"


async def test_hung_collection_times_out(tmp_path: Path) -> None:
    attestor = _attestor(
        DeviceFileProvider(_device(tmp_path), delay=5.0), collect_timeout_seconds=0.2
    )
    with pytest.raises(AttestationError) as err:
        await attestor.start()
    assert err.value.code == "attestation.timeout" and "test-device" in err.value.message
